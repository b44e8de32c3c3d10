package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Scenario is one run of the standard set.
type Scenario struct {
	Name  string
	Title string
	Args  string // the quiccast bench flags that reproduce it
	Cfg   Config
	// Targets are what this project promises for it, shown next to the
	// figures.
	Targets string
}

// Standard is the standard set: the numbers that prove (or not) the design
// on the machine at hand. It runs in a few minutes.
func Standard() []Scenario {
	local := func(c Config) Config {
		c.Local, c.Settle = true, 3*time.Second
		if c.Duration == 0 {
			c.Duration = 20 * time.Second
		}
		return c
	}
	return []Scenario{
		{Name: "fanout-ws", Title: "Fan-out, WebSocket", Args: "-local -viewers 4000 -transport ws -ramp 1000 -duration 20s",
			Cfg:     local(Config{Viewers: 4000, Transport: "ws", Ramp: 1000}),
			Targets: "p99 ≤ 50 ms, no skipped groups, ≤ 0.07 edge CPU-s per delivered Gbit, ≤ 15 KB edge memory per viewer"},
		{Name: "fanout-ws-max", Title: "Fan-out, WebSocket: the largest load held", Args: "-local -transport ws -find-max -step 500 -max-p99 50ms -ramp 1000 -duration 10s",
			Cfg:     local(Config{Transport: "ws", FindMax: true, Step: 500, MaxP99: 50 * time.Millisecond, Ramp: 1000, Duration: 10 * time.Second}),
			Targets: "the most WebSocket viewers with p99 ≤ 50 ms and nothing lost"},
		{Name: "fanout-wt", Title: "Fan-out, WebTransport", Args: "-local -viewers 1000 -transport wt -ramp 250 -duration 20s",
			Cfg:     local(Config{Viewers: 1000, Transport: "wt", Ramp: 250}),
			Targets: "p99 ≤ 50 ms, no skipped groups; report CPU-s per Gbit"},
		{Name: "fanout-wt-max", Title: "Fan-out, WebTransport: the largest load held", Args: "-local -transport wt -find-max -step 100 -max-p99 50ms -ramp 250 -duration 10s",
			Cfg:     local(Config{Transport: "wt", FindMax: true, Step: 100, MaxP99: 50 * time.Millisecond, Ramp: 250, Duration: 10 * time.Second}),
			Targets: "the most WebTransport viewers with p99 ≤ 50 ms and nothing lost"},
		{Name: "join", Title: "Join", Args: "-local -viewers 200 -transport ws -ramp 50 -duration 5s",
			Cfg:     local(Config{Viewers: 200, Transport: "ws", Ramp: 50, Duration: 5 * time.Second}),
			Targets: "median join ≤ one group fetch on loopback; report p99"},
		{Name: "loss-ws", Title: "Loss (40 ms RTT, 2 % loss), WebSocket", Args: "-local -network delay=20ms,loss=2% -viewers 100 -transport ws -duration 20s",
			Cfg:     local(Config{Viewers: 100, Transport: "ws", Network: "delay=20ms,loss=2%"}),
			Targets: "p50/p99 beside WebTransport's"},
		{Name: "loss-wt", Title: "Loss (40 ms RTT, 2 % loss), WebTransport", Args: "-local -network delay=20ms,loss=2% -viewers 100 -transport wt -duration 20s",
			Cfg:     local(Config{Viewers: 100, Transport: "wt", Network: "delay=20ms,loss=2%"}),
			Targets: "p50/p99 beside WebSocket's"},
		{Name: "relay", Title: "Relay, one origin → one edge, 20 broadcasts of 10 Mbit/s", Args: "-local -broadcasts 20 -bitrate 10000000 -viewers 20 -duration 20s",
			Cfg:     local(Config{Viewers: 20, Broadcasts: 20, Bitrate: 10_000_000}),
			Targets: "report Gbit/s and CPU-s per Gbit"},
	}
}

// RunStandard runs scenarios (all when only is empty) and saves each
// report under dir/<name>/; then it rewrites the standard-set section of
// the results file from every scenario's latest report in dir.
func RunStandard(ctx context.Context, bin, dir, results string, only []string, log *slog.Logger) error {
	failed := map[string]error{}
	for _, sc := range Standard() {
		if len(only) > 0 && !contains(only, sc.Name) {
			continue
		}
		log.Info("bench: scenario", "name", sc.Name)
		cfg := sc.Cfg
		cfg.Binary, cfg.Logger = bin, log
		cfg.Profile = filepath.Join(dir, sc.Name) // each node's CPU profile over the measured window
		rep, err := Run(ctx, cfg)
		if err != nil {
			failed[sc.Name] = err
			log.Error("bench: scenario failed", "name", sc.Name, "err", err)
			continue
		}
		if err := rep.Save(filepath.Join(dir, sc.Name)); err != nil {
			return err
		}
	}
	var sections []string
	for _, sc := range Standard() {
		if err, ok := failed[sc.Name]; ok {
			sections = append(sections, fmt.Sprintf("### %s\n\nFailed: %v\n", sc.Title, err))
			continue
		}
		rep, err := LoadReport(filepath.Join(dir, sc.Name, "report.json"))
		if err != nil {
			sections = append(sections, fmt.Sprintf("### %s\n\nNot run yet (`go tool task bench`).\n", sc.Title))
			continue
		}
		sections = append(sections, sc.markdown(rep))
	}
	if results == "" {
		fmt.Println(strings.Join(sections, "\n"))
		return nil
	}
	return replaceSection(results, strings.Join(sections, "\n"))
}

// LoadReport reads a report saved as JSON.
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", path, err)
	}
	if len(r.Steps) == 0 {
		return nil, fmt.Errorf("bench: %s: no measured step", path)
	}
	return &r, nil
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

func (sc Scenario) markdown(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n`quiccast bench %s` — %s, %d cores (%s), %s. Target: %s.\n\n",
		sc.Title, sc.Args, r.Date.Format("2006-01-02 15:04 MST"), r.Machine.Cores, r.Machine.Model, r.Machine.Go, sc.Targets)
	st := r.Steps[len(r.Steps)-1]
	if r.MaxHeld > 0 || sc.Cfg.FindMax {
		fmt.Fprintf(&b, "Largest load held: **%d viewers**. Steps:\n\n| viewers | receiving | p50 | p99 | missing | skipped | edge CPU-s/Gbit |\n|---|---|---|---|---|---|---|\n", r.MaxHeld)
		for _, s := range r.Steps {
			cpu := 0.0
			for _, n := range s.Nodes {
				if strings.HasPrefix(n.Name, "edge") {
					cpu = n.CPUPerGbit
				}
			}
			fmt.Fprintf(&b, "| %d | %d | %.1f ms | %.1f ms | %d | %d | %.3f |\n", s.Viewers, s.Active, s.Latency.P50, s.Latency.P99, s.Missing, s.Skipped, cpu)
		}
		fmt.Fprintf(&b, "\nThe last step, which did not hold:\n\n")
	}
	fmt.Fprintf(&b, "| viewers receiving | latency p50 | p90 | p99 | max | join p50 | join p99 | missing objects | skipped groups | disconnects | delivered |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d of %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %d | %d | %d | %.2f Gbit/s |\n\n",
		st.Active, st.Viewers, st.Latency.P50, st.Latency.P90, st.Latency.P99, st.Latency.Max, r.Join.P50, r.Join.P99,
		st.Missing, st.Skipped, st.Disconnects, st.DeliveredGbps)
	fmt.Fprintf(&b, "| node | CPU | sent | CPU-s per Gbit | resident memory | per viewer |\n|---|---|---|---|---|---|\n")
	for _, n := range st.Nodes {
		per := "–"
		if n.BytesPerViewr != 0 {
			per = fmt.Sprintf("%.1f KB", n.BytesPerViewr/1000)
		}
		fmt.Fprintf(&b, "| %s | %.2f s | %.3f Gbit | %.3f | %.1f MiB | %s |\n", n.Name, n.CPUSeconds, n.SentGbit, n.CPUPerGbit, n.RSSAfter/(1<<20), per)
	}
	fmt.Fprintf(&b, "\nPlot, JSON and each node's CPU profile (`go tool pprof`): `bench/results/%s/`.\n", sc.Name)
	return b.String()
}

const (
	sectionStart = "<!-- standard set: written by `go tool task bench`; edits here are overwritten -->"
	sectionEnd   = "<!-- end of standard set -->"
)

// replaceSection writes body between the standard-set markers of path,
// appending the section if the file has none.
func replaceSection(path, body string) error {
	return replaceBetween(path, sectionStart, sectionEnd, "## Standard set\n\n"+body)
}

// replaceBetween writes body between the markers start and end of path,
// appending them if the file has none.
func replaceBetween(path, start, end, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := start + "\n\n" + body + "\n" + end + "\n"
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + block + s[j+len(end)+1:]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
