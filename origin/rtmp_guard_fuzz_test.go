package origin

import (
	"bytes"
	"io"
	"runtime"
	"testing"

	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/message"
)

// guardedReader is the origin's read path in small: every byte passes the
// guard before gortmplib gets it. It ends at the publish command, after
// which the guard's limits before authorisation no longer apply.
type guardedReader struct {
	r io.Reader
	g *rtmpGuard
}

func (gr *guardedReader) Read(p []byte) (int, error) {
	if !gr.g.preAuth {
		return 0, io.EOF
	}
	k, err := gr.r.Read(p)
	if k > 0 {
		if gerr := gr.g.scan(p[:k]); gerr != nil {
			return 0, gerr
		}
	}
	return k, err
}

// FuzzRTMPGuard feeds arbitrary chunk-stream bytes (what follows the
// handshake) to gortmplib through the guard. Whatever they are, before the
// publish command gortmplib may allocate only in proportion to what it was
// sent (plus the 64 KiB of open messages the guard allows), never the
// 10 MiB a chunk header can ask for; and the guard never panics.
// Seeds: testdata/fuzz/FuzzRTMPGuard and the streams below.
func FuzzRTMPGuard(f *testing.F) {
	f.Add(rtmpStream(f, 128, false))
	f.Add(rtmpStream(f, 65536, true))
	f.Add(append(rtmpSetChunkSize(10<<20), rtmpChunk0(4, 9, 10<<20-1)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newRTMPGuard()
		g.handshake = 0
		r := message.NewReader(&guardedReader{r: bytes.NewReader(data), g: g}, bytecounter.NewReader(bytes.NewReader(nil)), func(uint32) error { return nil })
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100_000 {
			if _, err := r.Read(); err != nil {
				break
			}
		}
		runtime.ReadMemStats(&after)
		if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(1<<20+200*len(data)); got > limit {
			t.Fatalf("gortmplib allocated %d bytes for %d bytes of input before publish (limit %d)", got, len(data), limit)
		}
	})
}
