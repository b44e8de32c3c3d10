package edge

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
)

// listJSON GETs /broadcasts.json.
func listJSON(t *testing.T, n *Node) (int, []api.Listing, string) {
	t.Helper()
	r := get(t, nil, "http://"+n.Addr().String()+"/broadcasts.json")
	var out struct{ Broadcasts []api.Listing }
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatalf("broadcasts.json: %v\n%s", err, r.body)
		}
	}
	return r.status, out.Broadcasts, string(r.body)
}

// landingRegistry is an embedded registry in which an origin holds names
// and reported their publishers.
func landingRegistry(t *testing.T, names ...string) *registry.Registry {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.Open(ctx, registry.Options{NodeID: "origin-1", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	pubs := map[string]registry.PublisherInfo{}
	for _, name := range names {
		if _, err := reg.Claim(ctx, registry.Broadcast{Name: name, Relay: "10.0.0.9:4433", Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		if err := reg.SetPublishing(ctx, name, true, nil); err != nil {
			t.Fatal(err)
		}
		pubs[name] = registry.PublisherInfo{Protocol: "rtmp", Remote: "203.0.113.7:51000", Codecs: []string{"avc1.64001f"}, Width: 1280, Height: 720}
	}
	if err := reg.Report(ctx, registry.Report{Node: registry.NodeInfo{ID: "origin-1", Role: "origin"}, Publishers: pubs}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return reg
}

// The landing page and /broadcasts.json list the registry's live
// broadcasts with their viewers (a real WebSocket viewer shows up as 1),
// the most watched first, each linking to its watch page, and nothing an
// outsider should not know (the publisher's address, the relay).
func TestLandingListsLiveBroadcastsWithViewers(t *testing.T) {
	src := newFakeSource()
	a := src.add(t, "cam/a")
	a.object(t, true, 10)
	reg := landingRegistry(t, "cam/a", "cam/b")
	n, _ := startEdge(t, Config{Source: src, Registry: reg})

	v := dialViewer(t, n, "cam/a")
	next(t, v)
	var list []api.Listing
	var body string
	testenv.WaitFor(t, 10*time.Second, "cam/a listed with its viewer", func() bool {
		var st int
		st, list, body = listJSON(t, n)
		return st == 200 && len(list) == 2 && list[0].Name == "cam/a" && list[0].Viewers == 1
	})
	if b := list[1]; b.Name != "cam/b" || b.Viewers != 0 || !b.Live || b.Watch != "/watch/cam/b" || b.Height != 720 || b.Started.IsZero() {
		t.Errorf("cam/b = %+v", b)
	}
	for _, secret := range []string{"203.0.113.7", "10.0.0.9", "origin-1", "rtmp"} {
		if strings.Contains(body, secret) {
			t.Errorf("broadcasts.json tells %q:\n%s", secret, body)
		}
	}

	page := get(t, nil, "http://"+n.Addr().String()+"/")
	html := string(page.body)
	if page.status != 200 || !strings.Contains(page.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(html, `href="/watch/cam/a"`) || !strings.Contains(html, `href="/watch/cam/b"`) ||
		!strings.Contains(html, "1 watching") || strings.Index(html, "cam/a") > strings.Index(html, "cam/b") {
		t.Fatalf("landing page: %d\n%s", page.status, html)
	}
	// The old /?b= links still play.
	if p := get(t, nil, "http://"+n.Addr().String()+"/?b=cam/a"); p.status != 200 || !strings.Contains(string(p.body), "/player.js") {
		t.Fatalf("/?b=cam/a: %d", p.status)
	}
}

// With no broadcast the page says so; an edge whose viewers need a token
// does not list its broadcasts unless told to (-public-list on), and
// -public-list off hides them everywhere.
func TestLandingIsHiddenWhenPlayNeedsAToken(t *testing.T) {
	empty, _ := startEdge(t, Config{Source: newFakeSource(), Registry: landingRegistry(t)})
	if st, list, body := listJSON(t, empty); st != 200 || len(list) != 0 || !strings.Contains(body, `"broadcasts":[]`) {
		t.Fatalf("no broadcasts: %d %s", st, body)
	}
	if p := get(t, nil, "http://"+empty.Addr().String()+"/"); p.status != 200 || !strings.Contains(string(p.body), "No live broadcasts") {
		t.Fatalf("empty landing page: %d %s", p.status, p.body)
	}

	reg := landingRegistry(t, "cam/private")
	for _, c := range []struct {
		tokens, list string
		shown        bool
	}{
		{"s3cret", "auto", false},
		{"s3cret", "on", true},
		{"", "off", false},
		{"", "auto", true},
	} {
		n, _ := startEdge(t, Config{Source: newFakeSource(), Registry: reg, PlayTokens: c.tokens, PublicList: c.list})
		st, list, body := listJSON(t, n)
		page := string(get(t, nil, "http://"+n.Addr().String()+"/").body)
		if c.shown {
			if st != 200 || len(list) != 1 || !strings.Contains(page, "/watch/cam/private") {
				t.Errorf("tokens %q, -public-list %s: %d %s", c.tokens, c.list, st, body)
			}
			continue
		}
		if st != http.StatusForbidden || !strings.Contains(body, "-public-list") || strings.Contains(body, "cam/private") ||
			strings.Contains(page, "cam/private") || !strings.Contains(page, "does not list") {
			t.Errorf("tokens %q, -public-list %s: %d %s\n%s", c.tokens, c.list, st, body, page)
		}
	}
	if _, err := New(Config{PublicList: "yes"}); err == nil || !strings.Contains(err.Error(), "auto, on or off") {
		t.Errorf("-public-list yes: %v", err)
	}
}
