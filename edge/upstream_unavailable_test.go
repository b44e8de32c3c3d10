package edge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// startRelay serves src's broadcasts over the relay on loopback, as an
// origin does, to peers presenting the cluster token.
func startRelay(t *testing.T, token string, src *fakeSource) string {
	t.Helper()
	srv := relay.NewServer(relay.ServerConfig{
		Node: "origin-1", Action: auth.Relay, Auth: auth.FromConfig("", "", token),
		Logger: (&testenv.Logs{}).Logger(), Lookup: src.Subscribe,
	})
	tc, err := relay.ServerTLS(relay.TLSFiles{}, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", tc, relay.ServerQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ln.Addr().String()
}

// upstreamUnavailable checks what each kind of viewer is told when the
// edge's upstream cannot be used: HLS gets status, WebSocket and
// WebTransport the code that mirrors it; all say "upstream unavailable"
// and nothing about the viewer's token.
func upstreamUnavailable(t *testing.T, n *Node, name string, status int, code wire.Code) {
	t.Helper()
	ok := func(what, msg string) {
		t.Helper()
		if !strings.HasPrefix(msg, "upstream unavailable: ") || strings.Contains(msg, "token not accepted") {
			t.Errorf("%s: %q, want \"upstream unavailable: …\" that does not blame the viewer's token", what, msg)
		}
	}
	r := get(t, nil, hlsURL(n, name, "index.m3u8"))
	if r.status != status {
		t.Errorf("HLS: %d %q, want %d", r.status, r.body, status)
	}
	ok("HLS", strings.TrimSpace(string(r.body)))

	// The WebSocket upgrade succeeds, so that a browser can read the
	// close code and reason (it cannot read a refused upgrade's status).
	c, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, name), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Next(10 * time.Second)
	c.Close()
	var cl *viewer.Closed
	if !errors.As(err, &cl) || cl.Code != code {
		t.Errorf("WebSocket: %v, want close %d", err, code)
	} else {
		ok("WebSocket", cl.Reason)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = watchWT(ctx, n, certHashes(t, n).Hashes, name, "")
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Errorf("WebTransport: %v, want %d", err, code)
	} else {
		ok("WebTransport", we.Msg)
	}
}

func TestWrongClusterTokenIsA502UpstreamUnavailableLoggedOnTheEdge(t *testing.T) {
	src := newFakeSource()
	src.add(t, "live/a").object(t, true, 10)
	origin := startRelay(t, "right", src)
	n, logs := startWTEdge(t, Config{Parent: origin, Peer: relay.Peer{NodeID: "edge-1", Token: "wrong"}})

	upstreamUnavailable(t, n, "live/a", http.StatusBadGateway, wire.CodeBadGateway)

	// Loud, on the edge whose -cluster-token is wrong, and once although
	// three viewers were refused.
	lines := logs.Lines("level=ERROR", "-cluster-token not accepted by upstream "+origin)
	if len(lines) != 1 {
		t.Errorf("log lines %q, want one at ERROR naming -cluster-token and the upstream", lines)
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_upstream_failures_total", "cause", "refused"); got < 1 {
		t.Errorf("quiccast_edge_upstream_failures_total{cause=refused} = %v, want ≥ 1", got)
	}

	// The right token plays: the refusal was the cluster token's.
	n2, _ := startEdge(t, Config{Parent: origin, Peer: relay.Peer{NodeID: "edge-2", Token: "right"}})
	c := dialViewer(t, n2, "live/a")
	if ev := next(t, c); ev.Control == nil {
		t.Errorf("edge with the right token: first event %+v, want the catalog", ev.Header)
	}
}

func TestUnreachableParentIsA503UpstreamUnavailableWithinTwoSeconds(t *testing.T) {
	parent := testenv.FreeAddr(t) // nothing listens there
	n, logs := startWTEdge(t, Config{Parent: parent, Peer: relay.Peer{NodeID: "edge-1", Token: "tok"}})

	start := time.Now()
	r := get(t, nil, hlsURL(n, "live/a", "index.m3u8"))
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("HLS answered after %s, want within about 2 s", took)
	}
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("HLS: %d %q Retry-After %q, want 503 with Retry-After", r.status, r.body, r.header.Get("Retry-After"))
	}
	upstreamUnavailable(t, n, "live/a", http.StatusServiceUnavailable, wire.CodeUnavailable)

	lines := logs.Lines("level=WARN", "parent "+parent+" unreachable", "-parent")
	if len(lines) != 1 {
		t.Errorf("log lines %q, want one at WARN naming -parent and the address", lines)
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_upstream_failures_total", "cause", "unreachable"); got < 4 {
		t.Errorf("quiccast_edge_upstream_failures_total{cause=unreachable} = %v, want ≥ 4 (one per viewer)", got)
	}
}

func TestBadRedisURLIsNotRegistryRegistry(t *testing.T) {
	_, err := New(Config{Listen: "127.0.0.1:0", RedisURL: "mysql://nope", Logger: (&testenv.Logs{}).Logger()})
	if err == nil || !strings.HasPrefix(err.Error(), "edge: registry: ") || strings.Contains(err.Error(), "registry: registry:") {
		t.Fatalf("New with a bad Redis URL: %v, want \"edge: registry: …\" once", err)
	}
}
