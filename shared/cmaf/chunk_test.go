package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func demoInit(t testing.TB, s *stream) *Init {
	t.Helper()
	in, err := ParseInit(s.init)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestParseChunkMatchesReader(t *testing.T) {
	s := demoStream(t)
	in := demoInit(t, s)
	_, chunks, err := readAll(t, bytes.NewReader(s.data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i, data := range s.chunks {
		c, err := in.ParseChunk(data)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !reflect.DeepEqual(c, chunks[i]) {
			t.Fatalf("chunk %d: ParseChunk %+v, Reader %+v", i, c, chunks[i])
		}
		if &c.Data[0] != &data[0] {
			t.Fatalf("chunk %d: ParseChunk copied the data", i)
		}
	}
}

func TestParseChunkErrors(t *testing.T) {
	s := demoStream(t)
	in := demoInit(t, s)
	c0 := s.chunks[0]
	moofLen := int(binary.BigEndian.Uint32(c0))
	bigMoof := bytes.Clone(c0)
	binary.BigEndian.PutUint32(bigMoof, uint32(len(c0)+1))
	noSamples := bytes.Clone(c0)
	for off := 0; ; {
		i := bytes.Index(noSamples[off:], []byte("trun"))
		if i < 0 || off+i > moofLen {
			break
		}
		off += i
		binary.BigEndian.PutUint32(noSamples[off+8:], 0) // sample count
		off += 4
	}
	for _, ca := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrInvalid},
		{"7 bytes", c0[:7], ErrInvalid},
		{"mdat first", c0[moofLen:], ErrInvalid},
		{"moof size over the data", bigMoof, ErrInvalid},
		{"moof size under its header", append([]byte{0, 0, 0, 4}, c0[4:]...), ErrInvalid},
		{"moof alone", c0[:moofLen], ErrMoofWithoutMdat},
		{"mdat cut short", c0[:len(c0)-1], ErrMoofWithoutMdat},
		{"bytes after the mdat", append(bytes.Clone(c0), 0), ErrMoofWithoutMdat},
		{"two chunks", cat(c0, s.chunks[1]), ErrMoofWithoutMdat},
		{"moof then free", cat(c0[:moofLen], []byte("\x00\x00\x00\x08free")), ErrMoofWithoutMdat},
		{"moof body garbage", cat(c0[:8], bytes.Repeat([]byte{0xff}, moofLen-8), c0[moofLen:]), ErrInvalid},
		{"trun sample count disagrees with its size", noSamples, ErrInvalid},
	} {
		t.Run(ca.name, func(t *testing.T) {
			c, err := in.ParseChunk(ca.data)
			if !errors.Is(err, ca.want) || c != nil {
				t.Fatalf("ParseChunk = %v, %v; want %v", c, err, ca.want)
			}
			t.Log(err)
		})
	}
}

func TestParseChunkOnlySecondaryTrack(t *testing.T) {
	// An audio-only fragment of a muxed track times the chunk by its
	// traf and never starts a group.
	s := demoStream(t)
	in := demoInit(t, s)
	c0 := s.chunks[0]
	// Drop the video traf: rebuild the moof as mfhd + audio traf, and
	// the mdat with only the audio samples.
	moofLen := int(binary.BigEndian.Uint32(c0))
	boxes := walkBoxes(t, c0[8:moofLen])
	if len(boxes) != 3 || boxes[0].typ != "mfhd" || boxes[1].typ != "traf" || boxes[2].typ != "traf" {
		t.Fatalf("moof children %+v", boxes)
	}
	body := c0[8:moofLen]
	mfhd := body[boxes[0].off : boxes[0].off+boxes[0].size]
	audio := bytes.Clone(body[boxes[2].off : boxes[2].off+boxes[2].size])
	newMoofLen := 8 + len(mfhd) + len(audio)
	// Fix the audio trun's data offset: the audio samples now start right
	// after the new mdat header.
	trun := bytes.Index(audio, []byte("trun")) - 4
	oldOff := int(binary.BigEndian.Uint32(audio[trun+16:]))
	binary.BigEndian.PutUint32(audio[trun+16:], uint32(newMoofLen+8))
	audioData := c0[oldOff:]
	moof := binary.BigEndian.AppendUint32(nil, uint32(newMoofLen))
	moof = append(append(append(moof, "moof"...), mfhd...), audio...)
	mdat := append(binary.BigEndian.AppendUint32(nil, uint32(8+len(audioData))), "mdat"...)
	chunk := cat(moof, mdat, audioData)

	c, err := in.ParseChunk(chunk)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := in.ParseChunk(c0)
	if c.Keyframe || len(c.Trafs) != 1 || c.Trafs[0] != full.Trafs[1] || c.DecodeTime != full.Trafs[1].DecodeTime || c.Duration != 0 {
		t.Fatalf("audio-only chunk: %+v (full chunk trafs %+v)", c, full.Trafs)
	}
}

func TestWholeBox(t *testing.T) {
	for _, ca := range []struct {
		b  []byte
		hl int
		ok bool
	}{
		{[]byte("\x00\x00\x00\x08mdat"), 8, true},
		{[]byte("\x00\x00\x00\x09mdatx"), 8, true},
		{[]byte("\x00\x00\x00\x09mdat"), 8, false},
		{[]byte("\x00\x00\x00\x08free"), 0, false},
		{[]byte("\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x10"), 16, true},
		{[]byte("\x00\x00\x00\x01mdat\x00\x00\x00"), 0, false},
		{[]byte("\x00\x00\x00"), 0, false},
	} {
		hl, ok := wholeBox(ca.b, "mdat")
		if ok != ca.ok || ok && hl != ca.hl {
			t.Errorf("wholeBox(% x) = %d, %v", ca.b, hl, ok)
		}
	}
}
