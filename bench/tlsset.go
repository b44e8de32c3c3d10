package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
)

// The TLS set (`quiccast bench -tls-set`, `go tool task bench-tls`):
// issue 10's fair comparison. A page served over HTTPS can only open
// wss://, so WebTransport is measured beside WebSocket over TLS, with
// plain ws:// for reference and wss:// through the edge's
// goroutine-per-viewer writer (`-ws-writer goroutines`) as the control,
// at each viewer count, in one invocation, into one table.

// tlsVariants are the runs at each viewer count. Every TLS run uses the
// same certificate source (one the bench makes, -local-tls), so that wss
// and wt differ only by transport.
var tlsVariants = []struct {
	name, transport, edgeFlags, label string
}{
	{"ws", "ws", "", "ws:// (plain TCP)"},
	{"wss", "wss", "", "wss:// (the edge's default writer)"},
	{"wss-goroutines", "wss", "-ws-writer goroutines", "wss:// control (`-ws-writer goroutines`)"},
	{"wt", "wt", "", "WebTransport (the edge's default cap: 100 sessions per CPU)"},
	{"wt-all", "wt", admitAllWT, "WebTransport, every session admitted (`" + admitAllWT + "`)"},
}

// RunTLSSet runs base (its flags: duration, ramp, bitrate, -edge-flags…)
// with each of tlsVariants at each count in counts on a local origin and
// edge, saves each report under dir/<variant>-<count>/, and writes the
// table to w and, with results, between the TLS-set markers of that file.
func RunTLSSet(ctx context.Context, base Config, bin, dir, results string, counts []int, w io.Writer, log *slog.Logger) error {
	if base.Ramp <= 0 {
		base.Ramp = 250
	}
	if base.Duration <= 0 {
		base.Duration = 15 * time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "`go tool task bench-tls` (`quiccast bench -tls-set -viewers-list %s -duration %s`) — %s, %s, %s. Each row: `quiccast bench -local -viewers N -ramp %.0f -settle %s -duration %s` with `-transport ws`, `-transport wss` (the edge started with `-tls-cert`/`-tls-key`: a self-signed ECDSA P-256 certificate the bench makes and its viewers trust), `-transport wss -edge-flags '-ws-writer goroutines'`, `-transport wt -local-tls` (the same certificate source), and again with `-edge-flags '%s'`; %s; %s; one broadcast, 2 Mbit/s as 30 objects/s in 1 s groups (the synthetic publisher). Load average (1/5/15 min) read before each run; the load generator shares the machine's 2 cores with the nodes, and its TLS reads are its own cost, not the edge's.\n\n",
		joinInts(counts), base.Duration, time.Now().UTC().Format("2006-01-02 15:04 MST"), machineLine(), kernelTLSNote(),
		base.Ramp, base.Settle, base.Duration, admitAllWT, edgeFlagsNote(base.EdgeFlags), buildNote())
	b.WriteString("| viewers | transport | receiving | refused | latency p50 / p99 | missing | skipped groups | delivered | edge CPU-s per delivered Gbit | edge RSS per receiving viewer | edge goroutines per receiving viewer | load average |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range counts {
		for _, v := range tlsVariants {
			cfg := base
			cfg.Local, cfg.Transport, cfg.Viewers = true, v.transport, n
			cfg.LocalTLS = v.transport != "ws"
			cfg.EdgeFlags = strings.TrimSpace(base.EdgeFlags + " " + v.edgeFlags)
			log.Info("bench: TLS set", "viewers", n, "transport", v.label)
			rep, load, err := runSaved(ctx, cfg, bin, filepath.Join(dir, fmt.Sprintf("%s-%d", v.name, n)), log)
			if rep == nil {
				fmt.Fprintf(&b, "| %d | %s | failed: %v | | | | | | | | | %s |\n", n, v.label, err, load)
				continue
			}
			if err != nil {
				return err
			}
			b.WriteString(tlsRow(n, v.label, rep, load) + "\n")
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if results == "" {
		return nil
	}
	return replaceBetween(results, tlsSetStart, tlsSetEnd, "## TLS set: ws://, wss:// and WebTransport (issue 10 item 5)\n\n"+b.String())
}

func tlsRow(n int, label string, r *Report, load string) string {
	st := r.Steps[len(r.Steps)-1]
	cpu, rss, gor := "–", "–", "–"
	if nc, perRSS, perGor := servingNode(&st); nc != nil {
		cpu = fmt.Sprintf("%.3f", nc.CPUPerGbit)
		rss = fmt.Sprintf("%.1f KB", perRSS/1000)
		gor = fmt.Sprintf("%.1f", perGor) // a few fewer than before: none per viewer
	}
	return fmt.Sprintf("| %d | %s | %d of %d | %d | %.1f / %.1f ms | %d | %d | %.3f Gbit/s | %s | %s | %s | %s |",
		n, label, st.Active, st.Viewers, st.Refused, st.Latency.P50, st.Latency.P99, st.Missing, st.Skipped, st.DeliveredGbps, cpu, rss, gor, load)
}

// buildNote names the commit this binary (and so each local node, started
// from it) was built from: its build information, or else (GOFLAGS
// -buildvcs=false) the checkout it runs in, as `go tool task bench-tls`
// builds it there just before.
func buildNote() string {
	rev, dirty := "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " with uncommitted changes"
				}
			}
		}
	}
	if rev == "" {
		out, err := exec.Command("git", "describe", "--always", "--dirty= with uncommitted changes", "--abbrev=10").Output()
		if err != nil {
			return "build unknown"
		}
		return "nodes built from the checkout at " + strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("nodes built from commit %.10s%s", rev, dirty)
}

// kernelTLSNote says whether this kernel offers kernel TLS (the "tls"
// upper-layer protocol for TCP sockets).
func kernelTLSNote() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		return "kernel TLS: unknown (no /proc/sys/net/ipv4/tcp_available_ulp)"
	}
	ulp := strings.TrimSpace(string(b))
	for _, f := range strings.Fields(ulp) {
		if f == "tls" {
			return fmt.Sprintf("kernel TLS offered (tcp_available_ulp: %s)", ulp)
		}
	}
	return fmt.Sprintf("kernel TLS not offered (tcp_available_ulp: %q)", ulp)
}

const (
	tlsSetStart = "<!-- TLS set: written by `go tool task bench-tls`; edits here are overwritten -->"
	tlsSetEnd   = "<!-- end of TLS set -->"
)
