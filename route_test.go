package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/route"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
)

// askRouter GETs router?broadcast=name.
func askRouter(router, name string) (route.Answer, int, error) {
	var a route.Answer
	resp, err := http.Get(router + "?broadcast=" + name)
	if err != nil {
		return a, 0, err
	}
	defer resp.Body.Close()
	return a, resp.StatusCode, json.NewDecoder(resp.Body).Decode(&a)
}

// routedPlayer plays name over WebSocket as the player does with a
// router: it asks the router, connects to the first edge it was given,
// moves to the next when the edge closes, and asks again when it has
// tried them all.
type routedPlayer struct {
	mu      sync.Mutex
	edge    string    // where its last object came from
	since   time.Time // when the first object from edge came
	visited []string
}

func (p *routedPlayer) at() (string, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.edge, p.since
}

func startRoutedPlayer(ctx context.Context, wg *sync.WaitGroup, router, name string) *routedPlayer {
	p := &routedPlayer{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			a, st, err := askRouter(router, name)
			if err != nil || st != 200 {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			for _, e := range a.Edges {
				c, err := viewer.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/ws/"+name, "")
				if err != nil {
					continue
				}
				stop := context.AfterFunc(ctx, func() { c.Close() })
				for {
					ev, err := c.Next(0)
					if err != nil {
						break
					}
					if ev.Control != nil {
						continue
					}
					p.mu.Lock()
					if p.edge != e.ID {
						p.edge, p.since = e.ID, time.Now()
						p.visited = append(p.visited, e.ID)
					}
					p.mu.Unlock()
				}
				stop()
				c.Close()
				if ctx.Err() != nil {
					return
				}
			}
		}
	}()
	return p
}

// TestRouterSendsPlayersToTheBestEdgeAndMovesThemOnDrain: three edges
// report to Redis; edge-a is drained by its operator, edge-b is over its
// -max-egress ceiling (a viewer of its own). 30 players that follow the
// router (GET /edge on the origin) and one Chromium player (the watch
// page's ?route=) all land on edge-c. Then edge-c shuts down: every
// player moves on to the next edge it was given, edge-b, within 2 s, and
// none ever goes to the draining edge-a.
func TestRouterSendsPlayersToTheBestEdgeAndMovesThemOnDrain(t *testing.T) {
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	origin := node("origin", "origin", "-rtmp-listen", "")
	ea := node("edge", "edge-a", "-region", "eu")
	eb := node("edge", "edge-b", "-region", "eu", "-max-egress", "1000")
	ec := node("edge", "edge-c", "-region", "eu")
	url := func(p *proc) string { return "http://" + p.field("addr") }
	router := url(origin) + route.Path

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam", origin.field("addr")), &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}, 500*time.Millisecond)
	defer func() { cancel(); <-pub }()
	testenv.WaitFor(t, 15*time.Second, "the broadcast on the origin", func() bool { return origin.count("msg", "publisher ready") > 0 })

	if resp, err := http.Post(url(ea)+"/admin/drain", "", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("drain edge-a: %v %v", resp, err)
	}
	var wg sync.WaitGroup
	own := startWatcher(ctx, &wg, "cam", fmt.Sprintf("ws://%s/ws/cam", eb.field("addr")))
	var first route.Answer
	testenv.WaitFor(t, 20*time.Second, "the router to offer edge-c, then edge-b over its ceiling, and not edge-a", func() bool {
		a, st, err := askRouter(router, "cam")
		first = a
		return err == nil && st == 200 && len(a.Edges) == 2 && a.Edges[0].ID == "edge-c" && !a.Edges[0].Overloaded &&
			a.Edges[1].ID == "edge-b" && a.Edges[1].Overloaded && a.Edges[1].Pulling
	})
	t.Logf("router: %+v", first)

	players := make([]*routedPlayer, 30)
	for i := range players {
		players[i] = startRoutedPlayer(ctx, &wg, router, "cam")
	}
	testenv.WaitFor(t, 30*time.Second, "30 players receiving from edge-c", func() bool {
		for _, p := range players {
			if e, _ := p.at(); e != "edge-c" {
				return false
			}
		}
		return true
	})
	// The watch page, loaded from the draining edge, asks the origin's
	// router and plays from edge-c.
	requireBrowser(t)
	w := startWatch(t, url(ea)+"/watch/cam?route="+router, "router-chromium", 0, 1)
	w.waitState("measuring")
	if _, s := w.waitPlayed(1); s.Stats.Edge != url(ec)+"/" {
		t.Fatalf("Chromium plays from %q, want edge-c (%s)", s.Stats.Edge, url(ec))
	}

	stopped := time.Now()
	ec.cmd.Process.Signal(syscall.SIGTERM)
	var moves []time.Duration
	testenv.WaitFor(t, 20*time.Second, "30 players receiving from edge-b", func() bool {
		moves = moves[:0]
		for _, p := range players {
			e, since := p.at()
			if e != "edge-b" {
				return false
			}
			moves = append(moves, since.Sub(stopped))
		}
		return true
	})
	moved := w.waitEvent("Chromium connected to edge-b", func(ev playerEvent) bool {
		return ev.Type == "connected" && ev.detail("edge") == url(eb)+"/"
	})
	w.waitPlayed(1)
	rep := w.report()
	slices.Sort(moves)
	t.Logf("after SIGTERM to edge-c, players received from edge-b after p50 %s, max %s; Chromium connected %d ms after it",
		moves[len(moves)/2].Round(time.Millisecond), moves[len(moves)-1].Round(time.Millisecond), moved.At-stopped.UnixMilli())
	if max := moves[len(moves)-1]; max > 2*time.Second {
		t.Errorf("the last player moved %s after edge-c stopped: want within 2 s", max)
	}
	if d := moved.At - stopped.UnixMilli(); d > 2000 {
		t.Errorf("Chromium moved %d ms after edge-c stopped: want within 2 s", d)
	}
	if rep.Last.Stats.Edge != url(eb)+"/" || rep.Last.Stats.State != "playing" {
		t.Errorf("Chromium after the move: %+v", rep.Last.Stats)
	}
	for i, p := range players {
		p.mu.Lock()
		if slices.Contains(p.visited, "edge-a") {
			t.Errorf("player %d went to the draining edge-a: %v", i, p.visited)
		}
		p.mu.Unlock()
	}
	if _, _, err := own.snapshot(); err != nil {
		t.Errorf("edge-b's own viewer: %v", err)
	}
}
