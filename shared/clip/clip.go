// Package clip loops a short CMAF clip as a live broadcast: the built-in
// test broadcast of `quiccast demo`, which needs neither ffmpeg nor a
// camera. Decode times are shifted by one clip length per loop, so the
// player sees one seamless, ever-rising timeline.
package clip

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
)

//go:embed demo.mp4
var demoMP4 []byte

// Clip is a parsed clip ready to loop.
type Clip struct {
	Init   *cmaf.Init
	Chunks []*cmaf.Chunk
	// Period is the clip's length per track ID, in that track's timescale.
	Period map[uint32]uint64
	// Duration is the clip's length by its primary track.
	Duration time.Duration
}

// Demo returns the clip built into the binary (see README.md for how it
// was made).
func Demo() (*Clip, error) { return Load(demoMP4) }

// DemoBytes returns the built-in clip's bytes.
func DemoBytes() []byte { return demoMP4 }

// Load parses a fragmented MP4 clip and checks that it can loop: at least
// one chunk, the first a keyframe, 64-bit decode times.
func Load(data []byte) (*Clip, error) {
	r := cmaf.NewReader(bytes.NewReader(data), cmaf.Limits{})
	c := &Clip{Period: map[uint32]uint64{}}
	first := map[uint32]uint64{}
	end := map[uint32]uint64{}
	for {
		seg, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("clip: %w", err)
		}
		switch seg := seg.(type) {
		case *cmaf.Init:
			c.Init = seg
		case *cmaf.Chunk:
			if err := cmaf.ShiftDecodeTimes(bytes.Clone(seg.Data), func(uint32) uint64 { return 0 }); err != nil {
				return nil, fmt.Errorf("clip: %w", err)
			}
			for _, t := range seg.Trafs {
				if _, ok := first[t.TrackID]; !ok {
					first[t.TrackID] = t.DecodeTime
				}
				end[t.TrackID] = t.DecodeTime + t.Duration
			}
			c.Chunks = append(c.Chunks, seg)
		}
	}
	if c.Init == nil || len(c.Chunks) == 0 {
		return nil, errors.New("clip: no init segment or no chunks")
	}
	if !c.Chunks[0].Keyframe {
		return nil, errors.New("clip: first chunk is not a keyframe")
	}
	for id, f := range first {
		c.Period[id] = end[id] - f
	}
	p := c.Init.PrimaryTrak()
	c.Duration = time.Duration(float64(c.Period[p.ID]) / float64(p.Timescale) * float64(time.Second))
	return c, nil
}

// Sink takes a live stream: an init segment, then chunks.
type Sink interface {
	Init(*cmaf.Init) error
	Chunk(*cmaf.Chunk) error
}

// Loop sends the init segment, then the chunks forever, each at the wall
// time its decode time falls due, until ctx is done or sink fails.
func (c *Clip) Loop(ctx context.Context, sink Sink) error {
	if err := sink.Init(c.Init); err != nil {
		return err
	}
	p := c.Init.PrimaryTrak()
	ts := float64(p.Timescale)
	t0 := c.Chunks[0].DecodeTime
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for loop := uint64(0); ; loop++ {
		for _, ch := range c.Chunks {
			media := float64(loop*c.Period[p.ID]+ch.DecodeTime-t0) / ts
			due := start.Add(time.Duration(media * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
			out := c.shifted(ch, loop)
			if err := sink.Chunk(out); err != nil {
				return err
			}
		}
	}
}

// shifted returns a copy of ch whose decode times are loop periods later.
func (c *Clip) shifted(ch *cmaf.Chunk, loop uint64) *cmaf.Chunk {
	out := *ch
	out.Data = bytes.Clone(ch.Data)
	_ = cmaf.ShiftDecodeTimes(out.Data, func(id uint32) uint64 { return loop * c.Period[id] }) // checked by Load
	out.Trafs = make([]cmaf.TrafTiming, len(ch.Trafs))
	for i, t := range ch.Trafs {
		t.DecodeTime += loop * c.Period[t.TrackID]
		out.Trafs[i] = t
	}
	out.DecodeTime += loop * c.Period[c.Init.PrimaryTrak().ID]
	return &out
}
