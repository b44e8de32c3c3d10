package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestShiftDecodeTimes(t *testing.T) {
	s := demoStream(t)
	in := demoInit(t, s)
	shifts := map[uint32]uint64{1: 15360 * 100, 2: 48000*100 + 7}
	for i, orig := range s.chunks {
		before, err := in.ParseChunk(orig)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Clone(orig)
		calls := 0
		err = ShiftDecodeTimes(data, func(id uint32) uint64 { calls++; return shifts[id] })
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if calls != len(before.Trafs) {
			t.Fatalf("chunk %d: shift called %d times for %d trafs", i, calls, len(before.Trafs))
		}
		after, err := in.ParseChunk(data)
		if err != nil {
			t.Fatalf("chunk %d after the shift: %v", i, err)
		}
		for k, tr := range after.Trafs {
			if want := before.Trafs[k].DecodeTime + shifts[tr.TrackID]; tr.DecodeTime != want || tr.Duration != before.Trafs[k].Duration {
				t.Fatalf("chunk %d track %d: decode time %d, want %d", i, tr.TrackID, tr.DecodeTime, want)
			}
		}
		if after.DecodeTime != before.DecodeTime+shifts[1] || after.Keyframe != before.Keyframe || after.Samples != before.Samples {
			t.Fatalf("chunk %d: %+v, before %+v", i, after, before)
		}
		// Only the 8 bytes of each tfdt's decode time changed.
		var diff []int
		for j := range data {
			if data[j] != orig[j] {
				diff = append(diff, j)
			}
		}
		for _, j := range diff {
			tfdt := bytes.LastIndex(orig[:j], []byte("tfdt"))
			if tfdt < 0 || j < tfdt+8 || j >= tfdt+16 {
				t.Fatalf("chunk %d: byte %d changed outside a tfdt decode time", i, j)
			}
		}
		if len(diff) == 0 {
			t.Fatalf("chunk %d: nothing changed", i)
		}
	}
}

func TestShiftDecodeTimesWraps(t *testing.T) {
	s := demoStream(t)
	data := bytes.Clone(s.chunks[1])
	if err := ShiftDecodeTimes(data, func(uint32) uint64 { return ^uint64(0) }); err != nil { // -1 mod 2^64
		t.Fatal(err)
	}
	c, err := demoInit(t, s).ParseChunk(data)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := demoInit(t, s).ParseChunk(s.chunks[1])
	if c.DecodeTime != orig.DecodeTime-1 {
		t.Fatalf("decode time %d, want %d", c.DecodeTime, orig.DecodeTime-1)
	}
}

func TestShiftDecodeTimesErrors(t *testing.T) {
	s := demoStream(t)
	c0 := s.chunks[0]
	tfdt := bytes.Index(c0, []byte("tfdt")) - 4
	v0 := tfdtVersion0(t, c0)
	if _, err := demoInit(t, s).ParseChunk(v0); err != nil {
		t.Fatalf("the version-0 chunk is not valid: %v", err)
	}
	tfhd := bytes.Index(c0, []byte("tfhd")) - 4
	beforeTfhd := bytes.Clone(c0)
	// Swap the tfhd (32 bytes) and tfdt (20 bytes) of the first traf.
	tfhdBox := c0[tfhd : tfhd+32]
	tfdtBox := c0[tfdt : tfdt+20]
	if tfhd+32 != tfdt {
		t.Fatalf("tfhd at %d, tfdt at %d", tfhd, tfdt)
	}
	copy(beforeTfhd[tfhd:], tfdtBox)
	copy(beforeTfhd[tfhd+20:], tfhdBox)
	badChild := bytes.Clone(c0)
	binary.BigEndian.PutUint32(badChild[tfhd:], 3)
	badTraf := bytes.Clone(c0)
	binary.BigEndian.PutUint32(badTraf[tfhd-8:], 1<<20)

	for _, ca := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"version 0 tfdt", v0, "version 0"},
		{"not a moof", c0[binary.BigEndian.Uint32(c0):], "does not start with a moof"},
		{"empty", nil, "does not start with a moof"},
		{"moof size over the data", c0[:100], "does not start with a moof"},
		{"tfdt before tfhd", beforeTfhd, "tfdt before tfhd"},
		{"bad box in traf", badChild, "bad box in traf"},
		{"bad box in moof", badTraf, "bad box in moof"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			orig := bytes.Clone(ca.data)
			err := ShiftDecodeTimes(ca.data, func(uint32) uint64 { return 1 })
			if !errors.Is(err, ErrInvalid) || !bytes.Contains([]byte(err.Error()), []byte(ca.msg)) {
				t.Fatalf("%v, want ErrInvalid saying %q", err, ca.msg)
			}
			if ca.name == "version 0 tfdt" && !bytes.Equal(ca.data, orig) {
				t.Fatal("a rejected chunk was changed")
			}
		})
	}
}

// tfdtVersion0 rewrites the first traf of chunk with a version-0 (32-bit)
// tfdt, fixing the sizes and data offsets that the 4 bytes fewer change.
func tfdtVersion0(t *testing.T, chunk []byte) []byte {
	t.Helper()
	tfdt := bytes.Index(chunk, []byte("tfdt")) - 4
	if binary.BigEndian.Uint32(chunk[tfdt:]) != 20 || chunk[tfdt+8] != 1 {
		t.Fatal("first tfdt is not version 1")
	}
	dt := binary.BigEndian.Uint64(chunk[tfdt+12:])
	v0 := binary.BigEndian.AppendUint32(nil, 16)
	v0 = append(v0, "tfdt\x00\x00\x00\x00"...)
	v0 = binary.BigEndian.AppendUint32(v0, uint32(dt))
	out := cat(chunk[:tfdt], v0, chunk[tfdt+20:])
	moofLen := binary.BigEndian.Uint32(out) - 4
	binary.BigEndian.PutUint32(out, moofLen)
	traf := bytes.Index(out, []byte("traf")) - 4
	binary.BigEndian.PutUint32(out[traf:], binary.BigEndian.Uint32(out[traf:])-4)
	for off := 0; ; {
		i := bytes.Index(out[off:moofLen], []byte("trun"))
		if i < 0 {
			break
		}
		off += i - 4
		if out[off+11]&1 == 0 {
			t.Fatal("trun without data offset")
		}
		binary.BigEndian.PutUint32(out[off+16:], binary.BigEndian.Uint32(out[off+16:])-4)
		off += 8
	}
	return out
}

func TestPrftKeepsTheMicrosecondExactly(t *testing.T) {
	for _, us := range []int64{1_700_000_000_000_000, 1_700_000_000_033_333, 1_700_000_000_999_999, 1_763_731_200_000_001} {
		b := AppendPrft(nil, 1, us, 0)
		if got := parsePrft(b); got != us {
			t.Errorf("%d µs came back as %d", us, got)
		}
	}
}
