package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// Issue 13, item 2: with its origin killed, `quiccast publish` kept
// retrying the dead origin and viewers froze for 26 s. Given two origin
// URLs, it moves to the other one at once, and viewers through an edge
// resume within 2 s with group numbers rising.
func TestPublishCommandFailsOverToTheNextOrigin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	oa, ob := node("origin", "origin-a", "-rtmp-listen", "127.0.0.1:0"), node("origin", "origin-b", "-rtmp-listen", "127.0.0.1:0")
	e1 := node("edge", "edge-1")
	// The command itself, with its default backoffs (0.5 s up to 10 s),
	// one origin per -url.
	pub := startProc(t, bin, "publisher", "publishing", "publish",
		"-url", fmt.Sprintf("ws://%s/publish/cam/f", oa.field("addr")),
		"-url", fmt.Sprintf("ws://%s/publish/cam/f", ob.field("addr")),
		"-size", "320x180", "-bitrate", "300k", "-gop", "500ms")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// Viewers join once the broadcast is in the registry: a viewer that
	// asks before is told 4004 (no such broadcast) and stops.
	testenv.WaitFor(t, time.Minute, "the broadcast to be ready on origin A", func() bool {
		return oa.count("msg", "publisher ready") > 0
	})
	var ws []*watcher
	for range 3 {
		ws = append(ws, startWatcher(ctx, &wg, "cam/f", fmt.Sprintf("ws://%s/ws/cam/f", e1.field("addr"))))
	}
	testenv.WaitFor(t, time.Minute, "3 groups at every viewer", func() bool {
		for _, w := range ws {
			if w.keyframes() < 3 {
				return false
			}
		}
		return true
	})
	urlA, urlB := fmt.Sprintf("ws://%s/publish/cam/f", oa.field("addr")), fmt.Sprintf("ws://%s/publish/cam/f", ob.field("addr"))
	if n := pub.count("msg", "publishing", "url", urlA); n != 1 {
		t.Fatalf("the publisher started %d times on origin A (the first -url), want 1", n)
	}
	lastGroup := map[*watcher]uint64{}
	for _, w := range ws {
		hs, _ := w.objectsSince(time.Time{})
		lastGroup[w] = hs[len(hs)-1].Group
	}
	killed := time.Now()
	oa.cmd.Process.Signal(syscall.SIGKILL)

	// Media counts as resumed from when the publisher says it publishes
	// to origin B, so nothing origin A sent before it died is taken for it.
	onB := func() time.Time {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		for _, l := range pub.logs {
			if l["msg"] == "publishing" && l["url"] == urlB {
				at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
				return at
			}
		}
		return time.Time{}
	}
	resumed := func(w *watcher) (*wire.Header, time.Time) {
		b := onB()
		if b.IsZero() {
			return nil, time.Time{}
		}
		hs, at := w.objectsSince(b)
		for j := range hs {
			if hs[j].Group > lastGroup[w] {
				return &hs[j], at[j]
			}
		}
		return nil, time.Time{}
	}
	// Generous here; the promise is checked below, so a slow machine
	// shows the figure rather than a timeout.
	testenv.WaitFor(t, 30*time.Second, "every viewer past the failover", func() bool {
		for _, w := range ws {
			if h, _ := resumed(w); h == nil {
				return false
			}
		}
		return true
	})
	for i, w := range ws {
		h, at := resumed(w)
		t.Logf("viewer %d: last group %d before, resumed at group %d object %d, %s after origin A was killed", i, lastGroup[w], h.Group, h.Index, at.Sub(killed).Round(time.Millisecond))
		if d := at.Sub(killed); d > 2*time.Second {
			t.Errorf("viewer %d resumed %s after origin A was killed, want within 2 s", i, d.Round(time.Millisecond))
		}
		if h.Flags&wire.FlagKeyframe == 0 {
			t.Errorf("viewer %d resumed at group %d object %d, want a group start", i, h.Group, h.Index)
		}
		var prev uint64
		evs, _, err := w.snapshot()
		if err != nil {
			t.Errorf("viewer %d disconnected: %v", i, err)
		}
		for _, ev := range evs {
			if ev.Control == nil && ev.Header.Kind == wire.KindObject && ev.Header.Flags&wire.FlagKeyframe != 0 {
				if prev != 0 && ev.Header.Group <= prev {
					t.Errorf("viewer %d: group %d after group %d", i, ev.Header.Group, prev)
					break
				}
				prev = ev.Header.Group
			}
		}
	}
	t.Logf("the publisher published to origin B %s after origin A was killed", onB().Sub(killed).Round(time.Millisecond))
	if n := pub.count("msg", "publishing", "url", urlB); n != 1 {
		t.Errorf("the publisher moved to origin B %d times, want 1", n)
	}
}
