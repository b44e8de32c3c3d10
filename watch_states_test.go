package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Issue 13, item 3: an unknown broadcast showed "connecting" forever, and
// the status line said "waiting" while the video played. The page now says
// what is true: offline (and it starts by itself when the broadcast goes
// live), live while it plays, not found for an invalid name, refused for a
// token the edge does not accept.
func TestWatchPageStates(t *testing.T) {
	requireBrowser(t)
	bin := buildBinary(t)
	d := startDemoProcess(t, bin, "-play-tokens", "see")
	page := func(name, query string) string {
		return strings.Replace(d.url, "/watch/demo", "/watch/"+name, 1) + query
	}
	// The page may reach a state before watch.mjs listens for events, so
	// this asks the page until it is there.
	stateEvent := func(t *testing.T, w *watchRun, state string) {
		t.Helper()
		w.waitState("loaded")
		deadline := time.Now().Add(browserDeadline)
		for {
			s := w.sample()
			if s.Stats.State == state {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %s (status %q, last error %q), want %s", s.Stats.State, s.Status, s.Stats.LastError, state)
			}
			time.Sleep(100 * time.Millisecond) // the poll interval; the deadline above is the only limit
		}
	}
	statusIs := func(t *testing.T, w *watchRun, want string) browserSample {
		t.Helper()
		s := w.sample()
		if !strings.Contains(s.Status, want) {
			t.Fatalf("status line %q (state %s), want %q", s.Status, s.Stats.State, want)
		}
		return s
	}

	t.Run("offline, then live by itself", func(t *testing.T) {
		w := startWatch(t, page("later", "?token=see"), "chromium-state-live", 0, 0)
		stateEvent(t, w, "offline")
		if s := statusIs(t, w, "later: offline — waiting for the broadcast"); s.Badge != "OFFLINE" || s.Title != "later" {
			t.Errorf("offline: badge %q, title %q; want OFFLINE, later", s.Badge, s.Title)
		}
		pub := exec.Command(bin, "publish", "-url", strings.Replace(d.publish, "{name}", "later", 1), "-size", "320x180", "-bitrate", "300k", "-gop", "500ms")
		if err := pub.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { pub.Process.Kill(); pub.Wait() }()
		w.waitState("measuring")
		// While the picture moves the line says live, never waiting.
		from, to := w.waitPlayed(2)
		if strings.Contains(from.Status, "waiting") {
			t.Errorf("status line %q as playback starts", from.Status)
		}
		for _, s := range []browserSample{to, w.sample()} {
			if !strings.Contains(s.Status, "later: live") || strings.Contains(s.Status, "waiting") {
				t.Fatalf("status line %q while playing (state %s, currentTime %.2f)", s.Status, s.Stats.State, s.CurrentTime)
			}
		}
	})
	t.Run("ended", func(t *testing.T) {
		pub := exec.Command(bin, "publish", "-url", strings.Replace(d.publish, "{name}", "gone", 1), "-size", "320x180", "-bitrate", "300k", "-gop", "500ms")
		if err := pub.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { pub.Process.Kill(); pub.Wait() }()
		w := startWatch(t, page("gone", "?token=see"), "chromium-state-ended", 0, 0)
		w.waitState("measuring")
		pub.Process.Signal(os.Interrupt) // the publisher leaves; the broadcast ends after the origin's grace
		pub.Wait()
		stateEvent(t, w, "ended")
		statusIs(t, w, "gone: ended")
	})
	for _, tr := range []string{"hls", "websocket"} {
		t.Run("live over "+tr, func(t *testing.T) {
			w := startWatch(t, page("demo", "?token=see&transport="+tr), "chromium-state-"+tr, 0, 0)
			w.waitState("measuring")
			_, to := w.waitPlayed(2)
			for _, s := range []browserSample{to, w.sample()} {
				if !strings.Contains(s.Status, "demo: live · "+tr) {
					t.Fatalf("status line %q while playing (state %s, currentTime %.2f, readyState %d)", s.Status, s.Stats.State, s.CurrentTime, s.ReadyState)
				}
				// Autoplay stays muted, with the button to hear it; no
				// stats pill unless ?stats=1.
				if s.Title != "demo" || s.Badge != "LIVE" || !s.Muted || !s.UnmuteShown || s.StatsPill {
					t.Errorf("while playing: title %q, badge %q, muted %v, unmute button %v, stats pill %v; want demo, LIVE, true, true, false", s.Title, s.Badge, s.Muted, s.UnmuteShown, s.StatsPill)
				}
			}
		})
	}
	// Issue 13, item 3: no title, no live badge, no unmute button, and a
	// stats pill over the native controls that wrapped over the picture at
	// 640 px. The page is now one for an audience, from a phone to 4K;
	// the screenshots are for a reviewer (artifacts/watch-WxH.png).
	t.Run("layout from 360 px to 4K", func(t *testing.T) {
		w := startWatch(t, page("demo", "?token=see&transport=websocket&stats=1"), "chromium-layout", 0, 0)
		w.waitState("measuring")
		w.waitPlayed(1)
		if s := w.sample(); !s.StatsPill || s.Badge != "LIVE" || s.Title != "demo" || !s.Muted || !s.UnmuteShown {
			t.Errorf("with ?stats=1 while playing: stats pill %v, badge %q, title %q, muted %v, unmute button %v", s.StatsPill, s.Badge, s.Title, s.Muted, s.UnmuteShown)
		}
		for _, sz := range [][2]int{{360, 740}, {640, 480}, {1280, 800}, {3840, 2160}} {
			name := fmt.Sprintf("watch-%dx%d", sz[0], sz[1])
			l := w.screenshot(sz[0], sz[1], name)
			if l.Video == nil || l.Stats == nil || l.Unmute == nil || l.Title == nil || l.Badge == nil {
				t.Fatalf("%s: a part is missing: %+v", name, l)
			}
			if l.ScrollWidth > l.ClientWidth {
				t.Errorf("%s: the page is %.0f px wide in a %.0f px window", name, l.ScrollWidth, l.ClientWidth)
			}
			v := l.Video
			if v.X < 0 || v.X+v.Width > l.Width+0.5 || v.Y < 0 || v.Y+v.Height > l.Height+0.5 {
				t.Errorf("%s: the video %+v is not all in the %.0fx%.0f window", name, *v, l.Width, l.Height)
			}
			if v.Width < 0.6*min(l.Width, (l.Height-160)*16/9) {
				t.Errorf("%s: the video %+v is small for the window", name, *v)
			}
			// The native controls are a bar along the video's bottom: the
			// stats pill stays off the picture altogether, the unmute
			// button off the bar.
			controls := &box{v.X, v.Y + v.Height - 60, v.Width, 60}
			if l.Stats.overlaps(v) {
				t.Errorf("%s: the stats pill %+v covers the video %+v", name, *l.Stats, *v)
			}
			if l.Unmute.overlaps(controls) || !l.Unmute.overlaps(v) {
				t.Errorf("%s: the unmute button %+v is not on the picture above its controls %+v", name, *l.Unmute, *controls)
			}
			for part, b := range map[string]*box{"title": l.Title, "badge": l.Badge, "stats pill": l.Stats} {
				if b.X < 0 || b.X+b.Width > l.Width+0.5 {
					t.Errorf("%s: the %s %+v sticks out of the window", name, part, *b)
				}
			}
		}
		w.click("#unmute")
		deadline := time.Now().Add(browserDeadline)
		for s := w.sample(); s.Muted || s.UnmuteShown; s = w.sample() {
			if time.Now().After(deadline) {
				t.Fatalf("after a click on Unmute: muted %v, button shown %v", s.Muted, s.UnmuteShown)
			}
			time.Sleep(100 * time.Millisecond) // the poll interval; the deadline above is the only limit
		}
		w.waitPlayed(1) // and it still plays, with sound
	})
	t.Run("not found", func(t *testing.T) {
		resp, err := http.Get(page("bad~name", ""))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /watch/bad~name: %s, want 404", resp.Status)
		}
		resp, err = http.Get(page("fine", ""))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /watch/fine: %s, want 200 (it may go live)", resp.Status)
		}
		w := startWatch(t, page("bad~name", "?token=see"), "chromium-state-notfound", 0, 0)
		stateEvent(t, w, "notfound")
		statusIs(t, w, "not found: ")
	})
	t.Run("refused: token", func(t *testing.T) {
		w := startWatch(t, page("demo", "?token=wrong"), "chromium-state-refused", 0, 0)
		stateEvent(t, w, "refused")
		statusIs(t, w, "demo: refused: token")
	})
}
