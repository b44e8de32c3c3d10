package registry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
)

// downBound is how long any call may take while Redis is down or hung: the
// per-call timeout (1 s) and some slack.
const downBound = 1500 * time.Millisecond

// backend is the Redis a test runs against: a real redis-server, or the
// embedded miniredis of the first registry the test opens (later ones
// share it, as other nodes would share a Redis).
type backend struct {
	srv   *testenv.Redis // nil when embedded
	url   string
	first *Registry
}

// backends runs f against a real redis-server, a Redis Cluster of three
// masters (each test's keys spread over them) and the embedded miniredis.
func backends(t *testing.T, f func(t *testing.T, be *backend)) {
	t.Helper()
	for _, name := range []string{"redis", "cluster", "embedded"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			be := &backend{}
			switch name {
			case "redis":
				be.srv = testenv.StartRedis(t)
				be.url = be.srv.URL()
			case "cluster":
				be.url = testenv.StartRedisCluster(t, 3, 0).URL()
			}
			f(t, be)
		})
	}
}

// open opens a registry of node on the backend, closed in t.Cleanup.
func (be *backend) open(t *testing.T, node string, mod ...func(*Options)) *Registry {
	t.Helper()
	var shared *miniredis.Miniredis
	if be.first != nil {
		shared = be.first.mini // nil unless embedded
	}
	r := openShared(t, Options{URL: be.url, NodeID: node}, shared, mod...)
	if be.first == nil {
		be.first = r
	}
	return r
}

// wipe loses every key, as a Redis restart without persistence does.
func (be *backend) wipe(t *testing.T) {
	t.Helper()
	if be.srv != nil {
		be.srv.Stop()
		be.srv.Start()
		return
	}
	if cc, ok := be.first.Client().(*redis.ClusterClient); ok {
		if err := cc.ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
			return c.FlushAll(ctx).Err()
		}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := be.first.Client().FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
}

// openT opens a registry, closed in t.Cleanup.
func openT(t *testing.T, o Options, mod ...func(*Options)) *Registry {
	t.Helper()
	return openShared(t, o, nil, mod...)
}

// openShared opens a registry on the miniredis of another (if not nil).
func openShared(t *testing.T, o Options, shared *miniredis.Miniredis, mod ...func(*Options)) *Registry {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, m := range mod {
		m(&o)
	}
	r, err := open(t.Context(), o, shared)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func pttl(t *testing.T, r *Registry, key string) time.Duration {
	t.Helper()
	d, err := r.Client().PTTL(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return d
}

func exists(t *testing.T, r *Registry, key string) bool {
	t.Helper()
	n, err := r.Client().Exists(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}

// storedEvents reads qc:events, oldest first, those of broadcast only if
// it is not empty.
func storedEvents(t *testing.T, r *Registry, broadcast string) []Event {
	t.Helper()
	msgs, err := r.Client().XRange(t.Context(), keyEvents, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE: %v", err)
	}
	var out []Event
	for _, m := range msgs {
		if ev := parseEvent(m); broadcast == "" || ev.Broadcast == broadcast {
			out = append(out, ev)
		}
	}
	return out
}

func eventTypes(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func TestClaimLookupReleaseRoundTrip(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a := be.open(t, "a")
		ctx := t.Context()
		started := time.UnixMilli(time.Now().Add(-time.Minute).UnixMilli())
		b := Broadcast{
			Name: "live/cam-1", Relay: "127.0.0.1:7001", Incarnation: "5eed", Epoch: 3, Started: started,
			Publishing: true, Catalog: json.RawMessage(`{"tracks":[{"id":1,"codec":"avc1.64001f"}]}`),
		}
		prev, err := a.Claim(ctx, b, false)
		if err != nil || prev != nil {
			t.Fatalf("Claim = %v, %v; want nil, nil", prev, err)
		}
		got, err := a.Lookup(ctx, b.Name)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if got.Name != b.Name || got.Origin != "a" || got.Relay != b.Relay || got.Incarnation != "5eed" || got.Epoch != 3 ||
			!got.Started.Equal(started) || !got.Publishing || string(got.Catalog) != string(b.Catalog) {
			t.Errorf("Lookup = %+v, want %+v with origin a", got, b)
		}
		if age := time.Since(got.Heartbeat); age < -time.Second || age > 2*time.Second {
			t.Errorf("heartbeat %v is %v old", got.Heartbeat, age)
		}
		if d := pttl(t, a, keyBcast("live/cam-1")); d <= 0 || d > DefaultTTL {
			t.Errorf("PTTL qc:bcast = %v, want in (0, %v]", d, DefaultTTL)
		}
		if err := a.LogGroup(ctx, b.Name, Group{Track: 1, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a, keyGroups("live/cam-1")) {
			t.Fatal("no group log after LogGroup")
		}

		if err := a.Release(ctx, b.Name); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if _, err := a.Lookup(ctx, b.Name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup after Release = %v, want ErrNotFound", err)
		}
		for _, k := range []string{keyBcast("live/cam-1"), keyGroups("live/cam-1")} {
			if exists(t, a, k) {
				t.Errorf("%s still exists after Release", k)
			}
		}
		evs := storedEvents(t, a, "")
		if got := strings.Join(eventTypes(evs), ","); got != "started,ended" {
			t.Fatalf("events = %s, want started,ended", got)
		}
		for _, ev := range evs {
			if ev.Broadcast != b.Name || ev.Node != "a" || ev.Relay != b.Relay || ev.Incarnation != "5eed" || ev.Epoch != 3 || time.Since(ev.Time) > 5*time.Second {
				t.Errorf("event %+v: want broadcast, node a, relay, incarnation, epoch 3, time now", ev)
			}
		}
		if !a.Healthy() {
			t.Error("Healthy() = false after successful calls")
		}
	})
}

func TestClaimRefusedWhileHolderPublishes(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		ctx := t.Context()
		if _, err := a.Claim(ctx, Broadcast{Name: "x", Relay: "127.0.0.1:1", Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		prev, err := b.Claim(ctx, Broadcast{Name: "x", Relay: "127.0.0.1:2", Publishing: true}, false)
		var te *TakenError
		if !errors.As(err, &te) || !errors.Is(err, ErrTaken) {
			t.Fatalf("Claim by b = %v, want a *TakenError wrapping ErrTaken", err)
		}
		if te.Holder.Origin != "a" || te.Holder.Relay != "127.0.0.1:1" || !strings.Contains(err.Error(), `"a"`) {
			t.Errorf("TakenError %q holder %+v, want node a named", err, te.Holder)
		}
		if prev == nil || prev.Origin != "a" {
			t.Errorf("prev = %+v, want holder a", prev)
		}
		if got, err := b.Lookup(ctx, "x"); err != nil || got.Origin != "a" || got.Relay != "127.0.0.1:1" {
			t.Errorf("after refused claim Lookup = %+v, %v; want a's key untouched", got, err)
		}
		if got := eventTypes(storedEvents(t, a, "x")); len(got) != 1 {
			t.Errorf("events = %v, want only a's started", got)
		}
	})
}

func TestClaimTakesOver(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		for _, ca := range []struct {
			name      string
			publishes bool
			setup     func(t *testing.T, key string)
			claimer   *Registry
			force     bool
			wantEvent string
		}{
			{name: "holder-not-publishing", publishes: false, claimer: b, wantEvent: EventMoved},
			{name: "stale-heartbeat", publishes: true, claimer: b, wantEvent: EventMoved,
				setup: func(t *testing.T, key string) {
					old := time.Now().Add(-DefaultTTL).UnixMilli() // older than TTL/2
					if err := a.Client().HSet(t.Context(), key, "heartbeat", old).Err(); err != nil {
						t.Fatal(err)
					}
				}},
			{name: "forced", publishes: true, claimer: b, force: true, wantEvent: EventMoved},
			{name: "same-node-again", publishes: true, claimer: a, wantEvent: EventStarted},
		} {
			t.Run(ca.name, func(t *testing.T) {
				ctx := t.Context()
				name := "takeover/" + ca.name
				if _, err := a.Claim(ctx, Broadcast{Name: name, Relay: "127.0.0.1:1", Epoch: 1, Publishing: ca.publishes}, false); err != nil {
					t.Fatal(err)
				}
				if ca.setup != nil {
					ca.setup(t, keyBcast(name))
				}
				prev, err := ca.claimer.Claim(ctx, Broadcast{Name: name, Relay: "127.0.0.1:2", Epoch: 2, Publishing: true}, ca.force)
				if err != nil {
					t.Fatalf("Claim: %v", err)
				}
				if prev == nil || prev.Origin != "a" || prev.Epoch != 1 {
					t.Errorf("prev = %+v, want a's epoch 1", prev)
				}
				got, err := a.Lookup(ctx, name)
				if err != nil || got.Origin != ca.claimer.o.NodeID || got.Relay != "127.0.0.1:2" || got.Epoch != 2 {
					t.Errorf("Lookup = %+v, %v; want the new claim", got, err)
				}
				evs := storedEvents(t, a, name)
				if len(evs) != 2 || evs[0].Type != EventStarted || evs[1].Type != ca.wantEvent ||
					evs[1].Node != ca.claimer.o.NodeID || evs[1].Relay != "127.0.0.1:2" || evs[1].Epoch != 2 {
					t.Errorf("events = %+v, want started then %s by the claimer", evs, ca.wantEvent)
				}
			})
		}
	})
}

func TestRefresh(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		ctx := t.Context()
		cat := json.RawMessage(`{"tracks":[]}`)
		x := Broadcast{Name: "x", Relay: "127.0.0.1:1", Incarnation: "1nc", Epoch: 4, Started: time.UnixMilli(1_700_000_000_000), Publishing: true, Catalog: cat}
		y := Broadcast{Name: "y", Relay: "127.0.0.1:1", Epoch: 1, Publishing: true}
		for _, bc := range []Broadcast{x, y} {
			if _, err := a.Claim(ctx, bc, false); err != nil {
				t.Fatal(err)
			}
		}

		// Extends the TTL and the heartbeat.
		c := a.Client()
		if err := c.PExpire(ctx, keyBcast("x"), 300*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, keyBcast("x"), "heartbeat", 1).Err(); err != nil {
			t.Fatal(err)
		}
		if lost, err := a.Refresh(ctx, []Broadcast{x, y}); err != nil || len(lost) != 0 {
			t.Fatalf("Refresh = %v, %v; want nothing lost", lost, err)
		}
		if d := pttl(t, a, keyBcast("x")); d < DefaultTTL-time.Second {
			t.Errorf("PTTL after Refresh = %v, want about %v", d, DefaultTTL)
		}
		if got, _ := a.Lookup(ctx, "x"); got == nil || time.Since(got.Heartbeat) > 2*time.Second {
			t.Errorf("heartbeat not refreshed: %+v", got)
		}

		// A key another node holds now is reported and left alone.
		if _, err := b.Claim(ctx, Broadcast{Name: "y", Relay: "127.0.0.1:2", Epoch: 2, Publishing: true}, true); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, keyBcast("y"), "heartbeat", 42).Err(); err != nil {
			t.Fatal(err)
		}
		lost, err := a.Refresh(ctx, []Broadcast{x, y})
		if err != nil || len(lost) != 1 || lost[0] != "y" {
			t.Fatalf("Refresh = %v, %v; want y lost", lost, err)
		}
		if got, _ := a.Lookup(ctx, "y"); got == nil || got.Origin != "b" || got.Heartbeat.UnixMilli() != 42 {
			t.Errorf("y after Refresh by a = %+v, want b's key untouched", got)
		}

		// A key that vanished (Redis restarted) is written again.
		be.wipe(t)
		if lost, err := a.Refresh(ctx, []Broadcast{x}); err != nil || len(lost) != 0 {
			t.Fatalf("Refresh after restart = %v, %v; want nothing lost", lost, err)
		}
		got, err := a.Lookup(ctx, "x")
		if err != nil || got.Origin != "a" || got.Relay != x.Relay || got.Incarnation != "1nc" || got.Epoch != 4 || !got.Started.Equal(x.Started) ||
			!got.Publishing || string(got.Catalog) != string(cat) {
			t.Fatalf("x after restart and Refresh = %+v, %v; want %+v", got, err, x)
		}
		if d := pttl(t, a, keyBcast("x")); d <= 0 {
			t.Errorf("recreated key PTTL = %v, want a TTL", d)
		}
		if evs := storedEvents(t, a, ""); len(evs) != 1 || evs[0].Type != EventStarted || evs[0].Broadcast != "x" || evs[0].Incarnation != "1nc" {
			t.Errorf("events after recreation = %+v, want one started for x", evs)
		}
		if lost, err := a.Refresh(ctx, nil); err != nil || lost != nil {
			t.Errorf("Refresh(nil) = %v, %v", lost, err)
		}
	})
}

func TestKeyExpiresWithoutHeartbeat(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a := be.open(t, "a", func(o *Options) { o.TTL = 300 * time.Millisecond })
		if _, err := a.Claim(t.Context(), Broadcast{Name: "x", Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 3*time.Second, "qc:bcast:x to expire", func() bool {
			_, err := a.Lookup(t.Context(), "x")
			return errors.Is(err, ErrNotFound)
		})
	})
}

func TestSetPublishing(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		ctx := t.Context()
		if _, err := a.Claim(ctx, Broadcast{Name: "x", Relay: "127.0.0.1:1"}, false); err != nil {
			t.Fatal(err)
		}
		cat := json.RawMessage(`{"tracks":[1,2]}`)
		if err := a.SetPublishing(ctx, "x", true, cat); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Lookup(ctx, "x"); err != nil || !got.Publishing || string(got.Catalog) != string(cat) {
			t.Fatalf("Lookup = %+v, %v; want publishing with the catalog", got, err)
		}
		if err := a.SetPublishing(ctx, "x", false, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Lookup(ctx, "x"); err != nil || got.Publishing || string(got.Catalog) != string(cat) {
			t.Fatalf("Lookup = %+v, %v; want not publishing, catalog kept", got, err)
		}
		var te *TakenError
		if err := b.SetPublishing(ctx, "x", true, nil); !errors.As(err, &te) || te.Holder.Origin != "a" {
			t.Errorf("SetPublishing by b = %v, want *TakenError naming a", err)
		}
		if err := b.Release(ctx, "x"); !errors.As(err, &te) || !exists(t, a, keyBcast("x")) {
			t.Errorf("Release by b = %v, want *TakenError and a's key kept", err)
		}
		if err := a.SetPublishing(ctx, "nobody", true, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetPublishing of an unclaimed name = %v, want ErrNotFound", err)
		}
	})
}

func TestList(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		ctx := t.Context()
		if got, err := a.List(ctx); err != nil || len(got) != 0 {
			t.Fatalf("List of nothing = %v, %v", got, err)
		}
		for _, c := range []struct {
			r    *Registry
			name string
		}{{a, "two/x"}, {b, "one"}, {a, "three"}} {
			if _, err := c.r.Claim(ctx, Broadcast{Name: c.name}, false); err != nil {
				t.Fatal(err)
			}
		}
		got, err := b.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, bc := range got {
			names = append(names, bc.Name+"@"+bc.Origin)
		}
		if s := strings.Join(names, ","); s != "one@b,three@a,two/x@a" {
			t.Errorf("List = %s, want one@b,three@a,two/x@a", s)
		}
	})
}

func TestGroupLog(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a := be.open(t, "a", func(o *Options) { o.GroupLogTTL = time.Minute })
		ctx := t.Context()
		if g, err := a.LastGroup(ctx, "x"); g != nil || err != nil {
			t.Fatalf("LastGroup of no log = %v, %v; want nil, nil", g, err)
		}
		if gs, err := a.Groups(ctx, "x", 10); len(gs) != 0 || err != nil {
			t.Fatalf("Groups of no log = %v, %v", gs, err)
		}
		t0 := time.UnixMilli(time.Now().UnixMilli())
		var want []Group
		for i := range 3 {
			g := Group{
				Track: 2, Seq: uint64(10 + i), Epoch: 7, Start: t0.Add(time.Duration(i) * time.Second),
				Duration: 1001 * time.Millisecond, Bytes: int64(100_000 + i), Objects: 30 + i,
			}
			if err := a.LogGroup(ctx, "x", g); err != nil {
				t.Fatal(err)
			}
			g.Origin = "a"
			want = append(want, g)
		}
		last, err := a.LastGroup(ctx, "x")
		if err != nil || last == nil || *last != want[2] {
			t.Fatalf("LastGroup = %+v, %v; want %+v", last, err, want[2])
		}
		for _, n := range []int64{10, 0, 2} {
			gs, err := a.Groups(ctx, "x", n)
			w := want
			if n == 2 {
				w = want[1:]
			}
			if err != nil || len(gs) != len(w) {
				t.Fatalf("Groups(%d) = %+v, %v; want %+v", n, gs, err, w)
			}
			for i := range w {
				if gs[i] != w[i] {
					t.Errorf("Groups(%d)[%d] = %+v, want %+v", n, i, gs[i], w[i])
				}
			}
		}
		if d := pttl(t, a, keyGroups("x")); d <= 0 || d > time.Minute {
			t.Errorf("PTTL qc:groups = %v, want in (0, 1m]", d)
		}
	})
}

func TestGroupLogIsTrimmed(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a := be.open(t, "a", func(o *Options) { o.GroupLogMax = 100 })
		ctx := t.Context()
		for i := range 3000 {
			if err := a.LogGroup(ctx, "x", Group{Track: 1, Seq: uint64(i)}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := a.Client().XLen(ctx, keyGroups("x")).Result()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("XLEN after 3000 groups, GroupLogMax 100: %d", n)
		if n < 100 || n > 300 { // "~" trims whole stream nodes (100 entries each)
			t.Errorf("XLEN after 3000 groups with GroupLogMax 100 = %d, want 100..300", n)
		}
		if last, err := a.LastGroup(ctx, "x"); err != nil || last.Seq != 2999 {
			t.Errorf("LastGroup = %+v, %v; want group 2999", last, err)
		}
	})
}

// follower runs Follow in the background and hands over what fn gets.
type follower struct {
	events chan Event
	cancel context.CancelFunc
	done   chan struct{} // closed when Follow has returned err
	err    error
}

func follow(t *testing.T, r *Registry) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	f := &follower{events: make(chan Event, 10000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.err = r.Follow(ctx, func(ev Event) { f.events <- ev })
	}()
	t.Cleanup(func() { cancel(); <-f.done })
	// Follow reads from the newest event on: publish until one arrives.
	deadline := time.After(5 * time.Second)
	for {
		if err := r.PublishEvent(t.Context(), Event{Type: EventNodeUp, Node: "warm-up"}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-f.events:
			if ev.Node == "warm-up" {
				return f
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("Follow delivered nothing in 5 s")
		}
	}
}

// next returns the next event other than the warm-up ones.
func (f *follower) next(t *testing.T, d time.Duration) Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-f.events:
			if ev.Node != "warm-up" {
				return ev
			}
		case <-f.done:
			t.Fatalf("Follow returned %v", f.err)
		case <-timeout:
			t.Fatalf("no event in %v", d)
		}
	}
}

func TestFollowDeliversEventsInOrder(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		ctx := t.Context()
		f := follow(t, b)
		if _, err := a.Claim(ctx, Broadcast{Name: "x", Relay: "127.0.0.1:1", Epoch: 9, Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			if err := a.PublishEvent(ctx, Event{Type: EventNodeDraining, Broadcast: "x", Epoch: uint64(100 + i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Release(ctx, "x"); err != nil {
			t.Fatal(err)
		}

		ev := f.next(t, 5*time.Second)
		if ev.Type != EventStarted || ev.Broadcast != "x" || ev.Node != "a" || ev.Relay != "127.0.0.1:1" || ev.Epoch != 9 || ev.ID == "" {
			t.Errorf("first event = %+v, want started x by a", ev)
		}
		prevID := ev.ID
		for i := range 50 {
			ev := f.next(t, 5*time.Second)
			if ev.Type != EventNodeDraining || ev.Epoch != uint64(100+i) || ev.Node != "a" || time.Since(ev.Time) > 10*time.Second {
				t.Fatalf("event %d = %+v, want node_draining epoch %d", i, ev, 100+i)
			}
			if !idLess(prevID, ev.ID) {
				t.Fatalf("event id %s after %s", ev.ID, prevID)
			}
			prevID = ev.ID
		}
		if ev := f.next(t, 5*time.Second); ev.Type != EventEnded || ev.Broadcast != "x" {
			t.Errorf("last event = %+v, want ended x", ev)
		}

		t0 := time.Now()
		f.cancel()
		<-f.done
		if !errors.Is(f.err, context.Canceled) {
			t.Errorf("Follow returned %v, want context.Canceled", f.err)
		}
		if d := time.Since(t0); d > 200*time.Millisecond {
			t.Errorf("Follow took %v to return after cancel", d)
		}
	})
}

func TestFollowResyncsAfterRedisRestart(t *testing.T) {
	srv := testenv.StartRedis(t)
	t.Parallel()
	a := openT(t, Options{URL: srv.URL(), NodeID: "a"})
	f := follow(t, a)

	srv.Stop()
	time.Sleep(300 * time.Millisecond) // Follow sees the error and backs off
	srv.Start()
	testenv.WaitFor(t, 5*time.Second, "an event published after the restart", func() bool {
		return a.PublishEvent(t.Context(), Event{Type: EventNodeUp, Node: "after"}) == nil
	})
	if ev := f.next(t, 5*time.Second); ev.Type != EventResync {
		t.Fatalf("first event after restart = %+v, want resync", ev)
	}
	if ev := f.next(t, 5*time.Second); ev.Type != EventNodeUp || ev.Node != "after" {
		t.Fatalf("event after resync = %+v, want node_up of after", ev)
	}
	if err := a.PublishEvent(t.Context(), Event{Type: EventNodeDraining, Node: "later"}); err != nil {
		t.Fatal(err)
	}
	if ev := f.next(t, 5*time.Second); ev.Node != "later" {
		t.Fatalf("event = %+v, want node_draining of later", ev)
	}
}

func TestCloseEndsFollow(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a := be.open(t, "a")
		b := be.open(t, "b")
		done := make(chan error, 1)
		go func() { done <- b.Follow(t.Context(), func(Event) {}) }()
		time.Sleep(100 * time.Millisecond) // blocked in XREAD
		t0 := time.Now()
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Follow after Close = %v, want ErrClosed", err)
			}
		case <-time.After(downBound):
			t.Fatal("Follow still running after Close")
		}
		if d := time.Since(t0); d > 500*time.Millisecond {
			t.Errorf("Close and Follow took %v", d)
		}
		if err := a.PublishEvent(t.Context(), Event{Type: EventNodeUp}); err != nil {
			t.Errorf("other registry broken by b.Close: %v", err)
		}
	})
}

func TestOpenWithRedisDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	t.Parallel()
	srv.Stop()
	var logs testenv.Logs
	t0 := time.Now()
	a := openT(t, Options{URL: srv.URL(), NodeID: "a", Logger: logs.Logger()})
	if d := time.Since(t0); d > downBound {
		t.Errorf("Open with Redis down took %v", d)
	}
	if a.Healthy() {
		t.Error("Healthy() = true with Redis down")
	}
	if len(logs.Lines("WARN", "redis unavailable at start")) != 1 {
		t.Errorf("want one warning; logs: %v", logs.Lines())
	}
	_, err := a.Lookup(t.Context(), "x")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup with Redis down = %v, want a connection error", err)
	}

	srv.Start()
	testenv.WaitFor(t, 5*time.Second, "Claim to succeed once Redis is up", func() bool {
		_, err := a.Claim(t.Context(), Broadcast{Name: "x"}, false)
		return err == nil
	})
	if !a.Healthy() {
		t.Error("Healthy() = false after a successful Claim")
	}
}

func TestCallsReturnQuicklyWhileRedisIsDown(t *testing.T) {
	for _, ca := range []struct {
		name string
		down func(*testenv.Redis)
	}{
		{"stopped", (*testenv.Redis).Stop}, // connection refused
		{"paused", (*testenv.Redis).Pause}, // accepts, never answers
	} {
		t.Run(ca.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.StartRedis(t)
			a := openT(t, Options{URL: srv.URL(), NodeID: "a"})
			x := Broadcast{Name: "x", Publishing: true}
			if _, err := a.Claim(t.Context(), x, false); err != nil {
				t.Fatal(err)
			}
			ca.down(srv)
			calls := map[string]func(ctx context.Context) error{
				"Claim":         func(ctx context.Context) error { _, err := a.Claim(ctx, x, false); return err },
				"Refresh":       func(ctx context.Context) error { _, err := a.Refresh(ctx, []Broadcast{x}); return err },
				"SetPublishing": func(ctx context.Context) error { return a.SetPublishing(ctx, "x", false, nil) },
				"Release":       func(ctx context.Context) error { return a.Release(ctx, "x") },
				"Lookup":        func(ctx context.Context) error { _, err := a.Lookup(ctx, "x"); return err },
				"List":          func(ctx context.Context) error { _, err := a.List(ctx); return err },
				"LogGroup":      func(ctx context.Context) error { return a.LogGroup(ctx, "x", Group{}) },
				"LastGroup":     func(ctx context.Context) error { _, err := a.LastGroup(ctx, "x"); return err },
				"Groups":        func(ctx context.Context) error { _, err := a.Groups(ctx, "x", 5); return err },
				"PublishEvent":  func(ctx context.Context) error { return a.PublishEvent(ctx, Event{Type: EventNodeUp}) },
			}
			type result struct {
				name string
				err  error
				took time.Duration
			}
			results := make(chan result, len(calls))
			for name, call := range calls {
				go func() {
					t0 := time.Now()
					err := call(t.Context())
					results <- result{name, err, time.Since(t0)}
				}()
			}
			for range calls {
				res := <-results
				if res.err == nil {
					t.Errorf("%s succeeded with Redis %s", res.name, ca.name)
				}
				if res.took > downBound {
					t.Errorf("%s took %v with Redis %s, want < %v", res.name, res.took, ca.name, downBound)
				}
			}
			if a.Healthy() {
				t.Errorf("Healthy() = true with Redis %s", ca.name)
			}
		})
	}
}

func TestPasswordURL(t *testing.T) {
	const pw = "s3cret-pw-4711"
	srv := testenv.StartRedis(t, testenv.RedisPassword(pw))
	t.Parallel()
	a := openT(t, Options{URL: srv.URL(), NodeID: "a"})
	if _, err := a.Claim(t.Context(), Broadcast{Name: "x"}, false); err != nil || !a.Healthy() {
		t.Fatalf("Claim with the right password = %v", err)
	}
	for _, ca := range []struct{ name, url, wantErr string }{
		{"wrong password", "redis://:wrong-pw-0815@" + srv.Addr() + "/0", "WRONGPASS"},
		{"no password", "redis://" + srv.Addr() + "/0", "NOAUTH"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			var logs testenv.Logs
			b := openT(t, Options{URL: ca.url, NodeID: "b", Logger: logs.Logger()})
			if b.Healthy() {
				t.Error("Healthy() = true with bad credentials")
			}
			_, err := b.Lookup(t.Context(), "x")
			if err == nil || !strings.Contains(err.Error(), ca.wantErr) || !strings.Contains(err.Error(), "check the password") {
				t.Errorf("Lookup = %v, want %s and a hint about the password", err, ca.wantErr)
			}
			if len(logs.Lines("WARN", "refused the credentials")) != 1 {
				t.Errorf("want a warning about the credentials; logs: %v", logs.Lines())
			}
			if all := strings.Join(logs.Lines(), "\n") + err.Error(); strings.Contains(all, "wrong-pw-0815") || strings.Contains(all, pw) {
				t.Errorf("a password leaked: %s", all)
			}
		})
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, ca := range []struct {
		name string
		o    Options
	}{
		{"no node id", Options{}},
		{"scheme", Options{NodeID: "a", URL: "http://127.0.0.1:6379"}},
		{"port", Options{NodeID: "a", URL: "redis://127.0.0.1:port/0"}},
		{"db", Options{NodeID: "a", URL: "redis://127.0.0.1:6379/zero"}},
		{"path", Options{NodeID: "a", URL: "redis://127.0.0.1:6379/0/1"}},
		{"garbage with password", Options{NodeID: "a", URL: "redis://:hunter2@127.0.0.1:x y/0"}},
	} {
		t.Run(ca.name, func(t *testing.T) {
			r, err := Open(t.Context(), ca.o)
			if err == nil {
				r.Close()
				t.Fatalf("Open(%+v) succeeded", ca.o)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	r := openT(t, Options{NodeID: "solo"})
	if !r.Embedded() || !r.Healthy() {
		t.Fatalf("Embedded() = %v, Healthy() = %v; want both true", r.Embedded(), r.Healthy())
	}
	if _, err := r.Claim(t.Context(), Broadcast{Name: "x"}, false); err != nil {
		t.Fatal(err)
	}
	if r.mini.Addr() != "" {
		t.Errorf("embedded Redis listens on %s, want in-memory connections only", r.mini.Addr())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.Lookup(t.Context(), "x"); err == nil {
		t.Error("Lookup after Close succeeded")
	}
	if other := openT(t, Options{URL: "redis://127.0.0.1:1/0", NodeID: "b"}); other.Embedded() {
		t.Error("Embedded() = true with a URL")
	}
}

func TestNamesAndEventsAreValidated(t *testing.T) {
	t.Parallel()
	r := openT(t, Options{NodeID: "a"})
	ctx := t.Context()
	for _, name := range []string{"", "a b", "../x", "x/", "*", strings.Repeat("n", 129)} {
		if _, err := r.Claim(ctx, Broadcast{Name: name}, false); !errors.Is(err, media.ErrBadName) {
			t.Errorf("Claim(%q) = %v, want ErrBadName", name, err)
		}
		if _, err := r.Lookup(ctx, name); !errors.Is(err, media.ErrBadName) {
			t.Errorf("Lookup(%q) = %v, want ErrBadName", name, err)
		}
		if err := r.LogGroup(ctx, name, Group{}); !errors.Is(err, media.ErrBadName) {
			t.Errorf("LogGroup(%q) = %v, want ErrBadName", name, err)
		}
	}
	if _, err := r.Claim(ctx, Broadcast{Name: "x", Catalog: json.RawMessage("{")}, false); err == nil {
		t.Error("Claim with a broken catalog succeeded")
	}
	for _, typ := range []string{"", EventResync} {
		if err := r.PublishEvent(ctx, Event{Type: typ}); err == nil {
			t.Errorf("PublishEvent(%q) succeeded", typ)
		}
	}
	if keys, err := r.Client().Keys(ctx, "*").Result(); err != nil || len(keys) != 0 {
		t.Errorf("keys written by invalid calls: %v, %v", keys, err)
	}
}
