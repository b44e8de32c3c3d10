package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/testenv"
)

// The player in real Chromium (headless, driven by Playwright through
// client-js/test/browser/watch.mjs) against the demo binary: over
// WebTransport, over WebSocket when forced, and falling back to WebSocket
// when UDP does not get through. Screenshots go to artifacts/.

// checkPlayback asserts playback advanced over transport through the
// measurement (at least half its wall time, and 10 frames a second) with a
// sub-second latency.
func checkPlayback(t *testing.T, rep browserReport, transport string) {
	t.Helper()
	checkPlaybackWithin(t, rep, transport, time.Second)
}

// checkPlaybackWithin is checkPlayback with another bound on the median
// on-screen latency.
func checkPlaybackWithin(t *testing.T, rep browserReport, transport string, latency time.Duration) {
	t.Helper()
	if got := rep.Last.Stats.Transport; got != transport {
		t.Fatalf("played over %q, want %q (last error %q; logs %q)", got, transport, rep.Last.Stats.LastError, rep.Logs)
	}
	wall := float64(rep.Last.At-rep.First.At) / 1000
	if wall <= 0 {
		t.Fatalf("no measurement: first sample at %d, last at %d", rep.First.At, rep.Last.At)
	}
	if adv := rep.Last.CurrentTime - rep.First.CurrentTime; adv < wall*0.5 {
		t.Fatalf("currentTime advanced %.2f s in %.1f s", adv, wall)
	}
	if dec := rep.Last.Frames - rep.First.Frames; float64(dec) < wall*10 {
		t.Fatalf("%d frames decoded in %.1f s", dec, wall)
	}
	if ms := float64(latency.Milliseconds()); rep.Latency.N == 0 || rep.Latency.P50 <= 0 || rep.Latency.P50 >= ms {
		t.Fatalf("latency %+v, want a median under %.0f ms", rep.Latency, ms)
	}
	if rep.G2G.N == 0 || rep.G2G.P50 >= 1000 {
		t.Fatalf("glass-to-glass %+v, want objects appended under 1000 ms after capture", rep.G2G)
	}
	for _, l := range rep.Logs {
		if strings.HasPrefix(l, "pageerror:") || strings.Contains(l, "Uncaught") {
			t.Fatalf("the page logged %q", l)
		}
	}
}

// TestDemoPlaysInChromium loads the demo's page as printed, in headless
// Chromium: it must play over WebTransport (the default), frames decoded,
// currentTime advancing, latency under a second.
func TestDemoPlaysInChromium(t *testing.T) {
	requireBrowser(t)
	d := startDemoProcess(t, buildBinary(t))
	rep := watchInChromium(t, d.url, "chromium-webtransport", 4, 0)
	checkPlayback(t, rep, "webtransport")
	if rep.Last.Stats.Fallbacks != 0 {
		t.Fatalf("fell back %d times", rep.Last.Stats.Fallbacks)
	}
}

func TestChromiumPlaysOverForcedWebSocket(t *testing.T) {
	requireBrowser(t)
	d := startDemoProcess(t, buildBinary(t))
	rep := watchInChromium(t, d.url+"?transport=websocket", "chromium-websocket", 4, 0)
	checkPlayback(t, rep, "websocket")
}

// TestChromiumFallsBackToWebSocketWhenUDPIsBlocked points the player's
// WebTransport at a UDP port where nothing listens (the browser learns at
// once), and at one that swallows every datagram (it must give up after
// its connect timeout): both times it plays over WebSocket.
func TestChromiumFallsBackToWebSocketWhenUDPIsBlocked(t *testing.T) {
	requireBrowser(t)
	d := startDemoProcess(t, buildBinary(t))

	closed, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.LocalAddr().(*net.UDPAddr).Port
	closed.Close()

	hole, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	holePort := hole.LocalAddr().(*net.UDPAddr).Port

	for _, ca := range []struct {
		name, shot string
		port       int
		reason     string
	}{
		{"closed port", "chromium-fallback-closed-port", closedPort, ""},
		{"datagrams swallowed", "chromium-fallback-no-answer", holePort, "not connected within 1500 ms"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			rep := watchInChromium(t, fmt.Sprintf("%s?wtport=%d", d.url, ca.port), ca.shot, 3, 0)
			checkPlayback(t, rep, "websocket")
			if rep.Last.Stats.Fallbacks != 1 || !strings.Contains(rep.Last.Stats.LastError, "webtransport") || !strings.Contains(rep.Last.Stats.LastError, ca.reason) {
				t.Fatalf("fallbacks %d, last error %q: want one fallback from WebTransport (%q)", rep.Last.Stats.Fallbacks, rep.Last.Stats.LastError, ca.reason)
			}
		})
	}
}

// TestGlassToGlassInChromium measures, in Chromium, the time from the
// capture wall-clock that ffmpeg writes (-write_prft wallclock) to the
// object's append to the SourceBuffer, and the on-screen latency, over
// WebTransport and over WebSocket, on loopback. QC_G2G_SECONDS sets the
// measurement (default 6 s); QC_G2G_WRITE=1 adds the figures to
// bench/RESULTS.md.
func TestGlassToGlassInChromium(t *testing.T) {
	requireBrowser(t)
	testenv.RequireTool(t, "ffmpeg")
	seconds := 6
	if s, err := strconv.Atoi(os.Getenv("QC_G2G_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	load, _ := os.ReadFile("/proc/loadavg")
	bin := buildBinary(t)
	d := startDemoProcess(t, bin)
	if d.publish == "" {
		t.Fatal("the demo did not print its publish URL")
	}
	pub := exec.Command(bin, "publish", "-url", strings.Replace(d.publish, "{name}", "g2g", 1), "-size", "1280x720", "-fps", "30", "-gop", "1s")
	var perr bytes.Buffer
	pub.Stderr = &perr
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		pub.Process.Kill()
		pub.Wait()
		if t.Failed() {
			t.Logf("publish stderr:\n%s", perr.String())
		}
	}()
	page := strings.Replace(d.url, "/watch/demo", "/watch/g2g", 1)
	results := map[string]browserReport{}
	for _, tr := range []string{"webtransport", "websocket"} {
		rep := watchInChromium(t, page+"?transport="+tr, "chromium-g2g-"+tr, seconds, 3)
		checkPlayback(t, rep, tr)
		results[tr] = rep
	}
	if os.Getenv("QC_G2G_WRITE") == "1" {
		writeG2GResults(t, seconds, strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "), results)
	}
}

// writeG2GResults adds a section to bench/RESULTS.md.
func writeG2GResults(t *testing.T, seconds int, load string, results map[string]browserReport) {
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
	fmt.Fprintf(&b, "\n## Glass-to-glass in Chromium on loopback, %s\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "- command: `QC_G2G_WRITE=1 QC_G2G_SECONDS=%d go test -run TestGlassToGlassInChromium -count=1 -v .` (or `go tool task bench-g2g`)\n", seconds)
	fmt.Fprintf(&b, "- machine: %d cores (`nproc`), %s (`lscpu | grep 'Model name'`); %s, %s/%s; load average at the start %s (the machine is shared: other jobs add noise)\n", runtime.NumCPU(), model, chromium, runtime.GOOS, runtime.GOARCH, load)
	fmt.Fprintf(&b, "- setup: `quiccast demo` (origin + edge in one process) and `quiccast publish` (ffmpeg testsrc2 1280x720 30 fps, x264 veryfast zerolatency, 2 Mbit/s, 1 s GOP, one frame per object, `-write_prft wallclock`); headless Chromium plays `/watch/g2g?transport=…` (target latency 0.5 s); 3 s warm-up, then %d s sampled.\n", seconds)
	b.WriteString("- glass-to-glass: capture wall-clock (ffmpeg's prft) → the object's `appendBuffer` done (`updateend`), every object; on-screen latency: capture wall-clock of the frame at `currentTime` → now, every 250 ms.\n\n")
	b.WriteString("| transport | objects | g2g p50 | g2g p95 | g2g max | on-screen p50 | on-screen p95 | frames decoded (dropped) | skipped groups | stalls |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, tr := range []string{"webtransport", "websocket"} {
		r := results[tr]
		fmt.Fprintf(&b, "| %s | %d | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %d (%d) | %d | %d |\n", tr, r.G2G.N, r.G2G.P50, r.G2G.P95, r.G2G.Max,
			r.Latency.P50, r.Latency.P95, r.Last.Frames-r.First.Frames, r.Last.Dropped-r.First.Dropped, r.Last.Stats.SkippedGroups, r.Last.Stats.Stalls)
	}
	f, err := os.OpenFile(filepath.Join("bench", "RESULTS.md"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Size() == 0 {
		f.WriteString("# Benchmark results\n\nEach section: what was measured, the command, the machine and the date.\n")
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}

// TestChromiumFailsOverToAnotherEdgeOnGoAway plays from the first of two
// edges that pull one origin's broadcast; the first edge is stopped
// (SIGTERM: it sends GOAWAY, then closes): the player moves to the second
// edge at once, over WebTransport, and keeps playing.
func TestChromiumFailsOverToAnotherEdgeOnGoAway(t *testing.T) {
	requireBrowser(t)
	testenv.RequireTool(t, "ffmpeg")
	bin := buildBinary(t)
	origin := startProc(t, bin, "origin", "origin listening", "origin", "-listen", "127.0.0.1:0", "-relay-listen", "127.0.0.1:0", "-rtmp-listen", "", "-node-id", "origin")
	edge := func(id string) *proc {
		return startProc(t, bin, id, "edge listening", "edge", "-listen", "127.0.0.1:0", "-node-id", id, "-parent", origin.field("relay"))
	}
	e1, e2 := edge("edge-1"), edge("edge-2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam", origin.field("addr")), &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}, time.Second)
	defer func() { cancel(); <-pub }()
	u1, u2 := "http://"+e1.field("addr")+"/", "http://"+e2.field("addr")+"/"
	testenv.WaitFor(t, 10*time.Second, "the broadcast on the origin", func() bool { return origin.count("msg", "publisher ready") > 0 })

	w := startWatch(t, u1+"watch/cam?edges="+u1+","+u2, "chromium-failover", 0, 1)
	w.waitState("measuring")
	if _, on1 := w.waitPlayed(2); on1.Stats.Edge != u1 {
		t.Fatalf("playing from %q, want edge-1 (%s)", on1.Stats.Edge, u1)
	}
	stopped := time.Now()
	e1.cmd.Process.Signal(syscall.SIGTERM)
	goaway := w.waitEvent("a goaway", func(ev playerEvent) bool { return ev.Type == "goaway" })
	moved := w.waitEvent("connected to edge-2", func(ev playerEvent) bool { return ev.Type == "connected" && ev.detail("edge") == u2 })
	w.waitPlayed(3) // on edge-2
	rep := w.report()
	checkPlayback(t, rep, "webtransport")
	if rep.Last.Stats.Edge != u2 || rep.Last.Stats.Reconnects < 1 || rep.Last.Stats.State != "playing" {
		t.Fatalf("after edge-1 stopped: %+v", rep.Last.Stats)
	}
	t.Logf("GOAWAY %d ms after SIGTERM; connected to edge-2 %d ms after the GOAWAY", goaway.At-stopped.UnixMilli(), moved.At-goaway.At)
	if moved.At < goaway.At || moved.At-goaway.At > 2000 {
		t.Fatalf("connected to edge-2 at %d, %d ms after the GOAWAY at %d: want within 2 s after it", moved.At, moved.At-goaway.At, goaway.At)
	}
}

// TestChromiumPlaysOnWhenThePublisherRestarts stops the publisher and
// starts a new one within the origin's grace period: the broadcast goes on
// in a new epoch whose decode times start again from zero, and the player,
// over either transport, keeps playing on one timeline.
func TestChromiumPlaysOnWhenThePublisherRestarts(t *testing.T) {
	requireBrowser(t)
	testenv.RequireTool(t, "ffmpeg")
	bin := buildBinary(t)
	d := startDemoProcess(t, bin)
	for _, tr := range []string{"webtransport", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			name := "restart-" + tr
			publish := func() *exec.Cmd {
				cmd := exec.Command(bin, "publish", "-url", strings.Replace(d.publish, "{name}", name, 1), "-size", "320x180", "-bitrate", "300k", "-gop", "500ms")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				return cmd
			}
			first := publish()
			defer func() { first.Process.Kill(); first.Wait() }()
			page := strings.Replace(d.url, "/watch/demo", "/watch/"+name, 1) + "?transport=" + tr
			w := startWatch(t, page, "chromium-restart-"+tr, 0, 1)
			w.waitState("measuring")
			w.waitPlayed(2)
			first.Process.Kill()
			first.Wait()
			killed := time.Now()
			time.Sleep(time.Second) // the scenario: a publisher gone for a second, within the origin's grace period
			second := publish()
			defer func() { second.Process.Kill(); second.Wait() }()
			// The new epoch reaches the player as a new catalog.
			w.waitEvent("the new epoch's catalog", func(ev playerEvent) bool { return ev.Type == "catalog" && ev.At > killed.UnixMilli() })
			// It plays on: the clock and the picture (the clock can run on
			// audio alone; the clip is 30 frames a second).
			from, to := w.waitPlayed(4)
			if dec := to.Frames - from.Frames; dec < 80 {
				t.Fatalf("%d video frames decoded in %.1f s of playback after the restart, want about 120", dec, to.CurrentTime-from.CurrentTime)
			}
			rep := w.report()
			if rep.Last.Stats.Transport != tr || rep.Last.Stats.State != "playing" {
				t.Fatalf("after the restart: %+v at %.3f in %v (readyState %d)", rep.Last.Stats, rep.Last.CurrentTime, rep.Last.Ranges, rep.Last.ReadyState)
			}
			if rep.Last.Stats.LatencyMs <= 0 || rep.Last.Stats.LatencyMs > 1500 {
				t.Fatalf("latency %v ms after the restart", rep.Last.Stats.LatencyMs)
			}
		})
	}
}
