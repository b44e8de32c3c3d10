package edge

import (
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// hlsPlayer is an LL-HLS player reduced to what the edge sees of one:
// the playlist URL it was redirected to, which it reloads.
type hlsPlayer struct {
	t   *testing.T
	url string
}

// openHLS asks for index.m3u8 as a player does first, and keeps the URL
// it ends at.
func openHLS(t *testing.T, n *Node, name string) *hlsPlayer {
	t.Helper()
	resp, err := http.Get(hlsURL(n, name, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "#EXT-X-PART:") {
		t.Fatalf("index.m3u8: %d\n%s", resp.StatusCode, body)
	}
	sid := resp.Request.URL.Query().Get(hlsSessionParam)
	if !validSessionID(sid) {
		t.Fatalf("the player ended at %s: no session id", resp.Request.URL)
	}
	if strings.Contains(string(body), hlsSessionParam) {
		t.Fatalf("segment and part URIs carry the session id (they must stay cacheable):\n%s", body)
	}
	return &hlsPlayer{t: t, url: resp.Request.URL.String()}
}

// reload asks for the playlist again; it returns the status and body.
func (p *hlsPlayer) reload() (int, string) {
	p.t.Helper()
	r := get(p.t, nil, p.url)
	return r.status, string(r.body)
}

// LL-HLS players are counted as viewers under "hls", once each however
// often they reload; a kick refuses the broadcast's players with 410 and
// the reason and counts them out at once, leaving other broadcasts'
// players alone; a new player is let in; a player that stops asking is
// counted out when its session expires.
func TestHLSViewersAreCountedKickedAndExpire(t *testing.T) {
	src := newFakeSource()
	src.addClip(t, "show/h").groups(t, 2, 3)
	src.addClip(t, "other").groups(t, 2, 3)
	n, logs := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	n.hls.sessions.idle, n.hls.sessions.targets = 2*time.Second, 0
	counted := func(want map[string]map[string]int) {
		t.Helper()
		testenv.WaitFor(t, 10*time.Second, fmt.Sprint("viewers counted as ", want), func() bool {
			return reflect.DeepEqual(n.report("http://x").Viewers, want)
		})
	}

	a, b, o := openHLS(t, n, "show/h"), openHLS(t, n, "show/h"), openHLS(t, n, "other")
	if a.url == b.url {
		t.Fatalf("two players got one session: %s", a.url)
	}
	for range 3 {
		if st, body := a.reload(); st != 200 {
			t.Fatalf("reload: %d %s", st, body)
		}
	}
	counted(map[string]map[string]int{"show/h": {"hls": 2}, "other": {"hls": 1}})
	if rep := n.report("http://x"); rep.Node.Viewers != 3 {
		t.Fatalf("node viewers = %d, want 3", rep.Node.Viewers)
	}

	n.kickViewers("show/h")
	counted(map[string]map[string]int{"other": {"hls": 1}})
	for _, p := range []*hlsPlayer{a, b} {
		if st, body := p.reload(); st != http.StatusGone || !strings.Contains(body, "operator") {
			t.Fatalf("a kicked player's reload: %d %q, want 410 and the reason", st, body)
		}
	}
	if st, _ := o.reload(); st != 200 {
		t.Fatalf("the other broadcast's player: %d", st)
	}
	c := openHLS(t, n, "show/h")
	counted(map[string]map[string]int{"show/h": {"hls": 1}, "other": {"hls": 1}})
	if st, _ := a.reload(); st != http.StatusGone {
		t.Fatalf("a kicked session came back: %d", st)
	}

	// c keeps playing; o stops asking and expires.
	deadline := time.Now().Add(15 * time.Second)
	for !reflect.DeepEqual(n.report("http://x").Viewers, map[string]map[string]int{"show/h": {"hls": 1}}) {
		if time.Now().After(deadline) {
			t.Fatalf("viewers = %v: the idle player was not counted out", n.report("http://x").Viewers)
		}
		if st, _ := c.reload(); st != 200 {
			t.Fatalf("a playing player's reload: %d", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rep := n.report("http://x"); rep.Node.Viewers != 1 {
		t.Fatalf("node viewers = %d, want 1", rep.Node.Viewers)
	}
	if len(logs.Lines("viewers kicked by an operator")) != 1 {
		t.Error("the kick was not logged")
	}
}

// A session counts against -max-viewers: past it a new player gets 503
// with a reason, and players already in play on.
func TestHLSSessionsCountAgainstMaxViewers(t *testing.T) {
	src := newFakeSource()
	src.addClip(t, "full").groups(t, 1, 3)
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts, MaxViewers: 1})
	a := openHLS(t, n, "full")
	r := get(t, nil, hlsURL(n, "full", "index.m3u8"))
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "full") || r.header.Get("Retry-After") == "" {
		t.Fatalf("a second player on a full edge: %d %q %v", r.status, r.body, r.header)
	}
	if st, _ := a.reload(); st != 200 {
		t.Fatalf("the first player: %d", st)
	}
	// A preview (the dashboard's) is not a viewer: not redirected, not
	// counted, so a full edge still serves it; neither is a malformed id.
	if r := get(t, nil, hlsURL(n, "full", "index.m3u8?preview=1")); r.status != 200 || strings.Contains(string(r.body), "preview") {
		t.Fatalf("a preview: %d %s", r.status, r.body)
	}
	if r := get(t, nil, hlsURL(n, "full", "index.m3u8?"+hlsSessionParam+"=x")); r.status != 200 {
		t.Fatalf("a malformed session id: %d %s", r.status, r.body)
	}
}
