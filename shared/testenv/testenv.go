// Package testenv holds helpers for quiccast's tests: required external
// tools, metric reads, captured logs and polling.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RequireTool fails the test when the command is missing and the
// environment says tools are required (QC_REQUIRE_TOOLS=1, as `go tool task
// test` and CI set it); otherwise it skips, so `go test` works on a bare
// machine.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("QC_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is required (QC_REQUIRE_TOOLS=1) but not installed: run `go tool task deps`", name)
	}
	t.Skipf("%s not installed; `go tool task test` installs it", name)
	return ""
}

// RequireFile is RequireTool for a file (an npm package, say).
func RequireFile(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("QC_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is required (QC_REQUIRE_TOOLS=1) but missing: %s", path, hint)
	}
	t.Skipf("%s missing: %s", path, hint)
}

// Metric returns the value of the metric name whose labels include the
// given name/value pairs (a counter, gauge or untyped), or -1 if absent.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Untyped != nil:
				return m.Untyped.GetValue()
			}
		}
	}
	return -1
}

// Histogram returns the sample count and sum of the histogram name whose
// labels include the given name/value pairs (0, 0 if absent).
func Histogram(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (count uint64, sum float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if h := m.GetHistogram(); h != nil {
				return h.GetSampleCount(), h.GetSampleSum()
			}
		}
	}
	return 0, 0
}

// Logs is a logger whose output a test can search.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Logger returns a debug-level text logger writing into l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Lines returns the lines containing every one of subs.
func (l *Logs) Lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// WaitFor polls cond every 10 ms until it holds or d passes, then fails
// with what.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run runs a node's Run(ctx) until the test ends, then stops it and fails
// the test if it returned an error.
func Run(t testing.TB, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("run: %v", err)
		}
	})
}
