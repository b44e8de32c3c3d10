package clip

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
)

func TestDemo(t *testing.T) {
	c, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("demo.mp4")
	if err != nil || !bytes.Equal(file, DemoBytes()) {
		t.Fatalf("DemoBytes is not demo.mp4: %v", err)
	}
	if len(c.Chunks) != 192 || !c.Chunks[0].Keyframe || c.Init.Codec() != "avc1.4D401E,mp4a.40.2" {
		t.Fatalf("%d chunks, first keyframe %v, codec %s", len(c.Chunks), c.Chunks[0].Keyframe, c.Init.Codec())
	}
	if c.Duration != 6400*time.Millisecond {
		t.Fatalf("Duration %s, want 6.4s", c.Duration)
	}
	if len(c.Period) != 2 {
		t.Fatalf("periods %v", c.Period)
	}
	for _, tr := range c.Init.Traks {
		sec := float64(c.Period[tr.ID]) / float64(tr.Timescale)
		if sec != 6.4 {
			t.Errorf("track %d (%s): period %d / %d = %gs, want 6.4s", tr.ID, tr.Handler, c.Period[tr.ID], tr.Timescale, sec)
		}
	}
}

type sinkCall struct {
	at    time.Duration // since the loop started
	chunk *cmaf.Chunk
}

// recorder is a fake Sink.
type recorder struct {
	start    time.Time
	inits    int
	chunks   []sinkCall
	failInit error
	failAt   int // fail the failAt-th chunk (1-based), 0 never
}

func (r *recorder) Init(*cmaf.Init) error {
	r.inits++
	return r.failInit
}

func (r *recorder) Chunk(c *cmaf.Chunk) error {
	if r.inits != 1 {
		return errors.New("chunk before the init")
	}
	r.chunks = append(r.chunks, sinkCall{time.Since(r.start), c})
	if len(r.chunks) == r.failAt {
		return errBoom
	}
	return nil
}

var errBoom = errors.New("sink failed")

func TestLoopShiftsEachLoopByPeriod(t *testing.T) {
	c, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	orig := make([][]byte, len(c.Chunks))
	for i, ch := range c.Chunks {
		orig[i] = bytes.Clone(ch.Data)
	}
	synctest.Test(t, func(t *testing.T) {
		// Not a whole second: a chunk due at the deadline would race it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*c.Duration+990*time.Millisecond)
		defer cancel()
		r := &recorder{start: time.Now()}
		err := c.Loop(ctx, r)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Loop = %v, want the context's error", err)
		}
		if r.inits != 1 {
			t.Fatalf("%d inits", r.inits)
		}
		// Three loops started: 192 + 192 + the chunks due in the first
		// second of the third (30 fps, one frame per chunk).
		if n := len(r.chunks); n != 2*192+30 {
			t.Fatalf("%d chunks sent", n)
		}
		video := c.Init.PrimaryTrak()
		for i, call := range r.chunks {
			loop, k := uint64(i/192), i%192
			src := c.Chunks[k]
			ch := call.chunk
			// Paced by decode time: chunk k of loop n is due at
			// n*6.4 s + its media time.
			due := time.Duration(loop)*c.Duration + time.Duration(float64(src.DecodeTime-c.Chunks[0].DecodeTime)/float64(video.Timescale)*float64(time.Second))
			if d := call.at - due; d < -time.Microsecond || d > time.Microsecond {
				t.Fatalf("chunk %d (loop %d #%d) sent at %s, due at %s", i, loop, k, call.at, due)
			}
			if ch.DecodeTime != src.DecodeTime+loop*c.Period[video.ID] || ch.Keyframe != src.Keyframe || ch.Duration != src.Duration {
				t.Fatalf("chunk %d: decode time %d, source %d, loop %d", i, ch.DecodeTime, src.DecodeTime, loop)
			}
			// The bytes say the same as the fields.
			parsed, err := c.Init.ParseChunk(ch.Data)
			if err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			for j, tr := range ch.Trafs {
				want := src.Trafs[j].DecodeTime + loop*c.Period[tr.TrackID]
				if tr.DecodeTime != want || parsed.Trafs[j].DecodeTime != want || tr.TrackID != src.Trafs[j].TrackID {
					t.Fatalf("chunk %d track %d: traf %d, bytes %d, want %d", i, tr.TrackID, tr.DecodeTime, parsed.Trafs[j].DecodeTime, want)
				}
			}
			if loop == 0 && !bytes.Equal(ch.Data, src.Data) {
				t.Fatalf("chunk %d: the first loop changed bytes", i)
			}
		}
		// Loop 2 continues loop 1's timeline seamlessly, per track.
		last := r.chunks[191].chunk
		first2 := r.chunks[192].chunk
		if first2.DecodeTime != last.DecodeTime+last.Duration {
			t.Fatalf("loop 2 starts at %d, loop 1 ended at %d", first2.DecodeTime, last.DecodeTime+last.Duration)
		}
	})
	for i, ch := range c.Chunks {
		if !bytes.Equal(ch.Data, orig[i]) {
			t.Fatalf("Loop modified the clip's chunk %d", i)
		}
	}
}

func TestLoopStopsOnSinkError(t *testing.T) {
	c, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{start: time.Now(), failAt: 5}
		if err := c.Loop(context.Background(), r); !errors.Is(err, errBoom) {
			t.Fatalf("Loop = %v, want the sink's error", err)
		}
		if len(r.chunks) != 5 {
			t.Fatalf("%d chunks", len(r.chunks))
		}
		r = &recorder{start: time.Now(), failInit: errBoom}
		if err := c.Loop(context.Background(), r); !errors.Is(err, errBoom) || len(r.chunks) != 0 {
			t.Fatalf("Loop = %v after %d chunks, want the init error at once", err, len(r.chunks))
		}
	})
}

func TestLoopCancelled(t *testing.T) {
	c, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := &recorder{start: time.Now()}
		if err := c.Loop(ctx, r); !errors.Is(err, context.Canceled) {
			t.Fatalf("Loop = %v", err)
		}
		// The first chunk is due at once; nothing after it is sent.
		if len(r.chunks) > 1 {
			t.Fatalf("%d chunks sent after cancel", len(r.chunks))
		}
	})
}

func TestLoadErrors(t *testing.T) {
	demo := DemoBytes()
	ftypMoov := 28 + 1244
	firstChunk := 196 + 5736
	for _, ca := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not an mp4 file at all")},
		{"init only", demo[:ftypMoov]},
		{"no keyframe first", append(bytes.Clone(demo[:ftypMoov]), demo[ftypMoov+firstChunk:]...)},
		{"truncated", demo[:len(demo)-100]},
	} {
		if c, err := Load(ca.data); err == nil {
			t.Errorf("%s: loaded %d chunks", ca.name, len(c.Chunks))
		}
	}
}
