package registry

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// Reports of two edges add up per broadcast; a node that stops reporting
// vanishes from the lists once its TTL ran out, the other stays.
func TestReportNodesViewers(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "edge-a"), be.open(t, "edge-b")
		ctx := t.Context()
		const short, long = 300 * time.Millisecond, time.Minute
		if err := a.Report(ctx, Report{
			Node:    NodeInfo{Role: "edge", URL: "http://a:1", Viewers: 3},
			Viewers: map[string]map[string]int{"show/x": {"ws": 2, "wt": 1}, "../bad": {"ws": 1}},
		}, short); err != nil {
			t.Fatal(err)
		}
		if err := b.Report(ctx, Report{
			Node:       NodeInfo{Role: "origin", URL: "http://b:1"},
			Viewers:    map[string]map[string]int{"show/x": {"ws": 5}},
			Publishers: map[string]PublisherInfo{"show/x": {Protocol: "rtmp", Remote: "1.2.3.4:5", Codecs: []string{"avc1.64001f"}, Width: 640, Height: 360, Bitrate: 1000}},
		}, long); err != nil {
			t.Fatal(err)
		}
		nodes, err := b.Nodes(ctx)
		if err != nil || len(nodes) != 2 || nodes[0].ID != "edge-a" || nodes[0].Viewers != 3 || nodes[1].Role != "origin" {
			t.Fatalf("Nodes = %+v, %v", nodes, err)
		}
		d, err := b.Details(ctx, []string{"show/x", "nobody", "../bad"})
		want := map[string]map[string]int{"edge-a": {"ws": 2, "wt": 1}, "edge-b": {"ws": 5}}
		if err != nil || len(d) != 2 || !reflect.DeepEqual(d["show/x"].Viewers, want) {
			t.Fatalf("Details = %+v, %v; want viewers %v", d, err, want)
		}
		if p := d["show/x"].Publisher; p == nil || p.Protocol != "rtmp" || p.Width != 640 {
			t.Fatalf("publisher = %+v", p)
		}
		if n := d["nobody"]; n.Publisher != nil || len(n.Viewers) != 0 {
			t.Fatalf("details of nothing = %+v", n)
		}
		// One hash slot per broadcast: its keys share the tag {name}.
		for _, k := range []string{keyBcast("show/x"), keyGroups("show/x"), keyViewerSet("show/x"), keyViewers("show/x", "edge-a"), keyPublisher("show/x"), keyBar("show/x")} {
			if tag := hashTag(k); tag != "show/x" {
				t.Errorf("%s hashes on %q, not the broadcast name", k, tag)
			}
		}
		testenv.WaitFor(t, 5*time.Second, "edge-a's report to expire", func() bool {
			nodes, _ := b.Nodes(ctx)
			d, _ := b.Details(ctx, []string{"show/x"})
			v := d["show/x"].Viewers
			return len(nodes) == 1 && nodes[0].ID == "edge-b" && len(v) == 1 && v["edge-b"]["ws"] == 5
		})
	})
}

func TestBar(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		r := be.open(t, "o")
		ctx := t.Context()
		if d, err := r.Barred(ctx, "x"); d != 0 || err != nil {
			t.Fatalf("Barred before = %v, %v", d, err)
		}
		if err := r.Bar(ctx, "x", 400*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d, err := r.Barred(ctx, "x"); d <= 0 || d > 400*time.Millisecond || err != nil {
			t.Fatalf("Barred = %v, %v", d, err)
		}
		if d, _ := r.Barred(ctx, "y"); d != 0 {
			t.Fatalf("y barred %v", d)
		}
		testenv.WaitFor(t, 5*time.Second, "the bar to end", func() bool {
			d, err := r.Barred(ctx, "x")
			return d == 0 && err == nil
		})
	})
}

// drop and kick events carry the broadcast and the bar to followers.
func TestDropEventBar(t *testing.T) {
	backends(t, func(t *testing.T, be *backend) {
		a, b := be.open(t, "a"), be.open(t, "b")
		got := make(chan Event, 4)
		ctx := t.Context()
		go b.Follow(ctx, func(ev Event) { got <- ev })
		testenv.WaitFor(t, 5*time.Second, "the follower to start", func() bool {
			a.PublishEvent(ctx, Event{Type: EventKick, Broadcast: "warmup"})
			select {
			case ev := <-got:
				return ev.Type == EventKick
			case <-time.After(200 * time.Millisecond):
				return false
			}
		})
		if err := a.PublishEvent(ctx, Event{Type: EventDrop, Broadcast: "x/y", Bar: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		for ev := range got {
			if ev.Type == EventDrop {
				if ev.Broadcast != "x/y" || ev.Bar != 30*time.Second || ev.Node != "a" {
					t.Fatalf("drop event = %+v", ev)
				}
				return
			}
		}
	})
}

// hashTag is what Redis Cluster hashes of a key: the text inside the
// first {…} when it is not empty, else the whole key.
func hashTag(k string) string {
	i := strings.IndexByte(k, '{')
	if i < 0 {
		return k
	}
	j := strings.IndexByte(k[i+1:], '}')
	if j <= 0 {
		return k
	}
	return k[i+1 : i+1+j]
}
