package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// On-screen latency in Chromium: now minus the capture wall-clock
// (ffmpeg's prft) of the frame the video shows, sampled every 250 ms by
// watch.mjs from the player's stats (MSE transports: the capture time
// the player recorded for the timeline position at currentTime; LL-HLS:
// hls.js's playingDate, from EXT-X-PROGRAM-DATE-TIME, which the edge sets
// to the capture wall-clock of each segment's first object).

// screenRun is one measured playback: a transport at a target latency.
type screenRun struct {
	transport string
	target    string // the page's ?latency= ("" for the default)
	part      string // LL-HLS: the edge's -hls-part
	rep       browserReport
}

// stalls is the player's stall count over the measurement.
func (r screenRun) stalls() int { return r.rep.Last.Stats.Stalls - r.rep.First.Stats.Stalls }

// dropped is the dropped frames over the measurement.
func (r screenRun) dropped() int { return r.rep.Last.Dropped - r.rep.First.Dropped }

// decoded is the frames decoded over the measurement.
func (r screenRun) decoded() int { return r.rep.Last.Frames - r.rep.First.Frames }

// starved tells whether the machine rather than the delivery sets the
// latency: the browser could not show the 30 fps stream in real time
// during the measurement (under 90 % of the frames decoded and not
// dropped), or more processes wanted a core than there are cores (the
// 1-minute load average). Then the suite's bounds are loosened (by 3)
// rather than skipped.
func (r screenRun) starved(t *testing.T) bool {
	wall := float64(r.rep.Last.At-r.rep.First.At) / 1000
	shown := r.decoded() - (r.rep.Last.Dropped - r.rep.First.Dropped)
	load, _ := strconv.ParseFloat(strings.Fields(loadAverage() + " 0")[0], 64)
	if float64(shown) >= 0.9*30*wall && load <= float64(runtime.NumCPU()) {
		return false
	}
	t.Logf("the browser showed %d frames in %.1f s (%.0f fps of 30; %d dropped): too busy a machine for the tight bounds; the quiet figures are in bench/RESULTS.md (load average %s)",
		shown, wall, float64(shown)/wall, r.rep.Last.Dropped-r.rep.First.Dropped, loadAverage())
	return true
}

// screenSource is a demo process and a publisher (quiccast publish:
// ffmpeg testsrc2 at size, 30 fps, a keyframe a second, -write_prft) on a
// broadcast of its own; it returns the broadcast's watch page.
func screenSource(t *testing.T, size string, demoArgs ...string) string {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	bin := buildBinary(t)
	d := startDemoProcess(t, bin, demoArgs...)
	if d.publish == "" {
		t.Fatal("the demo did not print its publish URL")
	}
	pub := exec.Command(bin, "publish", "-url", strings.Replace(d.publish, "{name}", "screen", 1), "-size", size, "-fps", "30", "-gop", "1s")
	var perr bytes.Buffer
	pub.Stderr = &perr
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pub.Process.Kill()
		pub.Wait()
		if t.Failed() {
			t.Logf("publish stderr:\n%s", perr.String())
		}
	})
	return strings.Replace(d.url, "/watch/demo", "/watch/screen", 1)
}

// measureScreen plays page at transport and target for seconds after
// warmup seconds, and keeps the samples (QC_SCREEN_TRACE=1 logs them).
func measureScreen(t *testing.T, page, transport, target string, seconds, warmup int) screenRun {
	t.Helper()
	q := "?transport=" + transport
	if target != "" {
		q += "&latency=" + target
	}
	shot := "screen-" + transport
	if target != "" {
		shot += "-" + target
	}
	w := startWatch(t, page+q, shot, seconds, warmup)
	w.waitState("measuring")
	var trace []string
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for time.Now().Before(end) {
		s := w.sample()
		l := fmt.Sprintf("%.1f: latency %v ms, buffer %v ms, rate-relevant state %s, stalls %d", s.CurrentTime, s.Stats.LatencyMs, s.Stats.BufferMs, s.Stats.State, s.Stats.Stalls)
		if s.HLS != nil {
			l += fmt.Sprintf(", hls.js latency %.3f target %.3f stalls %d", s.HLS.Latency, s.HLS.TargetLatency, s.HLS.Stalls)
		}
		trace = append(trace, l)
		time.Sleep(500 * time.Millisecond) // sampling pace
	}
	rep := w.report()
	if os.Getenv("QC_SCREEN_TRACE") == "1" {
		t.Logf("samples:\n%s", strings.Join(trace, "\n"))
	}
	if got := rep.Last.Stats.Transport; got != transport {
		t.Fatalf("played over %q, want %q (last error %q)", got, transport, rep.Last.Stats.LastError)
	}
	r := screenRun{transport: transport, target: target, rep: rep}
	t.Logf("%s at target %q: on-screen p50 %.0f ms p95 %.0f ms (n %d), %d stalls, %d of %d frames dropped, buffer %v ms",
		transport, target, rep.Latency.P50, rep.Latency.P95, rep.Latency.N, r.stalls(), r.dropped(), r.decoded(), rep.Last.Stats.BufferMs)
	if h := rep.Last.HLS; h != nil {
		t.Logf("hls.js %s: latency %.3f s, target %.3f s, %d stalls; PART-TARGET %.3f s, PART-HOLD-BACK %.3f s", h.Version, h.Latency, h.TargetLatency, h.Stalls, h.PartTarget, h.PartHoldBack)
	}
	return r
}

// TestLLHLSOnScreenLatencyInChromium plays the watch page's LL-HLS choice
// (hls.js in low-latency mode) of a live ffmpeg publisher (a keyframe a
// second, the edge's default parts of 200 ms, PART-HOLD-BACK 0.6 s) and
// asserts it plays within 1.5 s of the capture wall-clock at the median.
// It measures about 0.6 s (bench/RESULTS.md); QC_SCREEN_HLS_MAX_MS
// sets another bound, and a browser that cannot decode the stream in real
// time (starved) gets 3 times the bound.
func TestLLHLSOnScreenLatencyInChromium(t *testing.T) {
	requireBrowser(t)
	page := screenSource(t, "640x360")
	limit := 1500.0
	if v, err := strconv.ParseFloat(os.Getenv("QC_SCREEN_HLS_MAX_MS"), 64); err == nil && v > 0 {
		limit = v
	}
	r := measureScreen(t, page, "hls", "", 8, 3)
	if r.starved(t) {
		limit *= 3
	}
	if r.rep.Latency.N < 10 || r.rep.Latency.P50 <= 0 || r.rep.Latency.P50 > limit {
		t.Fatalf("LL-HLS on-screen latency %+v: want a median within %.0f ms", r.rep.Latency, limit)
	}
	if r.decoded() < 8*10 {
		t.Fatalf("%d frames decoded in 8 s", r.decoded())
	}
}

// TestLowLatencyTargetPlaysWithoutStalls plays at the lowest target the
// player offers (?latency=0.1) over WebTransport and over WebSocket: the
// picture keeps moving, at most one stall in 8 s (none on a quiet
// machine: bench/RESULTS.md; a CPU-starved browser can miss a frame's
// deadline), and within 400 ms of the capture wall-clock at the median
// (about 130 ms quiet). QC_SCREEN_LOW_MAX_MS sets another bound. On a
// starved machine (the browser cannot show 30 fps, or the load average
// is above the cores) it gets 3 times the bound and 4 stalls.
func TestLowLatencyTargetPlaysWithoutStalls(t *testing.T) {
	requireBrowser(t)
	page := screenSource(t, "640x360")
	limit := 400.0
	if v, err := strconv.ParseFloat(os.Getenv("QC_SCREEN_LOW_MAX_MS"), 64); err == nil && v > 0 {
		limit = v
	}
	for _, tr := range []string{"webtransport", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			r := measureScreen(t, page, tr, "0.1", 8, 3)
			limit, stalls := limit, 1
			if r.starved(t) {
				limit, stalls = limit*3, 4
			}
			if r.stalls() > stalls {
				t.Fatalf("%d stalls in 8 s at ?latency=0.1, want at most %d", r.stalls(), stalls)
			}
			if r.rep.Latency.N < 10 || r.rep.Latency.P50 <= 0 || r.rep.Latency.P50 > limit {
				t.Fatalf("on-screen latency %+v at ?latency=0.1: want a median within %.0f ms", r.rep.Latency, limit)
			}
			if r.decoded() < 8*10 {
				t.Fatalf("%d frames decoded in 8 s", r.decoded())
			}
		})
	}
}

// TestBenchScreenLatency is the sweep behind bench/RESULTS.md's on-screen
// table: WebTransport and WebSocket at targets of 0.1, 0.25 and 0.5 s,
// and LL-HLS through hls.js, each QC_SCREEN_SECONDS (default 20) after a
// 3 s warm-up, against one ffmpeg publisher (QC_SCREEN_SIZE, default
// 1280x720). QC_BENCH=1 runs it (go tool task bench-screen);
// QC_SCREEN_WRITE=1 appends the table to bench/RESULTS.md.
func TestBenchScreenLatency(t *testing.T) {
	if os.Getenv("QC_BENCH") != "1" {
		t.Skip("a benchmark: set QC_BENCH=1 (go tool task bench-screen)")
	}
	requireBrowser(t)
	seconds := 20
	if s, err := strconv.Atoi(os.Getenv("QC_SCREEN_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	size := "1280x720"
	if s := os.Getenv("QC_SCREEN_SIZE"); s != "" {
		size = s
	}
	targets := []string{"0.1", "0.25", "0.5"}
	if s := os.Getenv("QC_SCREEN_TARGETS"); s != "" {
		targets = strings.Split(s, ",")
	}
	transports := []string{"webtransport", "websocket", "hls"}
	if s := os.Getenv("QC_SCREEN_TRANSPORTS"); s != "" {
		transports = strings.Split(s, ",")
	}
	load := loadAverage()
	page := screenSource(t, size)
	var runs []screenRun
	for _, tr := range transports {
		if tr == "hls" {
			continue
		}
		for _, target := range targets {
			runs = append(runs, measureScreen(t, page, tr, target, seconds, 3))
		}
	}
	if slices.Contains(transports, "hls") {
		// hls.js keeps to the playlist's PART-HOLD-BACK (3 parts), one
		// edge per part size: joined objects (the default) and one object
		// (a frame) a part.
		ts := []string{""}
		if s, ok := os.LookupEnv("QC_SCREEN_HLS_TARGETS"); ok {
			ts = strings.Split(s, ",")
		}
		parts := []string{"200ms", "1ns"}
		if s := os.Getenv("QC_SCREEN_HLS_PARTS"); s != "" {
			parts = strings.Split(s, ",")
		}
		for _, part := range parts {
			hp := page
			if part != "200ms" {
				hp = screenSource(t, size, "-hls-part", part)
			}
			for _, target := range ts {
				r := measureScreen(t, hp, "hls", target, seconds, 3)
				r.part = part
				runs = append(runs, r)
			}
		}
	}
	if os.Getenv("QC_SCREEN_WRITE") == "1" {
		writeScreenResults(t, seconds, size, load, runs)
	}
}

// writeScreenResults appends the sweep's table to bench/RESULTS.md.
func writeScreenResults(t *testing.T, seconds int, size, load string, runs []screenRun) {
	t.Helper()
	model := "unknown"
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Model name:"); ok {
				model = strings.TrimSpace(v)
			}
		}
	}
	chromium := "chromium"
	if out, err := exec.Command("chromium", "--version").Output(); err == nil {
		chromium = strings.TrimSpace(string(out))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## On-screen latency in Chromium by transport and target (issue 13), %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- command: `QC_BENCH=1 QC_SCREEN_WRITE=1 QC_SCREEN_SECONDS=%d go test -run '^TestBenchScreenLatency$' -count=1 -v .` (`go tool task bench-screen`)\n", seconds)
	fmt.Fprintf(&b, "- machine: 2-core EPYC: %d cores (`nproc`), %s; %s, %s/%s; load average at the start %s (shared with other jobs)\n", runtime.NumCPU(), model, chromium, runtime.GOOS, runtime.GOARCH, load)
	fmt.Fprintf(&b, "- setup: `quiccast demo` and `quiccast publish` (ffmpeg testsrc2 %s 30 fps, x264 veryfast zerolatency, a keyframe a second, one frame per object, `-write_prft wallclock`); headless Chromium plays `/watch/screen?transport=…&latency=…`, 3 s warm-up, then %d s.\n", size, seconds)
	b.WriteString("- on-screen latency: now − capture wall-clock of the frame at `currentTime`, every 250 ms (LL-HLS: hls.js's `playingDate`, from EXT-X-PROGRAM-DATE-TIME = capture time). Stalls: the video's `waiting` events while playing; dropped frames: `getVideoPlaybackQuality()`.\n\n")
	b.WriteString("| transport | target | on-screen p50 | p95 | max | stalls | frames decoded (dropped) |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		target := r.target + " s"
		if r.target == "" {
			target = "default"
			if r.transport == "hls" {
				target = "PART-HOLD-BACK"
			}
		}
		if r.transport == "hls" {
			part := "parts of 200 ms"
			if r.part == "1ns" {
				part = "a part per frame"
			} else if r.part != "200ms" {
				part = "parts of " + r.part
			}
			pt := 0.0
			if r.rep.Last.HLS != nil {
				pt = r.rep.Last.HLS.PartHoldBack
			}
			target = fmt.Sprintf("%s %.3f s (%s)", target, pt, part)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f ms | %.0f ms | %.0f ms | %d | %d (%d) |\n", r.transport, target, r.rep.Latency.P50, r.rep.Latency.P95, r.rep.Latency.Max, r.stalls(), r.decoded(), r.dropped())
	}
	f, err := os.OpenFile(filepath.Join("bench", "RESULTS.md"), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}
