package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/publish"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// proc is one quiccast node process with JSON logs on stderr.
type proc struct {
	name  string
	cmd   *exec.Cmd
	ready map[string]any // the "… listening" log line
	mu    sync.Mutex
	logs  []map[string]any
	done  chan struct{}
}

func startProc(t *testing.T, bin, name, readyMsg string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append(args, "-log-format", "json", "-log-level", "debug")...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan map[string]any, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": sc.Text()}
			}
			p.mu.Lock()
			p.logs = append(p.logs, m)
			p.mu.Unlock()
			if m["msg"] == readyMsg {
				select {
				case ready <- m:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			n := len(p.logs)
			for _, l := range p.logs[max(0, n-40):] {
				t.Logf("%s: %v", name, l)
			}
			p.mu.Unlock()
		}
	})
	select {
	case p.ready = <-ready:
	case <-p.done:
		t.Fatalf("%s exited before it was ready", name)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not ready after 10 s", name)
	}
	return p
}

func (p *proc) field(k string) string { s, _ := p.ready[k].(string); return s }

// count returns how many log lines have every given key=value.
func (p *proc) count(kv ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.logs {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(l[kv[i]]) != kv[i+1] {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// watcher is a viewer that records everything with arrival times.
type watcher struct {
	name string // which broadcast
	url  string
	mu   sync.Mutex
	evs  []viewer.Event
	at   []time.Time
	err  error
}

func startWatcher(ctx context.Context, wg *sync.WaitGroup, name, url string) *watcher {
	w := &watcher{name: name, url: url}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := viewer.Dial(ctx, url, "")
		if err != nil {
			w.setErr(err)
			return
		}
		// A read deadline that fires leaves a gorilla WebSocket failed for
		// good (and panics after a thousand more reads), so the watcher
		// reads without one and is ended by closing the connection.
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		defer c.Close()
		for {
			ev, err := c.Next(0)
			if err != nil {
				if ctx.Err() == nil {
					w.setErr(err)
				}
				return
			}
			w.mu.Lock()
			w.evs = append(w.evs, ev)
			w.at = append(w.at, time.Now())
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watcher) setErr(err error) { w.mu.Lock(); w.err = err; w.mu.Unlock() }

func (w *watcher) snapshot() ([]viewer.Event, []time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]viewer.Event(nil), w.evs...), append([]time.Time(nil), w.at...), w.err
}

// keyframes counts the group starts received.
func (w *watcher) keyframes() int {
	hs, _ := w.objectsSince(time.Time{})
	n := 0
	for _, h := range hs {
		if h.Flags&wire.FlagKeyframe != 0 {
			n++
		}
	}
	return n
}

// objectsSince returns the media objects (not markers) received after t.
func (w *watcher) objectsSince(t time.Time) (hs []wire.Header, at []time.Time) {
	evs, ats, _ := w.snapshot()
	for i, ev := range evs {
		if ats[i].After(t) && ev.Control == nil && ev.Header.Kind == wire.KindObject && len(ev.Payload) > 0 {
			hs = append(hs, ev.Header)
			at = append(at, ats[i])
		}
	}
	return hs, at
}

// maxGap is the longest wait between two objects received in [from, to].
func (w *watcher) maxGap(from, to time.Time) time.Duration {
	_, at := w.objectsSince(from)
	var gap time.Duration
	prev := from
	for _, a := range at {
		if a.After(to) {
			break
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return max(gap, to.Sub(prev))
}

func runPublisher(ctx context.Context, url string, sent *sentMedia, gop time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- publish.Run(ctx, publish.Config{URL: url, Size: "320x180", FPS: 30, Bitrate: "300k", GOP: gop,
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			OnInit: sent.onInit, OnChunk: sent.onChunk, Logger: (&testenv.Logs{}).Logger()})
	}()
	return done
}

// clusterNode returns a function that starts `quiccast origin` or
// `quiccast edge` (kind) as node id on free loopback ports, registered in
// rds and relaying with the test's cluster token, and waits until it
// listens.
func clusterNode(t *testing.T, bin string, rds *testenv.Redis) func(kind, id string, extra ...string) *proc {
	return func(kind, id string, extra ...string) *proc {
		args := []string{kind, "-listen", "127.0.0.1:0", "-relay-listen", "127.0.0.1:0", "-node-id", id, "-redis-url", rds.URL(), "-cluster-token", "t0ken"}
		return startProc(t, bin, id, kind+" listening", append(args, extra...)...)
	}
}

// TestClusterOfProcesses runs the real binary as Redis + 2 origins + 2
// edges + a third edge whose parent is an edge, with two ffmpeg broadcasts
// on different origins and 20 viewers spread over the edges. Then it kills
// one origin and republishes to the other, and kills and restarts Redis.
func TestClusterOfProcesses(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	oa, ob := node("origin", "origin-a", "-rtmp-listen", "127.0.0.1:0"), node("origin", "origin-b", "-rtmp-listen", "127.0.0.1:0")
	e1, e2 := node("edge", "edge-1"), node("edge", "edge-2")
	e3 := startProc(t, bin, "edge-3", "edge listening", "edge", "-listen", "127.0.0.1:0", "-node-id", "edge-3",
		"-cluster-token", "t0ken", "-parent", e1.field("relay"))
	if e1.field("relay") == "" {
		t.Fatal("edge-1 serves no relay")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const gop = 500 * time.Millisecond
	started := time.Now()
	sentA := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	sentB := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	pubCtxA, stopA := context.WithCancel(ctx)
	pubA := runPublisher(pubCtxA, fmt.Sprintf("ws://%s/publish/cam/a", oa.field("addr")), sentA, gop)
	pubB := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/b", ob.field("addr")), sentB, gop)

	reg, err := registry.Open(ctx, registry.Options{URL: rds.URL(), NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	testenv.WaitFor(t, 15*time.Second, "both broadcasts in Redis", func() bool {
		a, errA := reg.Lookup(ctx, "cam/a")
		b, errB := reg.Lookup(ctx, "cam/b")
		return errA == nil && errB == nil && a.Origin == "origin-a" && b.Origin == "origin-b"
	})

	// 20 viewers: both broadcasts on all three edges.
	edges := []*proc{e1, e2, e3}
	var wg sync.WaitGroup
	var ws []*watcher
	wctx, stopWatch := context.WithCancel(ctx)
	for i := range 20 {
		name := []string{"cam/a", "cam/b"}[i%2]
		ws = append(ws, startWatcher(wctx, &wg, name, fmt.Sprintf("ws://%s/ws/%s", edges[i%3].field("addr"), name)))
	}
	testenv.WaitFor(t, time.Minute, "3 groups at every viewer", func() bool {
		for _, w := range ws {
			if w.keyframes() < 3 {
				return false
			}
		}
		return true
	})

	// Byte-exact, in order, whole groups from keyframes, on every edge.
	// The publisher records a chunk after writing it, by which time the
	// edges may already have passed it on: snapshot first, then let the
	// records catch up.
	snaps := make([][]viewer.Event, len(ws))
	for i, w := range ws {
		snaps[i], _, _ = w.snapshot()
	}
	for i, w := range ws {
		_, _, err := w.snapshot()
		evs := snaps[i]
		if err != nil {
			t.Fatalf("viewer %d (%s): %v", i, w.url, err)
		}
		sent := map[string]*sentMedia{"cam/a": sentA, "cam/b": sentB}[w.name]
		sent.awaitRecorded(evs)
		checkViewer(t, fmt.Sprintf("viewer %d of %s", i, w.url), evs, sent, started)
	}
	// One upstream subscription per (edge, broadcast) at each origin;
	// the tiered edge subscribes at its parent, never at an origin.
	for _, ca := range []struct {
		p        *proc
		peer, bc string
		want     int
	}{
		{oa, "edge-1", "cam/a", 1}, {oa, "edge-2", "cam/a", 1}, {ob, "edge-1", "cam/b", 1}, {ob, "edge-2", "cam/b", 1},
		{oa, "edge-3", "cam/a", 0}, {ob, "edge-3", "cam/b", 0}, {oa, "edge-1", "cam/b", 0},
		{e1, "edge-3", "cam/a", 1}, {e1, "edge-3", "cam/b", 1},
	} {
		if got := ca.p.count("msg", "relay: subscribed", "node", ca.peer, "broadcast", ca.bc); got != ca.want {
			t.Errorf("%s logged %d subscriptions from %s to %s, want %d", ca.p.name, got, ca.peer, ca.bc, ca.want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Failover: kill origin A, republish cam/a to origin B.
	lastGroup := map[*watcher]uint64{}
	for _, w := range ws {
		if hs, _ := w.objectsSince(started); len(hs) > 0 {
			lastGroup[w] = hs[len(hs)-1].Group
		}
	}
	killed := time.Now()
	oa.cmd.Process.Signal(syscall.SIGKILL)
	stopA()
	<-pubA
	sentA2 := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	firstChunk := make(chan time.Time, 1)
	pubA2 := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/a", ob.field("addr")), sentA2, gop)
	testenv.WaitFor(t, 15*time.Second, "the republished broadcast on origin B", func() bool {
		b, err := reg.Lookup(ctx, "cam/a")
		return err == nil && b.Origin == "origin-b"
	})
	testenv.WaitFor(t, 10*time.Second, "the first republished chunk", func() bool {
		sentA2.mu.Lock()
		defer sentA2.mu.Unlock()
		if len(sentA2.chunks) > 0 {
			select {
			case firstChunk <- time.Now():
			default:
			}
			return true
		}
		return false
	})
	resumed := <-firstChunk
	t.Logf("origin A killed; publisher's first chunk on origin B %s later", resumed.Sub(killed).Round(time.Millisecond))
	// Every viewer of cam/a past the failover by a whole group.
	testenv.WaitFor(t, time.Minute, "every viewer of cam/a two groups past the failover", func() bool {
		for _, w := range ws {
			hs, _ := w.objectsSince(killed)
			if w.name == "cam/a" && (len(hs) == 0 || hs[len(hs)-1].Group < lastGroup[w]+2) {
				return false
			}
		}
		return true
	})
	for i, w := range ws {
		hs, at := w.objectsSince(killed)
		if w.name == "cam/b" {
			gap := w.maxGap(killed, time.Now())
			t.Logf("viewer %d of cam/b: longest gap %s while origin A died", i, gap.Round(time.Millisecond))
			if gap > time.Second {
				t.Errorf("viewer %d of cam/b stalled %s while origin A died", i, gap)
			}
			continue
		}
		var first *wire.Header
		var firstAt time.Time
		for j := range hs {
			if hs[j].Group > lastGroup[w] {
				first, firstAt = &hs[j], at[j]
				break
			}
		}
		if first == nil {
			t.Errorf("viewer %d of cam/a (%s) got nothing after the failover", i, w.url)
			continue
		}
		if first.Index != 0 || first.Flags&wire.FlagKeyframe == 0 {
			t.Errorf("viewer %d resumed at group %d object %d, want a group start", i, first.Group, first.Index)
		}
		// Within 2 groups of the publisher resuming on origin B.
		t.Logf("viewer %d of cam/a via %s: last group %d before, resumed at group %d, %s after the publisher", i, w.url, lastGroup[w], first.Group, firstAt.Sub(resumed).Round(time.Millisecond))
		if d := firstAt.Sub(resumed); d > 2*gop {
			t.Errorf("viewer %d resumed %s after the publisher, want within 2 groups", i, d)
		}
		// Group numbers never go back.
		var prev uint64
		evs, _, _ := w.snapshot()
		for _, ev := range evs {
			if ev.Control == nil && ev.Header.Kind == wire.KindObject && ev.Header.Flags&wire.FlagKeyframe != 0 {
				if ev.Header.Group <= prev && prev != 0 {
					t.Errorf("viewer %d: group %d after group %d", i, ev.Header.Group, prev)
					break
				}
				prev = ev.Header.Group
			}
		}
	}
	for i, w := range ws {
		if _, _, err := w.snapshot(); err != nil {
			t.Errorf("viewer %d disconnected: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Redis dies: flowing broadcasts keep flowing; a broadcast started
	// meanwhile is found once Redis is back.
	rds.Stop()
	down := time.Now()
	sentC := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	pubC := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/c", ob.field("addr")), sentC, gop)
	time.Sleep(3 * time.Second)
	for i, w := range ws {
		if gap := w.maxGap(down, time.Now()); gap > time.Second {
			t.Errorf("viewer %d of %s stalled %s while Redis was down", i, w.name, gap)
		}
	}
	cURL := fmt.Sprintf("ws://%s/ws/cam/c", e2.field("addr"))
	if c, err := viewer.Dial(ctx, cURL, ""); err == nil {
		if _, err := c.Next(2 * time.Second); err == nil {
			t.Error("a broadcast started while Redis was down was found through the registry")
		}
		c.Close()
	}
	rds.Start()
	testenv.WaitFor(t, 15*time.Second, "cam/c at edge-2 once Redis is back", func() bool {
		c, err := viewer.Dial(ctx, cURL, "")
		if err != nil {
			return false
		}
		defer c.Close()
		ev, err := c.Next(2 * time.Second)
		return err == nil && ev.Control != nil && ev.Control.Type == wire.MsgCatalog
	})

	stopWatch()
	wg.Wait()
	cancel()
	for _, p := range []<-chan error{pubA2, pubB, pubC} {
		if err := <-p; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("publisher: %v", err)
		}
	}
}
