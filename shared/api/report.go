package api

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/version"
)

// ReportEvery is how often a node reports; what it reports lives for
// ReportTTL, so a dead node's figures vanish within a few seconds.
const (
	ReportEvery = time.Second
	ReportTTL   = 3 * ReportEvery
)

// Reporter writes a node's report to the registry every ReportEvery: one
// pipeline per node per second, whatever its viewers.
type Reporter struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	now    chan struct{}
}

// StartReporter calls collect every ReportEvery and writes what it returns
// (with the version, the host's load and the start time filled in) until
// Stop. A Redis error is retried at the next tick.
func StartReporter(reg *registry.Registry, collect func() registry.Report) *Reporter {
	ctx, cancel := context.WithCancel(context.Background())
	rp := &Reporter{cancel: cancel, now: make(chan struct{}, 1)}
	started := time.Now()
	rp.wg.Add(1)
	go func() {
		defer rp.wg.Done()
		t := time.NewTicker(ReportEvery)
		defer t.Stop()
		var cpu cpuMeter
		for {
			rep := collect()
			rep.Node.Version = version.Get().Version
			rep.Node.Load = Load()
			rep.Node.Started = started
			rep.Node.CPU = cpu.fraction()
			rctx, cancel := context.WithTimeout(ctx, ReportEvery)
			_ = reg.Report(rctx, rep, ReportTTL)
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-rp.now:
			}
		}
	}()
	return rp
}

// Now reports at once (an edge that starts draining says so before the
// next tick).
func (rp *Reporter) Now() {
	if rp == nil {
		return
	}
	select {
	case rp.now <- struct{}{}:
	default:
	}
}

// cpuMeter measures the process's CPU time between calls.
type cpuMeter struct {
	at  time.Time
	cpu time.Duration
}

// fraction returns the CPU time since the last call as a fraction of all
// cores' time (0 on the first call, or where getrusage fails).
func (m *cpuMeter) fraction() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	now := time.Now()
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	defer func() { m.at, m.cpu = now, cpu }()
	if m.at.IsZero() {
		return 0
	}
	wall := now.Sub(m.at)
	if wall <= 0 {
		return 0
	}
	return min(1, float64(cpu-m.cpu)/float64(wall)/float64(runtime.NumCPU()))
}

// Stop ends the reports (the keys expire by themselves).
func (rp *Reporter) Stop() {
	if rp == nil {
		return
	}
	rp.cancel()
	rp.wg.Wait()
}

// Load is the host's 1-minute load average (0 where /proc/loadavg is
// missing).
func Load() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	l, _ := strconv.ParseFloat(f, 64)
	return l
}
