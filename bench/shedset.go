package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// The shed set (`quiccast bench -shed-set`, `go tool task bench-shed`):
// issue 10's "shed load, never collapse" and "join bursts". WebTransport
// viewers past what one local edge can carry, every viewer dialling within
// the first second, run after run: in each run the objects delivered to
// admitted viewers must be within 500 ms of capture at p99, and what the
// edge could not carry must show as refused sessions and skipped groups,
// not as every viewer falling behind.

// shedBound is the p99 a run must keep for the viewers it admitted.
const shedBound = 500 * time.Millisecond

// RunShedSet runs base (its flags: edges, bitrate, -edge-flags…) with
// WebTransport viewers, runs times at each count in counts, every count
// dialling within one second, saves each report under
// dir/wt-<count>-<run>/ and writes one table to w.
func RunShedSet(ctx context.Context, base Config, bin, dir string, counts []int, runs int, w io.Writer, log *slog.Logger) error {
	var b strings.Builder
	fmt.Fprintf(&b, "`quiccast bench -shed-set -runs %d -viewers-list %s` — %s, %s. Each run: `quiccast bench -local -transport wt -viewers N -ramp N -duration %s` (every viewer dials within the first second; %s). Held: the admitted viewers' p99 ≤ %s.\n\n",
		runs, joinInts(counts), time.Now().UTC().Format("2006-01-02 15:04 MST"), machineLine(), base.Duration, edgeFlagsNote(base.EdgeFlags), shedBound)
	b.WriteString("| viewers | run | admitted | refused (told to retry) | failed | join p50 / p99 | latency p50 / p99 / max | held | skipped groups | missing | edge CPU-s per Gbit | load average |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	held, total := 0, 0
	for _, n := range counts {
		for i := 1; i <= runs; i++ {
			cfg := base
			cfg.Local, cfg.Transport, cfg.Viewers, cfg.Ramp = true, "wt", n, float64(n)
			cfg.Binary, cfg.Logger = bin, log
			load := loadAvg()
			log.Info("bench: shed set", "viewers", n, "run", i)
			rep, err := Run(ctx, cfg)
			total++
			if err != nil {
				fmt.Fprintf(&b, "| %d | %d | failed: %v | | | | | no | | | | %s |\n", n, i, err, load)
				continue
			}
			if err := rep.Save(filepath.Join(dir, fmt.Sprintf("wt-%d-%d", n, i))); err != nil {
				return err
			}
			st := rep.Steps[len(rep.Steps)-1]
			ok := st.Active > 0 && st.Latency.P99 <= float64(shedBound)/1e6
			verdict := "no"
			if ok {
				held++
				verdict = "yes"
			}
			cpu := "–"
			for _, nc := range st.Nodes {
				if strings.HasPrefix(nc.Name, "edge") {
					cpu = fmt.Sprintf("%.2f", nc.CPUPerGbit)
				}
			}
			fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %.0f / %.0f ms | %.0f / %.0f / %.0f ms | %s | %d | %d | %s | %s |\n",
				n, i, st.Active, st.Refused, st.Failed, rep.Join.P50, rep.Join.P99, st.Latency.P50, st.Latency.P99, st.Latency.Max,
				verdict, st.Skipped, st.Missing, cpu, load)
		}
	}
	fmt.Fprintf(&b, "\nHeld in %d of %d runs.\n", held, total)
	_, err := io.WriteString(w, b.String())
	return err
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

func edgeFlagsNote(f string) string {
	if f == "" {
		return "the edge's defaults"
	}
	return "edge flags `" + f + "`"
}
