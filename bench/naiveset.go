package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The naive set (`quiccast bench -naive-set`, `go tool task bench-naive`):
// issue 10's "cheaper than a straightforward server". At each viewer
// count, quiccast's edge serving WebTransport viewers (every session
// admitted) and the naive webtransport-go fan-out server (bench/naivewt)
// take turns, runs times each, in one invocation, into one table with the
// ratio of their medians.

// admitAllWT are the edge flags that admit every WebTransport session (no
// session cap, no CPU-starvation refusal), as the naive server does.
const admitAllWT = "-wt-max-viewers 100000 -wt-max-sched-delay -1ns"

// naiveServers are the two servers of the set, in the order they take
// turns.
var naiveServers = []struct{ server, label string }{
	{"edge", "quiccast edge"},
	{"naive", "naive webtransport-go"},
}

// naiveRun is one row's figures, for the medians.
type naiveRun struct {
	cpu, rss float64 // CPU-s per Gbit, RSS bytes per receiving viewer
	ok       bool
}

// RunNaiveSet runs base (its flags: duration, ramp, settle, bitrate,
// -edge-flags for the edge, -profile) with WebTransport viewers at each
// count in counts, runs times on the edge and on the naive server in
// turn, saves each report under dir/<server>-<count>-<run>/ (profiles
// under -profile's <server>-<count>-<run>/), and writes the table to w
// and, with results, between the naive set's markers of that file.
func RunNaiveSet(ctx context.Context, base Config, bin, dir, results string, counts []int, runs int, w io.Writer, log *slog.Logger) error {
	if base.Ramp <= 0 {
		base.Ramp = 250
	}
	if base.Duration <= 0 {
		base.Duration = 15 * time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "`go tool task bench-naive` (`quiccast bench -naive-set -naive-runs %d -viewers-list %s -ramp %.0f -settle %s -duration %s`) — %s, %s, %s. At each count, %d runs of each server in turn: `quiccast bench -local -transport wt -viewers N -ramp %.0f -settle %s -duration %s` with `-edge-flags '%s'` (%s; every session admitted) and with `-server naive` (bench/naivewt: a goroutine and a blocking write per viewer, webtransport-go and quic-go defaults). One broadcast, 2 Mbit/s as 30 objects/s in 1 s groups (the synthetic publisher). CPU-s per Gbit: the server's CPU over the measured window against the frame bytes it wrote to viewers' group streams; RSS and goroutines per viewer: at the end of the window against before any viewer joined, over the viewers receiving. Load average (1/5/15 min) read before each run; the load generator shares the machine's 2 cores with the servers.\n\n",
		runs, joinInts(counts), base.Ramp, base.Settle, base.Duration, time.Now().UTC().Format("2006-01-02 15:04 MST"), machineLine(), buildNote(),
		runs, base.Ramp, base.Settle, base.Duration, strings.TrimSpace(base.EdgeFlags+" "+admitAllWT), edgeFlagsNote(base.EdgeFlags))
	b.WriteString("| server | viewers | run | receiving | latency p50 / p99 | missing | skipped groups | CPU-s per delivered Gbit | RSS per viewer | goroutines per viewer | load average |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var ratios []string
	for _, n := range counts {
		got := map[string][]naiveRun{}
		for i := 1; i <= runs; i++ {
			for _, sv := range naiveServers {
				cfg := base
				cfg.Local, cfg.Transport, cfg.Viewers, cfg.Server = true, "wt", n, sv.server
				cfg.LocalTLS = false
				cfg.EdgeFlags = strings.TrimSpace(base.EdgeFlags + " " + admitAllWT)
				name := fmt.Sprintf("%s-%d-%d", sv.server, n, i)
				if base.Profile != "" {
					cfg.Profile = filepath.Join(base.Profile, name)
				}
				log.Info("bench: naive set", "viewers", n, "run", i, "server", sv.label)
				rep, load, err := runSaved(ctx, cfg, bin, filepath.Join(dir, name), log)
				if rep == nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					fmt.Fprintf(&b, "| %s | %d | %d | failed: %v | | | | | | | %s |\n", sv.label, n, i, err, load)
					continue
				}
				if err != nil {
					return err
				}
				row, r := naiveRow(sv.label, n, i, rep, load)
				got[sv.server] = append(got[sv.server], r)
				b.WriteString(row + "\n")
			}
		}
		ratios = append(ratios, naiveRatio(n, got["edge"], got["naive"]))
	}
	b.WriteString("\n")
	for _, r := range ratios {
		b.WriteString(r + "\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if results == "" {
		return nil
	}
	return replaceBetween(results, naiveSetStart, naiveSetEnd, "## Naive set: the edge against a naive webtransport-go server (issue 10 item 2)\n\n"+b.String())
}

// runSaved runs cfg on nodes started from bin and saves its report in
// dir; it returns the load average read before the run.
func runSaved(ctx context.Context, cfg Config, bin, dir string, log *slog.Logger) (*Report, string, error) {
	cfg.Binary, cfg.Logger = bin, log
	load := loadAvg()
	rep, err := Run(ctx, cfg)
	if err != nil {
		return nil, load, err
	}
	return rep, load, rep.Save(dir)
}

// servingNode is the cost of the node that served the viewers of a
// one-node local run (the edge, or the naive server), nil if none was
// scraped, with its memory and goroutines per receiving viewer: the
// report's per-viewer figures are over the viewers started, and a capped
// edge serves only some of them.
func servingNode(st *Step) (nc *NodeCost, rss, goroutines float64) {
	served := 1.0
	if st.Active > 0 {
		served = float64(st.Viewers) / float64(st.Active)
	}
	for i := range st.Nodes {
		if nc = &st.Nodes[i]; !strings.HasPrefix(nc.Name, "origin") {
			return nc, nc.BytesPerViewr * served, max(0, nc.GoroutinesPerViewer*served)
		}
	}
	return nil, 0, 0
}

func naiveRow(label string, n, run int, r *Report, load string) (string, naiveRun) {
	st := r.Steps[len(r.Steps)-1]
	cpu, rss, gor := "–", "–", "–"
	var nr naiveRun
	if nc, perRSS, perGor := servingNode(&st); nc != nil && nc.SentGbit > 0 && st.Active > 0 {
		nr = naiveRun{cpu: nc.CPUPerGbit, rss: perRSS, ok: true}
		cpu = fmt.Sprintf("%.3f", nr.cpu)
		rss = fmt.Sprintf("%.1f KB", nr.rss/1000)
		gor = fmt.Sprintf("%.2f", perGor)
	}
	missing := 0.0
	if t := st.Objects + st.Missing; t > 0 {
		missing = 100 * float64(st.Missing) / float64(t)
	}
	return fmt.Sprintf("| %s | %d | %d | %d of %d | %.1f / %.1f ms | %.3f %% | %d | %s | %s | %s | %s |",
		label, n, run, st.Active, st.Viewers, st.Latency.P50, st.Latency.P99, missing, st.Skipped, cpu, rss, gor, load), nr
}

// naiveRatio is the line comparing the medians of the edge's runs and
// the naive server's at one viewer count.
func naiveRatio(n int, edge, naive []naiveRun) string {
	med := func(rs []naiveRun, f func(naiveRun) float64) (float64, bool) {
		var v []float64
		for _, r := range rs {
			if r.ok {
				v = append(v, f(r))
			}
		}
		if len(v) == 0 {
			return 0, false
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2], true
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
	}
	cpu := func(r naiveRun) float64 { return r.cpu }
	rss := func(r naiveRun) float64 { return r.rss }
	ec, ok1 := med(edge, cpu)
	nc, ok2 := med(naive, cpu)
	er, _ := med(edge, rss)
	nr, _ := med(naive, rss)
	if !ok1 || !ok2 || nc <= 0 {
		return fmt.Sprintf("- %d viewers: no ratio (a server has no complete run)", n)
	}
	rr := "–"
	if nr > 0 {
		rr = fmt.Sprintf("%.2f×", er/nr)
	}
	return fmt.Sprintf("- %d viewers: median CPU-s per Gbit edge %.3f / naive %.3f = **%.2f×** (issue 10 asks ≤ 0.8×); median RSS per viewer edge %.1f KB / naive %.1f KB = **%s** (asks ≤ 1×)",
		n, ec, nc, ec/nc, er/1000, nr/1000, rr)
}

const (
	naiveSetStart = "<!-- naive set: written by `go tool task bench-naive`; edits here are overwritten -->"
	naiveSetEnd   = "<!-- end of naive set -->"
)
