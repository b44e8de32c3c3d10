package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/quiccast/quiccast/bench/naivewt"
)

// Report is the result of a run: machine, settings, per-step figures, a
// per-second series.
type Report struct {
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Steps    []Step    `json:"steps"`
	// MaxHeld is the largest viewer count that met the bound (-find-max).
	MaxHeld int      `json:"max_viewers_held,omitempty"`
	Join    Summary  `json:"join"`
	Series  []Second `json:"series"`
	Notes   []string `json:"notes,omitempty"`
	// Drop is what a bandwidth drop (-drop) did.
	Drop *DropResult `json:"drop,omitempty"`
	// Tiers is the latency over the measured window per tier
	// (Config.Tiers).
	Tiers map[string]Summary `json:"tiers,omitempty"`
}

// Machine says where the run happened.
type Machine struct {
	Cores  int    `json:"cores"`
	Model  string `json:"model"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Settings are the run's parameters.
type Settings struct {
	Transport   string  `json:"transport"`
	Viewers     int     `json:"viewers"`
	BitrateBps  int64   `json:"bitrate_bps"`
	ObjectRate  int     `json:"object_rate"`
	GroupLength string  `json:"group_length"`
	Duration    string  `json:"duration"`
	Ramp        float64 `json:"ramp_per_second"`
	Edges       int     `json:"edges"`
	Publisher   string  `json:"publisher"`
	Broadcasts  int     `json:"broadcasts"`
	Network     string  `json:"network,omitempty"`
	Server      string  `json:"server,omitempty"` // with -local: edge or naive
}

// Step is one measured window at a constant number of viewers.
type Step struct {
	Viewers       int        `json:"viewers"`
	Active        int64      `json:"active"`
	Latency       Summary    `json:"latency"`
	Objects       int64      `json:"objects"`
	Missing       int64      `json:"missing_objects"`
	Skipped       int64      `json:"skipped_groups"`
	Disconnects   int64      `json:"disconnects"`
	Failed        int64      `json:"failed_viewers"`
	Refused       int64      `json:"refused_viewers"`
	DeliveredGbps float64    `json:"delivered_gbit_per_s"`
	Nodes         []NodeCost `json:"nodes"`
}

// Held says whether a step met the p99 bound with nothing lost.
func (s *Step) Held(maxP99 time.Duration) bool {
	return s.Latency.P99 <= float64(maxP99)/1e6 && s.Missing == 0 && s.Skipped == 0 && s.Disconnects == 0 && s.Failed == 0 && s.Refused == 0 && s.Active == int64(s.Viewers)
}

// Second is one point of the per-second series.
type Second struct {
	T       float64 `json:"t"`
	Viewers int64   `json:"viewers"`
	Objects int64   `json:"objects"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

func newReport(cfg Config) *Report {
	edges := len(cfg.Edges)
	if cfg.Local {
		edges = cfg.LocalEdges
	}
	return &Report{
		Date:    time.Now().UTC(),
		Machine: machine(),
		Settings: Settings{Transport: cfg.Transport, Viewers: cfg.Viewers, BitrateBps: cfg.Bitrate, ObjectRate: cfg.ObjectRate,
			GroupLength: cfg.GroupLength.String(), Duration: cfg.Duration.String(), Ramp: cfg.Ramp, Edges: edges, Publisher: cfg.Publisher, Broadcasts: cfg.Broadcasts, Server: cfg.Server},
	}
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// follow records the per-second series until ctx is done; the returned
// function stops it and returns the series.
func (r *Report) follow(ctx context.Context, st *Stats) func() []Second {
	var mu sync.Mutex
	var out []Second
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		last := st.Objects.Load()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case now := <-t.C:
				s := st.Second.Snapshot(true).Summary()
				o := st.Objects.Load()
				mu.Lock()
				out = append(out, Second{T: math.Round(now.Sub(start).Seconds()*10) / 10, Viewers: st.Active.Load(), Objects: o - last, P50: s.P50, P99: s.P99, Max: s.Max})
				mu.Unlock()
				last = o
			}
		}
	}()
	return func() []Second {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// addStep records one measured window.
func (r *Report) addStep(st *Stats, at [5]int64, viewers int, before, steady, end map[string]Metrics, cfg *Config) *Step {
	now := st.counts()
	s := Step{
		Viewers: viewers, Active: st.Active.Load(), Latency: st.Latency.Snapshot(false).Summary(),
		Objects: now[0] - at[0], Missing: now[1] - at[1], Skipped: now[2] - at[2], Disconnects: now[3] - at[3],
		Failed:        st.Failed.Load(),
		Refused:       st.Refused.Load(),
		DeliveredGbps: float64(now[4]-at[4]) * 8 / 1e9 / cfg.Duration.Seconds(),
	}
	keys := make([]string, 0, len(end))
	for k := range end {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name, url, _ := strings.Cut(k, "|")
		// An edge's viewers: WebSocket and LL-HLS bytes, and
		// WebTransport's, which have their own counter; or the naive
		// server's (-server naive).
		sent := []string{"quiccast_edge_sent_bytes_total", "quiccast_edge_webtransport_sent_bytes_total", naivewt.SentMetric}
		if strings.HasPrefix(name, "origin") {
			sent = []string{"quiccast_origin_relay_sent_bytes_total"}
		}
		c := cost(name, url, steady[k], end[k], sent, 0)
		// Memory per viewer: resident memory now against before any
		// viewer joined, over the viewers this node serves.
		if b, ok := before[k]; ok && !strings.HasPrefix(name, "origin") {
			perEdge := float64(viewers) / float64(max(1, len(cfg.Edges)))
			c.RSSBefore = b["process_resident_memory_bytes"]
			c.BytesPerViewr = (c.RSSAfter - c.RSSBefore) / perEdge
			c.GoroutinesPerViewer = (end[k]["go_goroutines"] - b["go_goroutines"]) / perEdge
		}
		s.Nodes = append(s.Nodes, c)
	}
	r.Steps = append(r.Steps, s)
	return &r.Steps[len(r.Steps)-1]
}

func (r *Report) finish(series func() []Second, st *Stats) {
	r.Series = series()
	r.Join = st.Join.Snapshot(false).Summary()
}

// WriteText writes a human summary.
func (r *Report) WriteText(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "quiccast bench, %s\n", r.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d cores, %s, Linux %s, %s\n", r.Machine.Cores, r.Machine.Model, r.Machine.Kernel, r.Machine.Go)
	fmt.Fprintf(w, "%d broadcast(s) of %.1f Mbit/s, %d objects/s, groups of %s (%s publisher); %s viewers on %d edge(s), ramp %.0f/s, measured %s",
		max(1, s.Broadcasts), float64(s.BitrateBps)/1e6, s.ObjectRate, s.GroupLength, s.Publisher, s.Transport, s.Edges, s.Ramp, s.Duration)
	if s.Network != "" {
		fmt.Fprintf(w, ", network %s", s.Network)
	}
	fmt.Fprintf(w, "\njoin (connect → first object): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d viewers)\n",
		r.Join.P50, r.Join.P90, r.Join.P99, r.Join.Max, r.Join.Count)
	for _, st := range r.Steps {
		l := st.Latency
		fmt.Fprintf(w, "%d viewers (%d receiving): latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms over %d objects; %.2f Gbit/s delivered\n",
			st.Viewers, st.Active, l.P50, l.P90, l.P99, l.Max, l.Count, st.DeliveredGbps)
		fmt.Fprintf(w, "  missing objects %d, skipped groups %d, disconnects %d, failed viewers %d, refused (edge full) %d\n", st.Missing, st.Skipped, st.Disconnects, st.Failed, st.Refused)
		for _, n := range st.Nodes {
			fmt.Fprintf(w, "  %-8s CPU %.2f s, sent %.3f Gbit, %.3f CPU-s/Gbit, RSS %.1f MiB", n.Name, n.CPUSeconds, n.SentGbit, n.CPUPerGbit, n.RSSAfter/(1<<20))
			if n.BytesPerViewr != 0 {
				fmt.Fprintf(w, ", %.1f KB/viewer, %.1f goroutines/viewer", n.BytesPerViewr/1000, n.GoroutinesPerViewer)
			}
			fmt.Fprintln(w)
		}
	}
	if d := r.Drop; d != nil {
		fmt.Fprintf(w, "bandwidth drop to %s at %s for %s: latency meanwhile p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d objects; ",
			d.Link, d.At, d.For, d.During.P50, d.During.P99, d.During.Max, d.During.Count)
		if d.RecoveryMs >= 0 {
			fmt.Fprintf(w, "every viewer back within %.0f ms (for a group) %.0f ms after the link recovered\n", d.TargetMs, d.RecoveryMs)
		} else {
			fmt.Fprintf(w, "not back within %.0f ms by the end of the window\n", d.TargetMs)
		}
	}
	if r.MaxHeld > 0 {
		fmt.Fprintf(w, "largest load held: %d viewers\n", r.MaxHeld)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteHTML writes a self-contained page with an SVG plot of latency
// percentiles and viewers over time.
func (r *Report) WriteHTML(w io.Writer) {
	const W, H, pad = 900, 360, 50
	maxT, maxMs, maxV := 1.0, 1.0, 1.0
	for _, s := range r.Series {
		maxT = max(maxT, s.T)
		maxMs = max(maxMs, s.P99)
		maxV = max(maxV, float64(s.Viewers))
	}
	x := func(t float64) float64 { return pad + t/maxT*(W-2*pad) }
	yMs := func(v float64) float64 { return H - pad - v/maxMs*(H-2*pad) }
	yV := func(v float64) float64 { return H - pad - v/maxV*(H-2*pad) }
	line := func(f func(Second) (float64, float64)) string {
		var b strings.Builder
		for i, s := range r.Series {
			px, py := f(s)
			if i == 0 {
				fmt.Fprintf(&b, "M%.1f,%.1f", px, py)
			} else {
				fmt.Fprintf(&b, " L%.1f,%.1f", px, py)
			}
		}
		return b.String()
	}
	var sum strings.Builder
	r.WriteText(&sum)
	fmt.Fprintf(w, `<!doctype html><meta charset="utf-8"><title>quiccast bench</title>
<style>body{font:14px system-ui;margin:20px}pre{background:#f4f4f4;padding:10px;white-space:pre-wrap}</style>
<h1>quiccast bench</h1><pre>%s</pre>
<svg width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" font-size="12">
<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>
<path d="%s" fill="none" stroke="#1f77b4" stroke-width="2"/>
<path d="%s" fill="none" stroke="#d62728" stroke-width="2"/>
<path d="%s" fill="none" stroke="#2ca02c" stroke-width="2" stroke-dasharray="4 3"/>
<text x="%d" y="%d">0</text><text x="%d" y="%d">%.0f s</text>
<text x="5" y="%d">%.0f ms</text><text x="%d" y="%d" text-anchor="end">%.0f viewers</text>
<text x="%d" y="20" fill="#1f77b4">p50 latency</text><text x="%d" y="20" fill="#d62728">p99 latency</text><text x="%d" y="20" fill="#2ca02c">viewers receiving</text>
</svg>`,
		html.EscapeString(sum.String()), W, H, W, H, pad, pad, W-2*pad, H-2*pad,
		line(func(s Second) (float64, float64) { return x(s.T), yMs(s.P50) }),
		line(func(s Second) (float64, float64) { return x(s.T), yMs(s.P99) }),
		line(func(s Second) (float64, float64) { return x(s.T), yV(float64(s.Viewers)) }),
		pad, H-pad+15, W-pad-30, H-pad+15, maxT, pad+5, maxMs, W-5, pad+5, maxV, pad, pad+120, pad+240)
}

// Save writes report.txt, report.json and report.html into dir.
func (r *Report) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	write := func(name string, f func(io.Writer) error) {
		fh, err := os.Create(dir + "/" + name)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if err := f(fh); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, fh.Close())
	}
	write("report.txt", func(w io.Writer) error { r.WriteText(w); return nil })
	write("report.json", r.WriteJSON)
	write("report.html", func(w io.Writer) error { r.WriteHTML(w); return nil })
	return errors.Join(errs...)
}
