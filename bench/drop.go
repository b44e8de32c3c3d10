package bench

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/bench/netem"
)

// A bandwidth drop: with -network and -drop, the emulated link changes
// (say to rate=1200kbit, below the stream's bitrate) -drop-at into the
// measured window, for -drop-for, and then goes back. The report gives the
// latency of the objects that arrived while the link was down and how long
// after its recovery every viewer was back within -target.

// DropResult is what a bandwidth drop did to the viewers.
type DropResult struct {
	Link     string  `json:"link"` // the link during the drop
	At       string  `json:"at"`   // into the measured window
	For      string  `json:"for"`
	TargetMs float64 `json:"target_ms"`
	// During is the latency of objects that arrived while the link was down.
	During Summary `json:"during"`
	// RecoveryMs is the time from the link's recovery to the start of the
	// first stretch of one group's length in which every object that
	// arrived, on every viewer, was within the target; -1 when none began
	// before the window ended.
	RecoveryMs float64 `json:"recovery_ms"`
}

// timelineSlot is the resolution of the recovery time.
const timelineSlot = 50 * time.Millisecond

// timeline keeps the largest latency of the objects that arrived in each
// 50 ms slot since start, for a bounded time (about 200 s).
type timeline struct {
	start atomic.Int64 // unix nanoseconds; 0: not recording
	max   [4096]atomic.Int64
	n     [4096]atomic.Int64
}

func (t *timeline) begin(now time.Time) { t.start.Store(now.UnixNano()) }

func (t *timeline) record(now time.Time, lat time.Duration) {
	s := t.start.Load()
	if s == 0 {
		return
	}
	i := int((now.UnixNano() - s) / int64(timelineSlot))
	if i < 0 || i >= len(t.max) {
		return
	}
	t.n[i].Add(1)
	for {
		old := t.max[i].Load()
		if int64(lat) <= old || t.max[i].CompareAndSwap(old, int64(lat)) {
			return
		}
	}
}

// recovered returns how long after from the viewers were back within
// target: the start of the first stretch of at least hold (one group) in
// which every object that arrived, on every viewer, was within target.
// Slots where nothing arrived count neither way (a stall shows in the
// latency of what arrives after it). ok is false when no such stretch
// began before to.
func (t *timeline) recovered(from, to time.Time, target, hold time.Duration) (time.Duration, bool) {
	s := t.start.Load()
	if s == 0 {
		return 0, false
	}
	slot := func(at time.Time) int {
		return min(max(0, int((at.UnixNano()-s)/int64(timelineSlot))), len(t.max))
	}
	first, last := slot(from), slot(to)
	need := max(1, int(hold/timelineSlot))
	run := -1 // first slot of the current stretch within target
	for i := first; i < last; i++ {
		if t.n[i].Load() == 0 {
			continue
		}
		if time.Duration(t.max[i].Load()) > target {
			run = -1
			continue
		}
		if run < 0 {
			run = i
		}
		if i+1-run >= need {
			// Within the slot of from, recovery cannot be placed more exactly.
			return max(0, time.Unix(0, s+int64(run)*int64(timelineSlot)).Sub(from)), true
		}
	}
	return 0, false
}

// runDrop changes the link at cfg.DropAt for cfg.DropFor, marking the
// objects that arrive meanwhile, and returns when the link is back (or ctx
// ends). It reports the moment the link recovered.
func runDrop(ctx context.Context, emu *netem.Emu, cfg *Config, st *Stats) (down netem.Link, back time.Time, err error) {
	base := emu.Link()
	if down, err = base.With(cfg.Drop); err != nil {
		return down, back, err
	}
	sleep(ctx, cfg.DropAt)
	if ctx.Err() != nil {
		return down, back, ctx.Err()
	}
	emu.SetLink(down)
	st.dropping.Store(true)
	sleep(ctx, cfg.DropFor)
	emu.SetLink(base)
	st.dropping.Store(false)
	return down, time.Now(), ctx.Err()
}

func dropResult(st *Stats, down netem.Link, back, end time.Time, cfg *Config) *DropResult {
	r := &DropResult{Link: down.String(), At: cfg.DropAt.String(), For: cfg.DropFor.String(),
		TargetMs: float64(cfg.Target) / 1e6, During: st.Drop.Snapshot(false).Summary(), RecoveryMs: -1}
	if back.IsZero() {
		return r
	}
	if d, ok := st.tl.recovered(back, end, cfg.Target, cfg.GroupLength); ok {
		r.RecoveryMs = float64(d) / 1e6
	}
	return r
}
