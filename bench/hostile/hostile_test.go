package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAttacksOnTheBinary is issue 9's findings 1–5 as regression tests
// through the real binary: each attack runs against a fresh origin built
// from this tree, which must stay up, refuse the attacker with the
// defined close code, and stay within a memory (and CPU) bound that the
// unfixed origin broke by far (its figures are in bench/RESULTS.md).
// QC_HOSTILE_BIN runs it against another binary, e.g. an old build.
func TestAttacksOnTheBinary(t *testing.T) {
	bin := os.Getenv("QC_HOSTILE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "quiccast")
		out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput()
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	const mib = 1 << 20
	cases := []struct {
		name    string
		extra   []string // origin flags
		maxPeak int64    // peak RSS
		maxCPU  float64  // CPU seconds
		want    string   // an outcome every run must include
	}{
		// Before: the origin died of a stack overflow at 1 GiB.
		{name: "deep-moof", maxPeak: 256 * mib, maxCPU: 5, want: "closed 4015"},
		// Before: 57–74 CPU-s of quadratic parsing.
		{name: "deep-init", maxPeak: 256 * mib, maxCPU: 5, want: "closed 4015"},
		// Before: no refusal at any budget; RSS 1.3 GB. The budget is
		// lowered here to keep the test small: refusals must come
		// before the process outgrows it by more than the runtime's
		// slack. 64 MiB, not 128: on a busy machine the attackers send
		// slowly enough that the first are closed as idle (4408, their
		// bytes released) before the rest add up to 128 MiB (a run
		// beside two CPU hogs peaked at 110 MiB held, no 4503).
		{name: "big-boxes", extra: []string{"-memory-budget", "67108864"}, maxPeak: 640 * mib, maxCPU: 30, want: "closed 4503"},
		// Before: 174 MiB for 200 headers.
		{name: "box-headers", maxPeak: 128 * mib, maxCPU: 10, want: "closed 4408"},
		// Before: 523 MiB, connections held 10 s.
		{name: "rtmp-big", maxPeak: 128 * mib, maxCPU: 5},
		// Before: 405 MiB for the 10 s HELLO timeout.
		{name: "relay-hello", maxPeak: 160 * mib, maxCPU: 10, want: "closed 4000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var a *attack
			for i := range attacks {
				if attacks[i].name == c.name {
					a = &attacks[i]
				}
			}
			if a == nil {
				t.Fatalf("no attack %q", c.name)
			}
			r, err := measure(bin, *a, time.Minute, c.extra...)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(r.row())
			if r.died != "" {
				t.Fatalf("the origin died: %s", r.died)
			}
			if r.peak > c.maxPeak {
				t.Errorf("peak RSS %d MiB, want at most %d MiB", r.peak/mib, c.maxPeak/mib)
			}
			if r.cpu > c.maxCPU {
				t.Errorf("%.1f CPU-s, want at most %.0f", r.cpu, c.maxCPU)
			}
			if c.want != "" && !strings.Contains(summarize(r.outcomes), c.want) {
				t.Errorf("outcomes %s, want some %q", summarize(r.outcomes), c.want)
			}
			if n := r.outcomes["held open"]; n > 0 {
				t.Errorf("%d attacking connections were still open after a minute", n)
			}
		})
	}
}
