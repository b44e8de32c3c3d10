package edge

import (
	"math"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// schedMeter watches how long runnable goroutines wait for a CPU (the Go
// scheduler's latency, runtime/metrics /sched/latencies:seconds). When
// that wait is long the process is starved, by its own load or by its
// neighbours', and every viewer's writes are late by it: new WebTransport
// sessions, which cost the most CPU, are then refused before the upgrade
// (-wt-max-sched-delay) instead of being admitted into an edge that
// cannot serve them.
type schedMeter struct {
	sample []metrics.Sample
	last   []uint64      // the histogram's counts at the previous read
	p99    atomic.Int64  // ns: the 99th percentile of the waits since then
	at     atomic.Int64  // unix ns of that read
	every  time.Duration // how often it is read
}

const schedMetric = "/sched/latencies:seconds"

func newSchedMeter(every time.Duration) *schedMeter {
	return &schedMeter{sample: []metrics.Sample{{Name: schedMetric}}, every: every}
}

// read takes the waits since the previous read.
func (m *schedMeter) read(now time.Time) {
	metrics.Read(m.sample)
	if m.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return // not in this Go release
	}
	h := m.sample[0].Value.Float64Histogram()
	if len(m.last) != len(h.Counts) {
		m.last = append(m.last[:0], h.Counts...)
		return
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - m.last[i]
	}
	p99 := 0.0
	if total > 0 {
		want := uint64(math.Ceil(float64(total) * 0.99))
		var seen uint64
		for i, c := range h.Counts {
			seen += c - m.last[i]
			if seen >= want {
				p99 = h.Buckets[i+1] // the bucket's upper bound
				if math.IsInf(p99, 1) {
					p99 = h.Buckets[i]
				}
				break
			}
		}
	}
	copy(m.last, h.Counts)
	m.p99.Store(int64(p99 * 1e9))
	m.at.Store(now.UnixNano())
}

// delay is the latest 99th percentile wait, zero when the reading is
// stale (the meter stopped or starved itself past two periods: then the
// process is starved anyway, but say nothing rather than something old).
func (m *schedMeter) delay(now time.Time) time.Duration {
	if now.UnixNano()-m.at.Load() > int64(2*m.every)+int64(time.Second) {
		return 0
	}
	return time.Duration(m.p99.Load())
}
