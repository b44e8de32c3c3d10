package api

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
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
}

// StartReporter calls collect every ReportEvery and writes what it returns
// (with the version, the host's load and the start time filled in) until
// Stop. A Redis error is retried at the next tick.
func StartReporter(reg *registry.Registry, collect func() registry.Report) *Reporter {
	ctx, cancel := context.WithCancel(context.Background())
	rp := &Reporter{cancel: cancel}
	started := time.Now()
	rp.wg.Add(1)
	go func() {
		defer rp.wg.Done()
		t := time.NewTicker(ReportEvery)
		defer t.Stop()
		for {
			rep := collect()
			rep.Node.Version = version.Get().Version
			rep.Node.Load = Load()
			rep.Node.Started = started
			rctx, cancel := context.WithTimeout(ctx, ReportEvery)
			_ = reg.Report(rctx, rep, ReportTTL)
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return rp
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
