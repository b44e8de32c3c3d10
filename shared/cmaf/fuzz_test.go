package cmaf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fuzzLimits are the defaults, as an origin runs: a box's buffer grows
// only as its bytes arrive, so a declared 8 MiB costs nothing, and the
// corpus (testdata/fuzz) holds nesting and size extremes to start from.
var fuzzLimits = Limits{}.withDefaults()

func FuzzReader(f *testing.F) {
	if b, err := os.ReadFile("../clip/demo.mp4"); err == nil {
		s := splitStream(f, b)
		f.Add(cat(s.init, s.chunks[0], s.chunks[1]))
		f.Add(cat(s.init, s.chunks[2], s.chunks[1]))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), fuzzLimits)
		var in *Init
		last := map[uint32]uint64{}
		for i := 0; ; i++ {
			v, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if v != nil {
					t.Fatalf("%T returned with error %v", v, err)
				}
				// Once broken, a Reader stays broken or ends; it never
				// loops.
				return
			}
			if i > len(data)/8 {
				t.Fatalf("%d items from %d bytes", i+1, len(data))
			}
			switch v := v.(type) {
			case *Init:
				if in != nil {
					t.Fatal("second init")
				}
				in = v
				if len(v.Data) > fuzzLimits.MaxInit || !bytes.Contains(data, v.Data) || len(v.Traks) == 0 ||
					v.Primary < 0 || v.Primary >= len(v.Traks) {
					t.Fatalf("bad init %+v", v)
				}
				_ = v.MimeType()
			case *Chunk:
				if in == nil {
					t.Fatal("chunk before init")
				}
				if len(v.Data) > fuzzLimits.MaxBox || !bytes.Contains(data, v.Data) || v.Samples == 0 || len(v.Trafs) == 0 {
					t.Fatalf("bad chunk: %d bytes, %d samples, trafs %+v", len(v.Data), v.Samples, v.Trafs)
				}
				for _, tr := range v.Trafs {
					if p, ok := last[tr.TrackID]; ok && tr.DecodeTime <= p {
						t.Fatalf("track %d: decode time %d after %d", tr.TrackID, tr.DecodeTime, p)
					}
					last[tr.TrackID] = tr.DecodeTime
				}
				// ParseChunk agrees with the Reader.
				c, err := in.ParseChunk(v.Data)
				if err != nil || c.DecodeTime != v.DecodeTime || c.Keyframe != v.Keyframe || c.Samples != v.Samples {
					t.Fatalf("ParseChunk: %+v, %v; Reader: %+v", c, err, v)
				}
			default:
				t.Fatalf("Next returned %T", v)
			}
		}
	})
}

var fuzzInit = sync.OnceValues(func() (*Init, error) {
	b, err := os.ReadFile("../clip/demo.mp4")
	if err != nil {
		return nil, err
	}
	in, _, err := readAll(&testing.T{}, bytes.NewReader(b[:1272]), Limits{})
	return in, err
})

func FuzzParseChunk(f *testing.F) {
	in, err := fuzzInit()
	if err != nil || in == nil {
		f.Fatalf("demo init: %v", err)
	}
	s := demoStream(f)
	f.Add(s.chunks[0])
	f.Add(s.chunks[len(s.chunks)-1])
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := in.ParseChunk(data)
		if err == nil {
			if c.Samples == 0 || len(c.Trafs) == 0 || !bytes.Equal(c.Data, data) {
				t.Fatalf("bad chunk %+v", c)
			}
			for _, tr := range c.Trafs {
				if tr.TrackID != 1 && tr.TrackID != 2 {
					t.Fatalf("traf of track %d", tr.TrackID)
				}
			}
		} else if c != nil {
			t.Fatal("chunk with an error")
		}
		// ShiftDecodeTimes walks the same bytes its own way: it must not
		// panic, and a shift of 0 changes nothing.
		cp := bytes.Clone(data)
		if err := ShiftDecodeTimes(cp, func(uint32) uint64 { return 0 }); err == nil && !bytes.Equal(cp, data) {
			t.Fatal("a zero shift changed the chunk")
		}
		_ = ShiftDecodeTimes(cp, func(uint32) uint64 { return 1 << 40 })
		_ = parsePrft(data)
	})
}

// TestWriteFuzzSeeds writes the seeds of nesting and size extremes into
// testdata/fuzz. It runs only with QC_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("QC_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set QC_WRITE_FUZZ_SEEDS=1 to rewrite the seeds")
	}
	s := demoStream(t)
	init, c0 := s.init, s.chunks[0]
	ftypLen := int(binary.BigEndian.Uint32(init))
	moofLen := int(binary.BigEndian.Uint32(c0))
	ftyp, moov := init[:ftypLen], init[ftypLen:]
	moof, mdat := c0[:moofLen], c0[moofLen:]
	// chunkWith returns c0 with extra added to its moof, samples moved.
	chunkWith := func(extra []byte) []byte {
		c := cat(withChild(moof, extra), mdat)
		for i := 0; i+16 <= moofLen; i++ {
			if string(c[i:i+4]) == "trun" {
				binary.BigEndian.PutUint32(c[i+12:], binary.BigEndian.Uint32(c[i+12:])+uint32(len(extra)))
			}
		}
		return c
	}
	d := DefaultMaxDepth
	declared := func(typ string, size int, have int) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(size))
		return append(append(b, typ...), make([]byte, have)...)
	}
	size64Moof := cat([]byte{0, 0, 0, 1}, []byte("moof"), binary.BigEndian.AppendUint64(nil, uint64(moofLen+8)), moof[8:], mdat)
	chunks := map[string][]byte{
		"nest_traf_over_limit": chunkWith(nested("traf", d, nil)),
		"nest_traf_at_limit":   chunkWith(nested("traf", d-2, nil)),
		"nest_udta_at_limit":   chunkWith(nested("udta", d-2, free(8))),
		"many_boxes_over":      chunkWith(bytes.Repeat(free(8), DefaultMaxBoxes)),
		"moof_size64":          size64Moof,
	}
	streams := map[string][]byte{
		"nest_init_trak_over_limit": cat(ftyp, withChild(moov, nested("trak", d, nil)), c0),
		"nest_init_at_limit":        cat(ftyp, withChild(moov, nested("udta", d-2, free(8))), c0),
		"nest_init_trak_deep":       cat(ftyp, withChild(moov, nested("trak", 1000, nil)), c0),
		"declared_max_box":          cat(init, declared("moof", DefaultMaxBox, 64)),
		"declared_over_max_box":     cat(init, declared("mdat", DefaultMaxBox+1, 0)),
		"declared_max_init":         cat(declared("ftyp", 16, 8), declared("moov", DefaultMaxInit-16, 64)),
		"tiny_boxes_between":        cat(init, bytes.Repeat(free(8), 512), c0),
	}
	for name, c := range chunks {
		streams[name] = cat(init, c)
	}
	write := func(target string, seeds map[string][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzParseChunk", chunks)
	write("FuzzReader", streams)
}
