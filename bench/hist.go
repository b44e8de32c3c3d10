package bench

import (
	"math"
	"sync/atomic"
	"time"
)

// Hist is a concurrent latency histogram with logarithmic buckets (2 %
// wide) from 1 µs to about an hour. Recording is lock-free; viewers on
// different shards do not contend.
type Hist struct {
	shards [16]histShard
}

const (
	histBuckets = 1100
	histGrowth  = 1.02
)

type histShard struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
	_      [64]byte
}

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	b := int(math.Log(us)/logGrowth) + 1
	return min(b, histBuckets-1)
}

// bucketValue is the upper bound of bucket b.
func bucketValue(b int) time.Duration {
	if b == 0 {
		return time.Microsecond
	}
	return time.Duration(math.Pow(histGrowth, float64(b)) * float64(time.Microsecond))
}

// Record adds one sample; shard spreads writers (a viewer's index, say).
func (h *Hist) Record(shard int, d time.Duration) {
	s := &h.shards[shard&15]
	s.counts[bucketOf(d)].Add(1)
	for m := s.max.Load(); int64(d) > m && !s.max.CompareAndSwap(m, int64(d)); m = s.max.Load() {
	}
}

// Snapshot is a histogram's state at one time.
type Snapshot struct {
	counts [histBuckets]uint64
	Count  uint64
	Max    time.Duration
}

// Snapshot reads the histogram; with reset it also empties it (for
// per-second series), losing no sample recorded concurrently.
func (h *Hist) Snapshot(reset bool) *Snapshot {
	out := &Snapshot{}
	for i := range h.shards {
		s := &h.shards[i]
		for b := range s.counts {
			var v uint64
			if reset {
				v = s.counts[b].Swap(0)
			} else {
				v = s.counts[b].Load()
			}
			out.counts[b] += v
			out.Count += v
		}
		var m int64
		if reset {
			m = s.max.Swap(0)
		} else {
			m = s.max.Load()
		}
		out.Max = max(out.Max, time.Duration(m))
	}
	return out
}

// Merge adds o into s.
func (s *Snapshot) Merge(o *Snapshot) {
	for b := range s.counts {
		s.counts[b] += o.counts[b]
	}
	s.Count += o.Count
	s.Max = max(s.Max, o.Max)
}

// Quantile returns the q-quantile (0..1), accurate to the 2 % bucket
// width, and the exact maximum for q = 1.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	if q >= 1 {
		return s.Max
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	var seen uint64
	for b, c := range s.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(b), s.Max)
		}
	}
	return s.Max
}

// Summary is what reports show of a histogram, in milliseconds.
type Summary struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary summarises s.
func (s *Snapshot) Summary() Summary {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }
	return Summary{Count: s.Count, P50: ms(s.Quantile(.5)), P90: ms(s.Quantile(.9)), P99: ms(s.Quantile(.99)), Max: ms(s.Max)}
}
