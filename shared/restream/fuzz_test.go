package restream

import (
	"testing"

	"github.com/quiccast/quiccast/shared/clip"
)

// FuzzChunkSamples: the moof reader takes any bytes (a cached chunk, which
// a publisher shaped) without panicking, reading outside the chunk or
// returning more samples than maxSamplesPerChunk per moof; every sample's
// data lies inside the chunk.
func FuzzChunkSamples(f *testing.F) {
	if c, err := clip.Demo(); err == nil {
		for i, ch := range c.Chunks {
			if i%40 == 0 || ch.Keyframe {
				f.Add(ch.Data)
			}
			if i > 200 {
				break
			}
		}
	}
	f.Add([]byte("\x00\x00\x00\x08moof"))
	f.Add([]byte("\x00\x00\x00\x10moof\x00\x00\x00\x08traf"))
	f.Fuzz(func(t *testing.T, chunk []byte) {
		samples, err := chunkSamples(nil, chunk)
		if err != nil {
			return
		}
		for _, s := range samples {
			if len(s.data) > len(chunk) {
				t.Fatalf("a sample of %d bytes from a chunk of %d", len(s.data), len(chunk))
			}
		}
	})
}

// FuzzAMFStatus: what a foreign RTMP server sends back is searched for a
// refusal's status without panicking, and what is found is printable
// text no longer than the input.
func FuzzAMFStatus(f *testing.F) {
	f.Add([]byte("\x00\x05level\x02\x00\x05error\x00\x04code\x02\x00\x18NetStream.Publish.BadName\x00\x0bdescription\x02\x00\x02no"))
	f.Add([]byte("\x00\x05level\x02\x00\x06status"))
	f.Add([]byte("\x00\x05level\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := amfStatus(b)
		if len(s) > len(b)+2 {
			t.Fatalf("status %q longer than its input (%d bytes)", s, len(b))
		}
		for _, c := range []byte(s) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("status %q holds control bytes", s)
			}
		}
	})
}
