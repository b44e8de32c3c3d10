package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.bin")

// goldenHeader and goldenPayload are the frame in testdata/golden.bin, which
// client-js/test/wire.test.js also reads.
var (
	goldenHeader = Header{
		Kind:       KindObject,
		Flags:      FlagKeyframe | FlagDiscontinuity, // 5
		Track:      1,
		Index:      2,
		Group:      3,
		DecodeTime: 90000,
		Capture:    1700000000000000,
	}
	goldenPayload = []byte("moof+mdat")
)

// goldenBytes is the layout of the golden frame written out field by field,
// independent of Put.
func goldenBytes() []byte {
	b := []byte{
		1,    // kind: object
		5,    // flags: keyframe | discontinuity
		0, 1, // track
		0, 0, 0, 2, // index
		0, 0, 0, 0, 0, 0, 0, 3, // group
		0, 0, 0, 0, 0, 0x01, 0x5f, 0x90, // decode time 90000
		0, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00, // capture 1700000000000000 µs
		0, 0, 0, 9, // length
	}
	return append(b, "moof+mdat"...)
}

func TestGolden(t *testing.T) {
	got := Append(nil, goldenHeader, goldenPayload)
	if want := goldenBytes(); !bytes.Equal(got, want) {
		t.Fatalf("Append = % x\nwant    % x", got, want)
	}
	path := filepath.Join("testdata", "golden.bin")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if !bytes.Equal(file, got) {
		t.Fatalf("%s = % x\nwant % x", path, file, got)
	}
	h, p, err := Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenHeader
	want.Length = uint32(len(goldenPayload))
	if h != want || string(p) != "moof+mdat" {
		t.Fatalf("Parse(golden) = %+v %q, want %+v %q", h, p, want, goldenPayload)
	}
}

var roundTripCases = []struct {
	name    string
	h       Header
	payload []byte
}{
	{"zero object", Header{Kind: KindObject}, nil},
	{"init", Header{Kind: KindInit, Track: 7}, []byte("ftyp....moov....")},
	{"end of group marker", Header{Kind: KindObject, Flags: FlagEndOfGroup, Track: 2, Index: 31, Group: 9}, nil},
	{"all flags", Header{Kind: KindObject, Flags: FlagKeyframe | FlagEndOfGroup | FlagDiscontinuity, Track: 1}, []byte{0}},
	{"max fields", Header{
		Kind: KindObject, Flags: FlagKeyframe, Track: math.MaxUint16, Index: math.MaxUint32,
		Group: math.MaxUint64, DecodeTime: math.MaxUint64, Capture: math.MaxInt64,
	}, bytes.Repeat([]byte{0xff}, 1000)},
	{"negative capture", Header{Kind: KindObject, Capture: -1}, []byte("x")},
	{"min capture", Header{Kind: KindObject, Capture: math.MinInt64}, []byte("y")},
	{"high bits of every field", Header{
		Kind: KindObject, Track: 0x8001, Index: 0x80000001, Group: 1<<63 | 1, DecodeTime: 1<<63 | 2, Capture: 1<<62 | 3,
	}, []byte("payload")},
	{"payload over 64 KiB", Header{Kind: KindObject, Group: 1}, bytes.Repeat([]byte("abc"), 30000)},
}

func TestHeaderPutParse(t *testing.T) {
	for _, ca := range roundTripCases {
		t.Run(ca.name, func(t *testing.T) {
			h := ca.h
			h.Length = uint32(len(ca.payload))
			var b [HeaderLen]byte
			h.Put(b[:])
			got, err := ParseHeader(b[:])
			if err != nil {
				t.Fatal(err)
			}
			if got != h {
				t.Fatalf("ParseHeader = %+v, want %+v", got, h)
			}
			// Big-endian fields at the documented offsets.
			if b[0] != byte(h.Kind) || b[1] != byte(h.Flags) ||
				binary.BigEndian.Uint16(b[2:]) != h.Track ||
				binary.BigEndian.Uint32(b[4:]) != h.Index ||
				binary.BigEndian.Uint64(b[8:]) != h.Group ||
				binary.BigEndian.Uint64(b[16:]) != h.DecodeTime ||
				int64(binary.BigEndian.Uint64(b[24:])) != h.Capture ||
				binary.BigEndian.Uint32(b[32:]) != h.Length {
				t.Fatalf("layout of %+v: % x", h, b)
			}
		})
	}
}

func TestAppendParseRead(t *testing.T) {
	for _, ca := range roundTripCases {
		t.Run(ca.name, func(t *testing.T) {
			h := ca.h
			h.Length = 12345 // Append must overwrite it
			prefix := []byte("prefix")
			f := Append(append([]byte(nil), prefix...), h, ca.payload)
			if !bytes.HasPrefix(f, prefix) {
				t.Fatal("Append overwrote dst")
			}
			f = f[len(prefix):]
			if len(f) != HeaderLen+len(ca.payload) {
				t.Fatalf("frame is %d bytes, want %d", len(f), HeaderLen+len(ca.payload))
			}
			want := ca.h
			want.Length = uint32(len(ca.payload))

			got, p, err := Parse(f)
			if err != nil {
				t.Fatal(err)
			}
			if got != want || !bytes.Equal(p, ca.payload) {
				t.Fatalf("Parse = %+v, %d bytes; want %+v, %d bytes", got, len(p), want, len(ca.payload))
			}
			if len(p) > 0 && &p[0] != &f[HeaderLen] {
				t.Error("Parse copied the payload; it should alias the frame")
			}

			got, p, err = Read(bytes.NewReader(f), 0)
			if err != nil {
				t.Fatal(err)
			}
			if got != want || !bytes.Equal(p, ca.payload) {
				t.Fatalf("Read = %+v, %d bytes; want %+v, %d bytes", got, len(p), want, len(ca.payload))
			}
		})
	}
}

func TestReadStreamOfFrames(t *testing.T) {
	var stream []byte
	for _, ca := range roundTripCases {
		stream = Append(stream, ca.h, ca.payload)
	}
	for _, r := range []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return bytes.NewReader(stream) }},
		{"one byte at a time", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) }},
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) }},
	} {
		t.Run(r.name, func(t *testing.T) {
			rd := r.r()
			for i, ca := range roundTripCases {
				h, p, err := Read(rd, 0)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				want := ca.h
				want.Length = uint32(len(ca.payload))
				if h != want || !bytes.Equal(p, ca.payload) {
					t.Fatalf("frame %d = %+v, want %+v", i, h, want)
				}
			}
			if _, _, err := Read(rd, 0); err != io.EOF {
				t.Fatalf("after the last frame: %v, want exactly io.EOF", err)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	valid := Append(nil, Header{Kind: KindObject, Flags: FlagKeyframe}, []byte("data"))
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(valid)
		f(b)
		return b
	}
	for _, ca := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShortHeader},
		{"35 bytes", valid[:HeaderLen-1], ErrShortHeader},
		{"kind 0", mod(func(b []byte) { b[0] = 0 }), ErrBadKind},
		{"kind 3", mod(func(b []byte) { b[0] = 3 }), ErrBadKind},
		{"kind 255", mod(func(b []byte) { b[0] = 255 }), ErrBadKind},
		{"flag bit 3", mod(func(b []byte) { b[1] = 1 << 3 }), ErrBadFlags},
		{"flag bit 7 with known ones", mod(func(b []byte) { b[1] = 0x80 | 0x07 }), ErrBadFlags},
		{"length over MaxPayload", mod(func(b []byte) { binary.BigEndian.PutUint32(b[32:], MaxPayload+1) }), ErrTooLarge},
		{"length 4 GiB-1", mod(func(b []byte) { binary.BigEndian.PutUint32(b[32:], math.MaxUint32) }), ErrTooLarge},
	} {
		t.Run(ca.name, func(t *testing.T) {
			if _, err := ParseHeader(ca.b); !errors.Is(err, ca.want) {
				t.Fatalf("ParseHeader: %v, want %v", err, ca.want)
			}
			if _, _, err := Parse(ca.b); !errors.Is(err, ca.want) {
				t.Fatalf("Parse: %v, want %v", err, ca.want)
			}
			if len(ca.b) == 0 {
				return // an empty stream is a clean io.EOF for Read (TestReadErrors)
			}
			if _, _, err := Read(bytes.NewReader(ca.b), 0); !errors.Is(err, ca.want) {
				t.Fatalf("Read: %v, want %v", err, ca.want)
			}
		})
	}
	// Exactly MaxPayload is still allowed by the header check.
	b := mod(func(b []byte) { binary.BigEndian.PutUint32(b[32:], MaxPayload) })
	if h, err := ParseHeader(b); err != nil || h.Length != MaxPayload {
		t.Fatalf("ParseHeader(length MaxPayload) = %d, %v", h.Length, err)
	}
}

func TestParseErrorMessages(t *testing.T) {
	b := Append(nil, Header{Kind: KindObject}, nil)
	b[0] = 9
	if _, err := ParseHeader(b); err == nil || err.Error() != "wire: unknown frame kind 9" {
		t.Errorf("bad kind: %v", err)
	}
	b[0] = 1
	b[1] = 0x80
	if _, err := ParseHeader(b); err == nil || err.Error() != "wire: unknown flag bits 0x80" {
		t.Errorf("bad flags: %v", err)
	}
}

func TestParseLengthMismatch(t *testing.T) {
	f := Append(nil, Header{Kind: KindObject}, []byte("abcd"))
	for _, ca := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"payload short by one", f[:len(f)-1], "header says 4, frame has 3"},
		{"no payload", f[:HeaderLen], "header says 4, frame has 0"},
		{"trailing byte", append(bytes.Clone(f), 'x'), "header says 4, frame has 5"},
		{"two frames", append(bytes.Clone(f), f...), "header says 4, frame has 44"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			h, p, err := Parse(ca.b)
			if !errors.Is(err, ErrLength) {
				t.Fatalf("Parse: %v, want ErrLength", err)
			}
			if p != nil {
				t.Error("payload returned with an error")
			}
			if h.Length != 4 {
				t.Errorf("header not returned with the error: %+v", h)
			}
			if want := "wire: payload length does not match the header: " + ca.msg; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	f := Append(nil, Header{Kind: KindObject, Group: 4}, []byte("0123456789"))
	boom := errors.New("boom")
	for _, ca := range []struct {
		name  string
		r     io.Reader
		max   int
		is    error
		notIs error
	}{
		{"empty stream is a clean EOF", bytes.NewReader(nil), 0, io.EOF, nil},
		{"ends inside the header", bytes.NewReader(f[:10]), 0, ErrShortHeader, io.EOF},
		{"ends after one header byte", bytes.NewReader(f[:1]), 0, ErrShortHeader, io.EOF},
		{"ends right after the header", bytes.NewReader(f[:HeaderLen]), 0, io.ErrUnexpectedEOF, nil},
		{"ends inside the payload", bytes.NewReader(f[:len(f)-1]), 0, io.ErrUnexpectedEOF, nil},
		{"payload over max", bytes.NewReader(f), 9, ErrTooLarge, nil},
		{"read error in the header", io.MultiReader(bytes.NewReader(f[:5]), iotest.ErrReader(boom)), 0, boom, nil},
		{"read error in the payload", io.MultiReader(bytes.NewReader(f[:40]), iotest.ErrReader(boom)), 0, boom, nil},
	} {
		t.Run(ca.name, func(t *testing.T) {
			_, p, err := Read(ca.r, ca.max)
			if err == nil {
				t.Fatal("no error")
			}
			if p != nil {
				t.Error("payload returned with an error")
			}
			if ca.is != nil && !errors.Is(err, ca.is) {
				t.Fatalf("%v, want %v", err, ca.is)
			}
			if ca.is == io.EOF && err != io.EOF {
				t.Fatalf("clean end: %#v, want io.EOF itself", err)
			}
			if ca.notIs != nil && errors.Is(err, ca.notIs) {
				t.Fatalf("%v must not be %v: the stream ended mid-frame", err, ca.notIs)
			}
		})
	}
	// A payload exactly at max is accepted.
	if _, p, err := Read(bytes.NewReader(f), 10); err != nil || string(p) != "0123456789" {
		t.Fatalf("Read at max: %q, %v", p, err)
	}
}

func TestReadTimeoutThenResume(t *testing.T) {
	// A reader error (like a deadline) after the header is reported, not
	// hidden as EOF.
	f := Append(nil, Header{Kind: KindObject}, []byte("x"))
	_, _, err := Read(iotest.TimeoutReader(bytes.NewReader(f)), 0)
	if !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("%v, want ErrTimeout", err)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindObject: "object", KindInit: "init", 0: "kind(0)", 200: "kind(200)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d) = %q, want %q", uint8(k), got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(goldenBytes())
	f.Add(Append(nil, Header{Kind: KindInit, Track: 1}, []byte("ftyp")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := Parse(b)
		if err != nil {
			if p != nil {
				t.Fatal("payload with an error")
			}
			return
		}
		if h.Kind != KindObject && h.Kind != KindInit {
			t.Fatalf("accepted kind %d", h.Kind)
		}
		if h.Flags&^knownFlags != 0 || h.Length > MaxPayload || int(h.Length) != len(p) {
			t.Fatalf("accepted %+v with %d payload bytes", h, len(p))
		}
		// Whatever parses re-encodes to the same bytes.
		if again := Append(nil, h, p); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded % x, want % x", again, b)
		}
		// And Read agrees with Parse.
		h2, p2, err := Read(bytes.NewReader(b), 0)
		if err != nil || h2 != h || !bytes.Equal(p2, p) {
			t.Fatalf("Read = %+v, %v; Parse = %+v", h2, err, h)
		}
	})
}

func FuzzRead(f *testing.F) {
	f.Add(goldenBytes(), 0)
	f.Add(append(goldenBytes(), goldenBytes()...), 0)
	f.Add(goldenBytes()[:20], 0)
	f.Add(goldenBytes(), 4)
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		r := bytes.NewReader(b)
		consumed := 0
		for {
			h, p, err := Read(r, max)
			if err == io.EOF {
				if consumed != len(b) {
					t.Fatalf("io.EOF after %d of %d bytes", consumed, len(b))
				}
				return
			}
			if err != nil {
				return
			}
			if int(h.Length) != len(p) || (max > 0 && len(p) > max) || len(p) > MaxPayload {
				t.Fatalf("header %+v, payload %d bytes, max %d", h, len(p), max)
			}
			// A frame read from a stream parses the same as a whole.
			frame := b[consumed : consumed+HeaderLen+len(p)]
			h2, p2, err := Parse(frame)
			if err != nil || h2 != h || !bytes.Equal(p2, p) {
				t.Fatalf("Parse of the same bytes: %+v, %v", h2, err)
			}
			consumed += len(frame)
		}
	})
}
