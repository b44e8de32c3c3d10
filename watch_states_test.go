package main

import (
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
		statusIs(t, w, "later: offline — waiting for the broadcast")
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
			}
		})
	}
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
