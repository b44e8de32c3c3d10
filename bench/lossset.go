package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The loss set (`quiccast bench -loss-set`, `go tool task bench-loss`):
// issue 10's "better than TCP" scenarios, each run over WebSocket and then
// WebTransport in one invocation, side by side in one table. Needs root
// (the emulator).

// LossScenario is one network condition of the loss set.
type LossScenario struct {
	Name  string
	Title string
	Args  string // quiccast bench flags, less -transport
	Cfg   Config
}

// LossSet is the loss set's scenarios.
func LossSet() []LossScenario {
	c := func(viewers int, network, drop string, d time.Duration) Config {
		return Config{Local: true, Settle: 3 * time.Second, Viewers: viewers, Network: network, Drop: drop, Duration: d}
	}
	return []LossScenario{
		{Name: "loss2", Title: "2 % loss, 40 ms RTT, 20 viewers",
			Args: "-local -network delay=20ms,loss=2% -viewers 20 -duration 20s",
			Cfg:  c(20, "delay=20ms,loss=2%", "", 20*time.Second)},
		{Name: "loss5", Title: "5 % loss, 40 ms RTT, 20 viewers",
			Args: "-local -network delay=20ms,loss=5% -viewers 20 -duration 20s",
			Cfg:  c(20, "delay=20ms,loss=5%", "", 20*time.Second)},
		// One viewer: the emulated link is one viewer's access link.
		{Name: "drop", Title: "2 Mbit/s stream, link down to 1.2 Mbit/s for 10 s, 40 ms RTT, 1 viewer",
			Args: "-local -network delay=20ms,queue=100 -drop rate=1200kbit -drop-at 5s -drop-for 10s -viewers 1 -duration 25s",
			Cfg:  c(1, "delay=20ms,queue=100", "rate=1200kbit", 25*time.Second)},
	}
}

// lossVariants are the runs of each scenario: WebSocket over the kernel's
// TCP (BBR here), WebTransport (quic-go: Cubic, the only congestion
// control it has), and WebSocket over TCP Reno, a loss-based control like
// quic-go's (a namespace may only pick from
// net.ipv4.tcp_allowed_congestion_control, "reno bbr" here).
var lossVariants = []struct{ name, transport, network, label string }{
	{"ws", "ws", "", "ws (TCP BBR, the default here)"},
	{"wt", "wt", "", "wt (quic-go Cubic)"},
	{"ws-reno", "ws", ",cc=reno", "ws (TCP Reno: `,cc=reno`)"},
}

// RunLossSet runs the loss set (the scenarios named in only, or all), each
// over ws and then wt, saves every report under dir/<name>-<transport>/ and
// prints the table; with results, it also rewrites the loss-set section of
// that file.
func RunLossSet(ctx context.Context, bin, dir, results string, only []string, log *slog.Logger) error {
	var rows []string
	for _, sc := range LossSet() {
		if len(only) > 0 && !contains(only, sc.Name) {
			continue
		}
		for _, v := range lossVariants {
			log.Info("bench: loss set", "scenario", sc.Name, "transport", v.label)
			cfg := sc.Cfg
			cfg.Transport, cfg.Binary, cfg.Logger = v.transport, bin, log
			cfg.Network += v.network
			load := loadAvg()
			rep, err := Run(ctx, cfg)
			if err != nil {
				rows = append(rows, fmt.Sprintf("| %s | %s | failed: %v | | | | | | | %s |", sc.Title, v.label, err, load))
				continue
			}
			if err := rep.Save(filepath.Join(dir, sc.Name+"-"+v.name)); err != nil {
				return err
			}
			rows = append(rows, lossRow(sc, v.label, rep, load))
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("bench: no loss-set scenario named %v", only)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "`go tool task bench-loss` (`quiccast bench -loss-set`) — %s, %s. Each scenario: `quiccast bench <flags> -transport ws`, then `-transport wt`, then `-transport ws` with `,cc=reno` added to `-network`; 2 Mbit/s, 30 objects/s, 1 s groups (keyframe object 4× the others). Load average (1/5/15 min) read before each run.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machineLine())
	b.WriteString("| scenario (flags) | transport | latency p50 | p99 | max | missing | skipped groups | during the drop: p50 / p99 | back within 150 ms (for a whole group) after the link recovered | load average |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		b.WriteString(r + "\n")
	}
	fmt.Print(b.String())
	if results == "" {
		return nil
	}
	return replaceBetween(results, lossSetStart, lossSetEnd, "## Loss set\n\n"+b.String())
}

func lossRow(sc LossScenario, tr string, r *Report, load string) string {
	st := r.Steps[len(r.Steps)-1]
	during, back := "–", "–"
	if d := r.Drop; d != nil {
		during = fmt.Sprintf("%.0f / %.0f ms", d.During.P50, d.During.P99)
		back = "not within the window"
		if d.RecoveryMs >= 0 {
			back = fmt.Sprintf("%.0f ms", d.RecoveryMs)
		}
	}
	return fmt.Sprintf("| %s (`%s`) | %s | %.1f ms | %.1f ms | %.1f ms | %d | %d | %s | %s | %s |",
		sc.Title, sc.Args, tr, st.Latency.P50, st.Latency.P99, st.Latency.Max, st.Missing, st.Skipped, during, back, load)
}

// loadAvg is /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func machineLine() string {
	m := machine()
	return fmt.Sprintf("%d cores (%s), Linux %s, %s", m.Cores, m.Model, m.Kernel, m.Go)
}

const (
	lossSetStart = "<!-- loss set: written by `go tool task bench-loss`; edits here are overwritten -->"
	lossSetEnd   = "<!-- end of loss set -->"
)
