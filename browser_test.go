package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// The harness around client-js/test/browser/watch.mjs: headless Chromium
// driven by Playwright. A run streams its progress (states, the player's
// events, samples on request) so that tests wait for what they need
// (playing, connected to the other edge) instead of for fixed times.

type browserSample struct {
	At          int64 // ms since the epoch, when the sample was taken
	CurrentTime float64
	ReadyState  int
	Ranges      [][2]float64 // video.buffered
	Frames      int
	Dropped     int
	Status      string // the watch page's status line
	Title       string // its title (the broadcast's name)
	Badge       string // its badge: LIVE while playing, else the state
	Muted       bool   // video.muted
	UnmuteShown bool   // the Unmute button is on screen
	StatsPill   bool   // the stats pill exists (?stats=1 only)
	Stats       struct {
		Transport     string
		Edge          string
		State         string
		LatencyMs     float64
		G2GP50Ms      float64 `json:"g2gP50Ms"`
		G2GP95Ms      float64 `json:"g2gP95Ms"`
		BufferMs      float64
		SkippedGroups int
		Stalls        int
		Fallbacks     int
		Reconnects    int
		LastError     string
	}
	HLS *struct { // set when the page plays LL-HLS through hls.js
		LowLatencyMode bool
		Version        string
		Latency        float64 // s, hls.js's estimate (its live edge − currentTime)
		TargetLatency  float64 // s, what hls.js aims at
		Stalls         int     // hls.js's stall reports
		PartTarget     float64 // s, the playlist's PART-TARGET
		PartHoldBack   float64 // s, its PART-HOLD-BACK
	}
}

type distribution struct {
	N                  int
	Min, P50, P95, Max float64
}

// playerEvent is one event of the page's player (connected, fallback,
// goaway, close, ended, error, state, catalog).
type playerEvent struct {
	Type   string
	At     int64 // ms since the epoch
	Detail any
}

// detail returns the event's detail field k as a string.
func (e playerEvent) detail(k string) string {
	m, _ := e.Detail.(map[string]any)
	s, _ := m[k].(string)
	return s
}

// box is an element's place in the viewport, in CSS pixels.
type box struct{ X, Y, Width, Height float64 }

// overlaps tells whether a and b share any area.
func (a *box) overlaps(b *box) bool {
	return a != nil && b != nil && a.X < b.X+b.Width && b.X < a.X+a.Width && a.Y < b.Y+b.Height && b.Y < a.Y+a.Height
}

// pageLayout is where the watch page's parts are at one window size
// (nil: not on the page, or hidden), with the screenshot taken there.
type pageLayout struct {
	Path                     string
	Error                    string
	Width, Height            float64 // the viewport
	ScrollWidth, ClientWidth float64 // of the document: wider than the window is horizontal overflow
	Video, Stats, Unmute     *box
	Title, Badge             *box
	Status, Transports       *box
}

// browserReport is what watch.mjs prints.
type browserReport struct {
	First, Last browserSample
	// G2G is capture wall-clock → SourceBuffer append done, per object;
	// Latency is the on-screen latency sampled every 250 ms.
	G2G, Latency distribution
	// Events are all the player's events since the page loaded.
	Events []playerEvent
	Logs   []string
}

func requireBrowser(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "chromium")
	testenv.RequireTool(t, "node")
	testenv.RequireFile(t, "client-js/node_modules/playwright-core/package.json", "run `go tool task deps` (npm ci in client-js)")
}

// browserDeadline bounds every wait on the browser: generous, because a
// busy machine starts Chromium slowly; a wait ends as soon as its state
// is reached.
const browserDeadline = 90 * time.Second

// watchInChromium plays url for seconds (after warmup seconds) and saves a
// screenshot as artifacts/{shot}.png.
func watchInChromium(t *testing.T, url, shot string, seconds, warmup int) browserReport {
	t.Helper()
	return startWatch(t, url, shot, seconds, warmup).report()
}

// watchRun is a running watch.mjs.
type watchRun struct {
	t              *testing.T
	url, shot, png string
	cmd            *exec.Cmd
	cancel         context.CancelFunc
	stdin          io.WriteCloser
	stdout         bytes.Buffer
	exited         chan error

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every progress line
	stderr  []string      // every line, for failure messages
	states  map[string]bool
	events  []playerEvent
	samples []*browserSample
	layouts []*pageLayout
}

// startWatch starts watch.mjs on url. seconds > 0 measures for that long
// after warmup seconds of playing; seconds = 0 measures until report().
func startWatch(t *testing.T, url, shot string, seconds, warmup int) *watchRun {
	t.Helper()
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	png, _ := filepath.Abs(filepath.Join("artifacts", shot+".png"))
	limit := browserDeadline + time.Duration(60+seconds+warmup)*time.Second
	if seconds == 0 {
		limit += 10 * time.Minute // ended by the test
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	w := &watchRun{t: t, url: url, shot: shot, png: png, cancel: cancel, exited: make(chan error, 1),
		changed: make(chan struct{}), states: map[string]bool{}}
	w.cmd = exec.CommandContext(ctx, "node", "test/browser/watch.mjs", url, png, strconv.Itoa(seconds), strconv.Itoa(warmup))
	w.cmd.Dir = "client-js"
	w.cmd.Env = append(os.Environ(), fmt.Sprintf("QC_WATCH_PLAY_TIMEOUT=%d", int(browserDeadline/time.Second)))
	w.cmd.Stdout = &w.stdout
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			w.line(sc.Text())
		}
	}()
	go func() {
		<-read // all of stderr before Wait closes the pipe
		err := w.cmd.Wait()
		w.exited <- err
		w.mu.Lock()
		w.states["exited"] = true
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}()
	t.Cleanup(func() {
		cancel()
		w.stdin.Close()
	})
	return w
}

// line records one line of watch.mjs's stderr.
func (w *watchRun) line(l string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.stderr) < 2000 {
		w.stderr = append(w.stderr, l)
	}
	kind, rest, _ := strings.Cut(l, " ")
	switch kind {
	case "state":
		w.states[rest] = true
	case "event":
		var ev playerEvent
		if json.Unmarshal([]byte(rest), &ev) == nil {
			w.events = append(w.events, ev)
		}
	case "shot":
		var l *pageLayout
		if json.Unmarshal([]byte(rest), &l) == nil {
			w.layouts = append(w.layouts, l)
		}
	case "sample":
		var s *browserSample
		if json.Unmarshal([]byte(rest), &s) == nil {
			w.samples = append(w.samples, s)
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// waitUntil waits until cond (called with w.mu held) holds, failing the
// test with what when the browser exits first or browserDeadline passes.
func (w *watchRun) waitUntil(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.After(browserDeadline)
	for {
		w.mu.Lock()
		ok, exited, changed := cond(), w.states["exited"], w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		if exited {
			w.fatalf("the browser exited while waiting for %s", what)
		}
		select {
		case <-changed:
		case <-deadline:
			w.fatalf("no %s after %s", what, browserDeadline)
		}
	}
}

// waitState waits for watch.mjs to reach a state: "loaded", "playing" or
// "measuring".
func (w *watchRun) waitState(s string) {
	w.t.Helper()
	w.waitUntil("state "+s, func() bool { return w.states[s] })
}

// waitEvent waits for a player event that pred accepts and returns it.
func (w *watchRun) waitEvent(what string, pred func(playerEvent) bool) playerEvent {
	w.t.Helper()
	var found playerEvent
	w.waitUntil(what, func() bool {
		for _, ev := range w.events {
			if pred(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// sample asks the page for one sample.
func (w *watchRun) sample() browserSample {
	w.t.Helper()
	w.mu.Lock()
	n := len(w.samples)
	w.mu.Unlock()
	if _, err := io.WriteString(w.stdin, "sample\n"); err != nil {
		w.fatalf("asking for a sample: %v", err)
	}
	var s *browserSample
	w.waitUntil("a sample", func() bool {
		if len(w.samples) > n {
			s = w.samples[n]
		}
		return len(w.samples) > n
	})
	if s == nil {
		w.fatalf("the page has no sample")
	}
	return *s
}

// screenshot sets the window to width×height, saves
// artifacts/{name}.png and returns the page's layout at that size.
func (w *watchRun) screenshot(width, height int, name string) pageLayout {
	w.t.Helper()
	png, _ := filepath.Abs(filepath.Join("artifacts", name+".png"))
	w.mu.Lock()
	n := len(w.layouts)
	w.mu.Unlock()
	if _, err := fmt.Fprintf(w.stdin, "shot %d %d %s\n", width, height, png); err != nil {
		w.fatalf("asking for a screenshot: %v", err)
	}
	var l *pageLayout
	w.waitUntil("screenshot "+name, func() bool {
		if len(w.layouts) > n {
			l = w.layouts[n]
		}
		return l != nil
	})
	if l.Error != "" {
		w.fatalf("screenshot %s: %s", name, l.Error)
	}
	return *l
}

// click clicks the page's element #id with a real input event.
func (w *watchRun) click(id string) {
	w.t.Helper()
	if _, err := fmt.Fprintf(w.stdin, "click %s\n", id); err != nil {
		w.fatalf("asking for a click: %v", err)
	}
	var done string
	w.waitUntil("a click on "+id, func() bool {
		for _, l := range w.stderr {
			if strings.HasPrefix(l, "clicked "+id) {
				done = l
				return true
			}
		}
		return false
	})
	if done != "clicked "+id {
		w.fatalf("%s", done)
	}
}

// waitPlayed waits until the video has played secs more seconds from now,
// with frames decoded, and returns the first and last samples.
func (w *watchRun) waitPlayed(secs float64) (from, to browserSample) {
	w.t.Helper()
	from = w.sample()
	deadline := time.Now().Add(browserDeadline)
	for {
		to = w.sample()
		if to.CurrentTime-from.CurrentTime >= secs && to.Frames-from.Frames >= int(secs*10) {
			return from, to
		}
		if time.Now().After(deadline) {
			w.fatalf("played %.1f s (%d frames) of %.1f s in %s: from %+v to %+v", to.CurrentTime-from.CurrentTime, to.Frames-from.Frames, secs, browserDeadline, from, to)
		}
		time.Sleep(100 * time.Millisecond) // sampling pace, not a wait for a state
	}
}

// report ends a measurement (for seconds = 0; otherwise waits for its
// end) and returns the report.
func (w *watchRun) report() browserReport {
	w.t.Helper()
	io.WriteString(w.stdin, "stop\n")
	err := <-w.exited
	w.cancel()
	if err != nil {
		w.fatalf("browser check of %s failed: %v\n%s", w.url, err, w.stdout.String())
	}
	var rep browserReport
	if err := json.Unmarshal(w.stdout.Bytes(), &rep); err != nil {
		w.fatalf("report %q: %v", w.stdout.String(), err)
	}
	w.t.Logf("%s: %s played %.1f s (%d frames, %d dropped) in %.1f s, latency p50 %.0f ms p95 %.0f ms, glass-to-glass (capture → SourceBuffer) p50 %.0f ms p95 %.0f ms over %d objects, %d skipped groups, %d stalls; screenshot %s",
		w.shot, rep.Last.Stats.Transport, rep.Last.CurrentTime-rep.First.CurrentTime, rep.Last.Frames-rep.First.Frames, rep.Last.Dropped,
		float64(rep.Last.At-rep.First.At)/1000, rep.Latency.P50, rep.Latency.P95, rep.G2G.P50, rep.G2G.P95, rep.G2G.N, rep.Last.Stats.SkippedGroups, rep.Last.Stats.Stalls, w.png)
	return rep
}

func (w *watchRun) fatalf(format string, args ...any) {
	w.t.Helper()
	w.mu.Lock()
	lines := strings.Join(w.stderr[max(0, len(w.stderr)-60):], "\n")
	w.mu.Unlock()
	w.t.Fatalf("%s: %s\nwatch.mjs stderr (last lines):\n%s", w.shot, fmt.Sprintf(format, args...), lines)
}
