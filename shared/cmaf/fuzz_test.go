package cmaf

import (
	"bytes"
	"io"
	"os"
	"sync"
	"testing"
)

// fuzzLimits keep each fuzz run's allocations small; the code paths are
// the same as with the defaults.
var fuzzLimits = Limits{MaxBox: 256 << 10, MaxInit: 64 << 10}

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
