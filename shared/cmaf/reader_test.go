package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestReaderDemoClip(t *testing.T) {
	s := demoStream(t)
	in, chunks, err := readAll(t, bytes.NewReader(s.data), Limits{})
	if err != nil {
		t.Fatal(err)
	}

	if !bytes.Equal(in.Data, s.init) {
		t.Fatalf("Init.Data is %d bytes, want the %d bytes of ftyp+moov", len(in.Data), len(s.init))
	}
	if len(in.Traks) != 2 {
		t.Fatalf("%d traks, want 2", len(in.Traks))
	}
	v, a := in.Traks[0], in.Traks[1]
	if v.Handler != "vide" || v.Codec != "avc1.4D401E" || v.ID != 1 || v.Timescale == 0 || v.Width <= 0 || v.Height <= 0 {
		t.Errorf("video trak %+v", v)
	}
	if a.Handler != "soun" || a.Codec != "mp4a.40.2" || a.ID != 2 || a.Timescale != 48000 || a.SampleRate != 48000 || a.Channels != 2 {
		t.Errorf("audio trak %+v", a)
	}
	if in.Primary != 0 || in.PrimaryTrak().ID != 1 {
		t.Errorf("primary trak %d, want the video trak", in.Primary)
	}
	if got := in.Codec(); got != "avc1.4D401E,mp4a.40.2" {
		t.Errorf("Codec() = %q", got)
	}
	if got := in.MimeType(); got != `video/mp4; codecs="avc1.4D401E,mp4a.40.2"` {
		t.Errorf("MimeType() = %q", got)
	}
	if got := in.Kind(); got != "muxed" {
		t.Errorf("Kind() = %q", got)
	}

	if len(chunks) != 192 || len(s.chunks) != 192 {
		t.Fatalf("%d chunks (%d by the box walk), want 192", len(chunks), len(s.chunks))
	}
	var keyframes []int
	for i, c := range chunks {
		if !bytes.Equal(c.Data, s.chunks[i]) {
			t.Fatalf("chunk %d: Data differs from the moof+mdat at byte %d of the file", i, s.chunkOff[i])
		}
		if c.Keyframe {
			keyframes = append(keyframes, i)
		}
		if c.Capture != 0 {
			t.Errorf("chunk %d: Capture %d without a prft", i, c.Capture)
		}
		// Every chunk has a video traf first; all but the last also
		// carry audio.
		if len(c.Trafs) != 2 && !(i == 191 && len(c.Trafs) == 1) || c.Trafs[0].TrackID != 1 || len(c.Trafs) == 2 && c.Trafs[1].TrackID != 2 {
			t.Fatalf("chunk %d: trafs %+v", i, c.Trafs)
		}
		if c.DecodeTime != c.Trafs[0].DecodeTime || c.Duration != c.Trafs[0].Duration || c.Duration == 0 {
			t.Errorf("chunk %d: primary timing %d+%d, video traf %+v", i, c.DecodeTime, c.Duration, c.Trafs[0])
		}
		if c.Samples < len(c.Trafs) {
			t.Errorf("chunk %d: %d samples", i, c.Samples)
		}
		if i > 0 {
			p := chunks[i-1]
			if c.DecodeTime <= p.DecodeTime {
				t.Errorf("chunk %d: decode time %d after %d", i, c.DecodeTime, p.DecodeTime)
			}
			for k := range c.Trafs {
				// Contiguous timelines: each chunk starts where the
				// previous one ended, per track.
				if c.Trafs[k].DecodeTime != p.Trafs[k].DecodeTime+p.Trafs[k].Duration || c.Trafs[k].TrackID != p.Trafs[k].TrackID {
					t.Errorf("chunk %d track %d: starts at %d, previous ended at %d", i, c.Trafs[k].TrackID,
						c.Trafs[k].DecodeTime, p.Trafs[k].DecodeTime+p.Trafs[k].Duration)
				}
			}
		}
	}
	if want := []int{0, 32, 64, 96, 128, 160}; !slices.Equal(keyframes, want) {
		t.Errorf("keyframes at chunks %v, want %v", keyframes, want)
	}
	if chunks[0].DecodeTime != 0 {
		t.Errorf("first decode time %d", chunks[0].DecodeTime)
	}
}

// pieceReader returns reads of random sizes.
type pieceReader struct {
	r   io.Reader
	rng *rand.Rand
	max int
}

func (p *pieceReader) Read(b []byte) (int, error) {
	if n := 1 + p.rng.IntN(p.max); n < len(b) {
		b = b[:n]
	}
	return p.r.Read(b)
}

func TestReaderAnyReadBoundaries(t *testing.T) {
	data := demoBytes(t)
	wantIn, want, err := readAll(t, bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []struct {
		name string
		r    io.Reader
	}{
		{"one byte", iotest.OneByteReader(bytes.NewReader(data))},
		{"half", iotest.HalfReader(bytes.NewReader(data))},
		{"data with EOF", iotest.DataErrReader(bytes.NewReader(data))},
		{"random up to 7", &pieceReader{bytes.NewReader(data), rand.New(rand.NewPCG(1, 2)), 7}},
		{"random up to 5000", &pieceReader{bytes.NewReader(data), rand.New(rand.NewPCG(3, 4)), 5000}},
		{"random up to 100000", &pieceReader{bytes.NewReader(data), rand.New(rand.NewPCG(5, 6)), 100000}},
	} {
		t.Run(ca.name, func(t *testing.T) {
			in, got, err := readAll(t, ca.r, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(in, wantIn) {
				t.Fatal("init differs")
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("chunks differ (%d, want %d)", len(got), len(want))
			}
		})
	}
}

func TestReaderSkipsOtherBoxes(t *testing.T) {
	s := demoStream(t)
	box := func(typ string, body string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
		return append(append(b, typ...), body...)
	}
	styp := box("styp", "msdhcmfs")
	free := box("free", "")
	large := []byte{0, 0, 0, 1, 's', 'k', 'i', 'p', 0, 0, 0, 0, 0, 0, 0, 20, 1, 2, 3, 4} // 64-bit size
	meta := box("\xa9nam", "title")                                                      // QuickTime metadata types start with ©
	data := cat(free, s.init, styp, s.chunks[0], free, meta, large, box("emsg", "xxxx"), styp, s.chunks[1], s.init, s.chunks[2], box("mfra", ""))
	in, chunks, err := readAll(t, bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if in == nil || len(chunks) != 3 {
		t.Fatalf("init %v, %d chunks", in != nil, len(chunks))
	}
	for i, c := range chunks {
		if !bytes.Equal(c.Data, s.chunks[i]) {
			t.Errorf("chunk %d: Data includes other boxes", i)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	s := demoStream(t)
	init, c0, c1, c2 := s.init, s.chunks[0], s.chunks[1], s.chunks[2]
	moofLen := int(binary.BigEndian.Uint32(c0))
	ftypLen := int(binary.BigEndian.Uint32(init))
	moovLen := len(init) - ftypLen
	mdat0 := c0[moofLen:]

	// The moov with its video sample entry renamed (and its audio one).
	stsdV := bytes.Index(init, []byte("stsd"))
	stsdA := stsdV + 4 + bytes.Index(init[stsdV+4:], []byte("stsd"))
	vp08 := patch(t, init, stsdV, stsdA, "avc1", "vp08")
	avc2 := patch(t, init, stsdV, stsdA, "avc1", "avc2")
	hev2 := patch(t, init, stsdV, stsdA, "avc1", "dvh1")
	ac3 := patch(t, init, stsdA, len(init), "mp4a", "fLaC")
	esds := bytes.Index(init, []byte("esds"))
	mp3 := patch(t, init, esds, len(init), "\x40\x15", "\x6b\x15") // object type 0x40 (AAC) -> 0x6B (MP3)
	noMvex := patch(t, init, ftypLen, len(init), "mvex", "free")
	// A different init: one byte of mvhd's creation time changed.
	mvhd := bytes.Index(init, []byte("mvhd"))
	other := bytes.Clone(init)
	other[mvhd+8] ^= 0xff

	noTfdt := patch(t, c0, 0, 100, "tfdt", "free")
	badTrack := bytes.Clone(c0)
	tfhd := bytes.Index(c0, []byte("tfhd"))
	binary.BigEndian.PutUint32(badTrack[tfhd+8:], 9)
	noBaseMoof := bytes.Clone(c0)
	noBaseMoof[tfhd+5] &^= 0x02 // tfhd flags 0x020000: default-base-is-moof
	trun := bytes.Index(c0, []byte("trun"))
	offBefore := bytes.Clone(c0)
	binary.BigEndian.PutUint32(offBefore[trun+12:], 8) // data offset into the moof
	pastEnd := bytes.Clone(c0[:len(c0)-1])
	binary.BigEndian.PutUint32(pastEnd[moofLen:], uint32(len(mdat0)-1))

	header := func(size uint32, typ string) []byte { return append(binary.BigEndian.AppendUint32(nil, size), typ...) }

	for _, ca := range []struct {
		name   string
		data   []byte
		lim    Limits
		chunks int // read before the error
		want   []error
		msg    string // in the error text
	}{
		{"garbage", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), Limits{}, 0, []error{ErrNotMP4}, "not a box type"},
		{"MPEG-TS", append([]byte{0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xb0, 0x0d}, make([]byte, 180)...), Limits{}, 0, []error{ErrNotMP4}, ""},
		{"garbage after chunks", cat(init, c0, []byte{0, 0, 0, 9, 0, 1, 2, 3, 4}), Limits{}, 1, []error{ErrNotMP4}, "offset"},
		{"box smaller than its header", cat(header(4, "ftyp"), init), Limits{}, 0, []error{ErrInvalid}, "smaller than its header"},
		{"64-bit size smaller than its header", cat([]byte{0, 0, 0, 1}, []byte("free"), make([]byte, 7), []byte{12}), Limits{}, 0, []error{ErrInvalid}, "smaller than its header"},
		{"64-bit size cut off", cat([]byte{0, 0, 0, 1}, []byte("free"), []byte{0, 0}), Limits{}, 0, []error{ErrInvalid, io.ErrUnexpectedEOF}, ""},
		{"size 0", cat(init, header(0, "mdat"), []byte("to the end")), Limits{}, 0, []error{ErrInvalid}, "size 0"},
		{"stream ends inside a box header", cat(init, c0, c1[:5]), Limits{}, 2 - 1, []error{ErrInvalid}, "inside a box header"},
		{"stream ends inside a box", cat(init, c0[:moofLen-3]), Limits{}, 0, []error{ErrInvalid, io.ErrUnexpectedEOF}, ""},
		{"ftyp then moof", cat(init[:ftypLen], c0), Limits{}, 0, []error{ErrInvalid}, "want moov"},
		{"ftyp at the end", init[:ftypLen], Limits{}, 0, []error{ErrInvalid, io.ErrUnexpectedEOF}, "moov after ftyp"},
		{"moov without ftyp", init[ftypLen:], Limits{}, 0, []error{ErrInvalid}, "moov without ftyp"},
		{"mdat without moof", cat(init, mdat0), Limits{}, 0, []error{ErrInvalid}, "mdat without a moof"},
		{"moof before moov", cat(c0, init), Limits{}, 0, []error{ErrMissingInit}, ""},
		{"prft before moov", cat(AppendPrft(nil, 1, 1, 0), init), Limits{}, 0, []error{ErrMissingInit}, ""},
		{"mdat before moov", cat(mdat0, init), Limits{}, 0, []error{ErrMissingInit}, ""},
		{"moof then moof", cat(init, c0[:moofLen], c1), Limits{}, 0, []error{ErrMoofWithoutMdat}, `"moof" after the moof`},
		{"moof at the end", cat(init, c0, c1[:binary.BigEndian.Uint32(c1)]), Limits{}, 1, []error{ErrMoofWithoutMdat}, ""},
		{"moof alone at the end", cat(init, c0[:moofLen]), Limits{}, 0, []error{ErrMoofWithoutMdat}, "ended after a moof"},
		{"mdat cut short", cat(init, c0[:len(c0)-1]), Limits{}, 0, []error{ErrMoofWithoutMdat}, ""},
		{"moof over MaxBox", cat(init, c0), Limits{MaxBox: moofLen - 1}, 0, []error{ErrBoxTooLarge}, "limit"},
		{"moof+mdat over MaxBox", cat(init, c0), Limits{MaxBox: len(c0) - 1}, 0, []error{ErrBoxTooLarge}, "moof+mdat together"},
		{"moof+mdat at MaxBox", cat(init, c0), Limits{MaxBox: len(c0), MaxInit: len(init)}, 1, nil, ""},
		{"huge declared size", cat(init, header(0xffffffff, "mdat")), Limits{}, 0, []error{ErrBoxTooLarge}, ""},
		{"huge 64-bit size", cat(init, []byte{0, 0, 0, 1}, []byte("moof"), []byte{0xff, 0, 0, 0, 0, 0, 0, 0}), Limits{}, 0, []error{ErrBoxTooLarge}, ""},
		{"moov over MaxInit", cat(init, c0), Limits{MaxInit: moovLen - 1}, 0, []error{ErrBoxTooLarge}, ""},
		{"ftyp+moov over MaxInit", cat(init, c0), Limits{MaxInit: moovLen}, 0, []error{ErrBoxTooLarge}, "init segment is"},
		{"swapped chunks", cat(init, c0, c2, c1), Limits{}, 2, []error{ErrNonMonotonic}, "track 1 went from 1024 to 512"},
		{"repeated chunk", cat(init, c0, c1, c1), Limits{}, 2, []error{ErrNonMonotonic}, "track 1 went from 512 to 512"},
		{"vp08 sample entry", cat(vp08, c0), Limits{}, 0, []error{ErrUnsupportedCodec}, `"vp08"`},
		{"avc2 sample entry", cat(avc2, c0), Limits{}, 0, []error{ErrUnsupportedCodec}, `"avc2"`},
		{"dolby vision sample entry", cat(hev2, c0), Limits{}, 0, []error{ErrUnsupportedCodec}, `"dvh1"`},
		{"flac audio", cat(ac3, c0), Limits{}, 0, []error{ErrUnsupportedCodec}, `"fLaC"`},
		{"mp3 in mp4a", cat(mp3, c0), Limits{}, 0, []error{ErrUnsupportedCodec}, "0x6b"},
		{"no mvex", cat(noMvex, c0), Limits{}, 0, []error{ErrInvalid}, "no mvex"},
		{"init changed", cat(init, c0, other, c1), Limits{}, 1, []error{ErrInitChanged}, ""},
		{"traf without tfdt", cat(init, noTfdt), Limits{}, 0, []error{ErrInvalid}, "no tfdt"},
		{"traf of an unknown track", cat(init, badTrack), Limits{}, 0, []error{ErrInvalid}, "track 9"},
		{"tfhd without default-base-is-moof", cat(init, noBaseMoof), Limits{}, 0, []error{ErrInvalid}, "default-base-is-moof"},
		{"trun data offset before the mdat", cat(init, offBefore), Limits{}, 0, []error{ErrInvalid}, "points before"},
		{"samples past the mdat", cat(init, pastEnd), Limits{}, 0, []error{ErrInvalid}, "past the end"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			_, chunks, err := readAll(t, bytes.NewReader(ca.data), ca.lim)
			t.Log(err)
			if ca.want == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errorsIs(err, ca.want...) {
				t.Fatalf("error %v, want %v", err, ca.want)
			}
			if len(chunks) != ca.chunks {
				t.Errorf("%d chunks before the error, want %d", len(chunks), ca.chunks)
			}
			if ca.msg != "" && !strings.Contains(err.Error(), ca.msg) {
				t.Errorf("error %q does not say %q", err, ca.msg)
			}
			// Every failure is one of the package's errors, so callers
			// can map it to a close code.
			if err != nil {
				known := false
				for _, e := range []error{ErrNotMP4, ErrMissingInit, ErrMoofWithoutMdat, ErrBoxTooLarge, ErrNonMonotonic, ErrUnsupportedCodec, ErrInvalid, ErrInitChanged} {
					known = known || errors.Is(err, e)
				}
				if !known {
					t.Errorf("%v is none of the package's errors", err)
				}
			}
			// The same bytes split anywhere give the same error.
			_, _, err2 := readAll(t, iotest.OneByteReader(bytes.NewReader(ca.data)), ca.lim)
			if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
				t.Errorf("one byte at a time: %v, whole: %v", err2, err)
			}
		})
	}
}

func TestReaderRepeatedIdenticalInit(t *testing.T) {
	s := demoStream(t)
	_, chunks, err := readAll(t, bytes.NewReader(cat(s.init, s.chunks[0], s.init, s.chunks[1], s.init)), Limits{})
	if err != nil || len(chunks) != 2 {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
}

func TestReaderReadError(t *testing.T) {
	s := demoStream(t)
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(cat(s.init, s.chunks[0][:50])), iotest.ErrReader(boom))
	_, chunks, err := readAll(t, r, Limits{})
	if !errors.Is(err, boom) || len(chunks) != 0 {
		t.Fatalf("%d chunks, %v; want the reader's error", len(chunks), err)
	}
}

func TestPrftCapture(t *testing.T) {
	s := demoStream(t)
	const capture = 1_763_700_000_123_456
	data := cat(s.init,
		AppendPrft(nil, 1, capture, 0), s.chunks[0],
		s.chunks[1],                                                                          // no prft: no capture
		AppendPrft(nil, 1, capture+33_333, 512), []byte("\x00\x00\x00\x08free"), s.chunks[2], // other boxes between prft and moof
		AppendPrft(nil, 1, 5, 0), AppendPrft(nil, 1, capture+66_666, 1024), s.chunks[3], // the last prft counts
		[]byte("\x00\x00\x00\x10prft\x01\x00\x00\x00\x00\x00\x00\x01"), s.chunks[4], // malformed: too short
	)
	_, chunks, err := readAll(t, bytes.NewReader(data), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{capture, 0, capture + 33_333, capture + 66_666, 0} {
		if d := chunks[i].Capture - want; d < -1 || d > 1 {
			t.Errorf("chunk %d: Capture %d, want %d (±1 µs)", i, chunks[i].Capture, want)
		}
	}
}

func TestPrftRoundTrip(t *testing.T) {
	for _, us := range []int64{
		0, 1, 999_999, 1_000_000, 1_700_000_000_000_000, 1_700_000_000_999_999, 1_763_700_000_123_456,
		time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() + 500_001, // after NTP era 0 would wrap in 2036
	} {
		b := AppendPrft([]byte("keep"), 7, us, 12345)
		if string(b[:4]) != "keep" || len(b) != 4+32 {
			t.Fatalf("AppendPrft did not append 32 bytes")
		}
		p := b[4:]
		if string(p[4:8]) != "prft" || binary.BigEndian.Uint32(p) != 32 || p[8] != 1 ||
			binary.BigEndian.Uint32(p[12:]) != 7 || binary.BigEndian.Uint64(p[24:]) != 12345 {
			t.Fatalf("prft layout % x", p)
		}
		got := parsePrft(p)
		if us == 0 {
			// NTP seconds of 1970 are fine; 0 µs reads back as 0.
			if got != 0 {
				t.Errorf("parsePrft(%d) = %d", us, got)
			}
			continue
		}
		if d := got - us; d < -1 || d > 1 {
			t.Errorf("capture %d µs read back as %d", us, got)
		}
	}
	// Malformed or before 1970: no capture.
	if got := parsePrft(make([]byte, 23)); got != 0 {
		t.Errorf("short prft: %d", got)
	}
	if got := parsePrft(make([]byte, 32)); got != 0 {
		t.Errorf("NTP 0 (1900): %d", got)
	}
}

func TestFFmpegWallclockPrft(t *testing.T) {
	args := []string{"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-f", "lavfi", "-i", "sine",
		"-t", "2", "-c:v", "libx264", "-g", "30", "-c:a", "aac"}
	args = append(args, cmafFlags...)
	args = append(args, "-frag_duration", "33333", "-write_prft", "wallclock", "-")
	before := time.Now()
	out := runFFmpeg(t, args...)
	after := time.Now()

	s := splitStream(t, out)
	in, chunks, err := readAll(t, iotest.HalfReader(bytes.NewReader(out)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(in.Codec(), "avc1.") || !strings.HasSuffix(in.Codec(), ",mp4a.40.2") || in.Traks[0].Width != 160 {
		t.Fatalf("init %s %+v", in.Codec(), in.Traks)
	}
	if len(chunks) < 30 || len(chunks) != len(s.chunks) {
		t.Fatalf("%d chunks (box walk: %d)", len(chunks), len(s.chunks))
	}
	keyframes, withPrft := 0, 0
	for i, c := range chunks {
		if c.Keyframe {
			keyframes++
		}
		if s.prft[i] == nil {
			// ffmpeg writes no prft for the fragments it flushes at
			// the end.
			if c.Capture != 0 {
				t.Errorf("chunk %d: Capture %d without a prft", i, c.Capture)
			}
			continue
		}
		withPrft++
		if c.Capture != parsePrft(s.prft[i]) {
			t.Errorf("chunk %d: Capture %d, prft says %d", i, c.Capture, parsePrft(s.prft[i]))
		}
		capt := time.UnixMicro(c.Capture)
		if capt.Before(before.Add(-5*time.Second)) || capt.After(after.Add(5*time.Second)) {
			t.Errorf("chunk %d: capture %s, ffmpeg ran %s..%s", i, capt, before, after)
		}
	}
	if withPrft < len(chunks)-3 {
		t.Errorf("only %d of %d chunks had a prft", withPrft, len(chunks))
	}
	if !chunks[0].Keyframe || keyframes < 2 {
		t.Errorf("%d keyframes, first is one: %v", keyframes, chunks[0].Keyframe)
	}
}

func TestReaderNextIsNilOnError(t *testing.T) {
	// A failed Next returns a nil interface, not a nil *Chunk in a
	// non-nil one, so `if v != nil` means what it says.
	s := demoStream(t)
	for _, data := range [][]byte{
		cat(s.init, s.chunks[1], s.chunks[0]),            // ErrNonMonotonic
		cat(s.init, s.chunks[0][:8+16], s.chunks[1][:9]), // moof body cut short
		cat(s.init, []byte("\x00\x00\x00\x08moof"), s.chunks[0][196:]),
	} {
		r := NewReader(bytes.NewReader(data), Limits{})
		for {
			v, err := r.Next()
			if err != nil {
				if v != nil {
					t.Errorf("Next returned %#v with error %v", v, err)
				}
				break
			}
		}
	}
}
