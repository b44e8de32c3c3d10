package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/certs"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// certHashes fetches /cert-hash.
func certHashes(t testing.TB, n *Node) CertHashes {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/cert-hash", n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h CertHashes
	if resp.StatusCode != 200 {
		t.Fatalf("/cert-hash: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// wtDialer dials WebTransport sessions the way a browser does with
// serverCertificateHashes: the certificate is accepted only if its SHA-256
// is one of hashes.
func wtDialer(hashes []string) *webtransport.Transport {
	return &webtransport.Transport{
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // verified by hash below
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				sum := sha256.Sum256(raw[0])
				if !slices.Contains(hashes, base64.StdEncoding.EncodeToString(sum[:])) {
					return fmt.Errorf("certificate hash %x not among %v", sum, hashes)
				}
				return nil
			},
		},
		// Generous handshake and idle timeouts: on a busy machine (the
		// suite beside a CPU hog, with -race) 200 handshakes can take
		// longer than quic-go's 5 s default, which is not what these
		// tests are about.
		QUICConfig: &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true, MaxIncomingUniStreams: 1000,
			HandshakeIdleTimeout: 30 * time.Second, MaxIdleTimeout: 60 * time.Second},
	}
}

// dialWT opens a WebTransport session to /wt/{path}.
func dialWT(ctx context.Context, n *Node, hashes []string, path string, hdr http.Header) (*webtransport.Session, *http.Response, error) {
	url := fmt.Sprintf("https://127.0.0.1:%d/wt/%s", n.WTAddr().(*net.UDPAddr).Port, path)
	rsp, sess, err := wtDialer(hashes).Dial(ctx, url, hdr)
	return sess, rsp, err
}

// wtViewer is a WebTransport viewer speaking the relay protocol, as the
// browser player does, mirroring the broadcast.
type wtViewer struct {
	sess   *webtransport.Session
	c      *relay.Client
	sub    *relay.Subscription
	mirror *media.Broadcast
}

var viewerLogs testenv.Logs

func watchWT(ctx context.Context, n *Node, hashes []string, name, token string) (*wtViewer, error) {
	path := name
	if token != "" {
		path += "?token=" + token
	}
	sess, _, err := dialWT(ctx, n, hashes, path, nil)
	if err != nil {
		return nil, err
	}
	v := &wtViewer{sess: sess, mirror: media.New(name, media.Limits{})}
	// Tests pause their publishers while they wait for every viewer (30 s
	// at most on a busy machine): a group stream idle that long is the
	// test's doing, not a stalled edge, so it is not abandoned after the
	// default 10 s.
	v.c, err = relay.NewClient(ctx, relay.WebTransport(sess), relay.ClientConfig{Node: "test-viewer", Logger: viewerLogs.Logger(), GroupIdle: 2 * time.Minute})
	if err != nil {
		sess.CloseWithError(0, "")
		return nil, err
	}
	v.sub, err = v.c.Subscribe(ctx, name, nil, v.mirror)
	if err != nil {
		v.c.Close()
		return nil, err
	}
	return v, nil
}

func (v *wtViewer) close() { v.c.Close() }

// sameGroups checks that mirror holds src's groups from..to-1, each
// complete and byte for byte the same.
func sameGroups(src, mirror *media.Broadcast, from, to uint64) error {
	find := func(b *media.Broadcast, seq uint64) *media.Group {
		for _, g := range b.Groups(0) {
			if g.Seq == seq {
				return g
			}
		}
		return nil
	}
	for seq := from; seq < to; seq++ {
		sg, mg := find(src, seq), find(mirror, seq)
		if sg == nil || mg == nil {
			return fmt.Errorf("group %d: in source %v, in mirror %v", seq, sg != nil, mg != nil)
		}
		so, sdone := src.Objects(sg, 0, nil)
		mo, mdone := mirror.Objects(mg, 0, nil)
		if !sdone || !mdone || len(so) != len(mo) {
			return fmt.Errorf("group %d: source %d objects (done %v), mirror %d (done %v)", seq, len(so), sdone, len(mo), mdone)
		}
		for i := range so {
			if !bytes.Equal(so[i].Frame(), mo[i].Frame()) {
				return fmt.Errorf("group %d object %d differs", seq, i)
			}
		}
	}
	return nil
}

func startWTEdge(t *testing.T, cfg Config) (*Node, *testenv.Logs) {
	t.Helper()
	if cfg.WTListen == "" {
		cfg.WTListen = "same"
	}
	return startEdge(t, cfg)
}

func TestTwoHundredWebTransportViewersGetByteExactGroups(t *testing.T) {
	const viewers, groups, perGroup, size = 200, 4, 8, 2000
	src := newFakeSource()
	f := src.add(t, "live/wt")
	f.object(t, true, size) // group 0 begins: every viewer starts there
	// A viewer whose stream accepts nothing for -write-timeout is reset: on
	// a busy machine 200 sessions with the race detector can starve that
	// long, which is not what this test is about; so can it fall
	// -wt-max-lag behind.
	// Admission by CPU starvation is not this test's subject: on a busy
	// machine it would refuse some of the 200 (it did, beside two hogs).
	n, _ := startWTEdge(t, Config{Source: src, WriteTimeout: time.Minute, WTMaxLag: time.Minute, WTMaxViewers: viewers, WTMaxSchedDelay: -1})
	hashes := certHashes(t, n).Hashes

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vs := make([]*wtViewer, viewers)
	errs := make([]error, viewers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			vs[i], errs[i] = watchWT(ctx, n, hashes, "live/wt", "")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
	}
	defer func() {
		for _, v := range vs {
			v.close()
		}
	}()
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_viewers", "transport", "wt"); got != viewers {
		t.Fatalf("quiccast_edge_viewers{transport=wt} = %v, want %d", got, viewers)
	}
	if s, _ := src.counts("live/wt"); s != 1 {
		t.Fatalf("%d upstream subscriptions for %d viewers, want 1", s, viewers)
	}
	// Viewers that fall two groups behind have their old groups reset
	// (live video moves on): on a loaded machine with the race detector,
	// pushing to 200 sessions can take that long, so the publisher opens
	// group g only once every viewer holds group g-2.
	waitAll := func(seq uint64) {
		for i, v := range vs {
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := sameGroups(f.b, v.mirror, seq, seq+1)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("viewer %d: %v (groups %d, cut %d, resets %d)\n%s", i, err, v.sub.Groups.Load(), v.sub.Cut.Load(), n.wtRelay.Stats.Resets.Load(), strings.Join(viewerLogs.Lines(), "\n"))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	start := time.Now()
	for g := range groups {
		if g >= 2 {
			waitAll(uint64(g - 2))
		}
		for i := range perGroup {
			if g == 0 && i == 0 {
				continue
			}
			f.object(t, i == 0, size+g*perGroup+i)
			time.Sleep(30 * time.Millisecond) // about 30 objects a second, like video
		}
	}
	f.b.Finish(0, f.group, time.Now().UnixNano())
	waitAll(groups - 2)
	waitAll(groups - 1)
	// Each group was compared byte for byte by waitAll as it completed (the
	// source may have let the oldest go by now, on a slow machine).
	if err := func() error {
		for i, v := range vs {
			if c := v.sub.Cut.Load(); c != 0 {
				return fmt.Errorf("viewer %d: %d groups cut", i, c)
			}
		}
		return nil
	}(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d WebTransport viewers received %d groups of %d objects byte-exact in %s", viewers, groups, perGroup, time.Since(start).Round(time.Millisecond))
	if r := n.wtRelay.Stats.Resets.Load(); r != 0 {
		t.Fatalf("%d group streams reset", r)
	}
	for _, v := range vs {
		v.close()
	}
	testenv.WaitFor(t, 10*time.Second, "the viewers to be counted out", func() bool {
		return testenv.Metric(t, n.Registry(), "quiccast_edge_viewers", "transport", "wt") == 0
	})
}

func TestWebTransportRefusalsAreHTTPErrorsBeforeTheUpgrade(t *testing.T) {
	src := newFakeSource()
	src.add(t, "here").object(t, true, 10)
	src.add(t, "other").object(t, true, 10)
	n, logs := startWTEdge(t, Config{Source: src, PlayTokens: "tok", MaxViewers: 1, AllowedOrigins: "https://good.example"})
	hashes := certHashes(t, n).Hashes
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, ca := range []struct {
		name, path, origin string
		status             int
		code               wire.Code
	}{
		{"no token", "here", "", 401, wire.CodeUnauthorized},
		{"wrong token", "here?token=nope", "", 401, wire.CodeUnauthorized},
		{"bad name", "a..b/%2E%2E", "", 400, wire.CodeBadRequest},
		{"origin not allowed", "here?token=tok", "https://evil.example", 403, wire.CodeForbidden},
	} {
		t.Run(ca.name, func(t *testing.T) {
			hdr := http.Header{}
			if ca.origin != "" {
				hdr.Set("Origin", ca.origin)
			}
			sess, rsp, err := dialWT(ctx, n, hashes, ca.path, hdr)
			if err == nil {
				sess.CloseWithError(0, "")
				t.Fatal("session accepted")
			}
			if rsp == nil || rsp.StatusCode != ca.status {
				t.Fatalf("got %v %v, want HTTP %d", rsp, err, ca.status)
			}
			testenv.WaitFor(t, time.Second, "the log line", func() bool {
				return len(logs.Lines("viewer refused", "transport=wt", fmt.Sprint(uint16(ca.code)))) > 0
			})
		})
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_viewer_disconnects_total", "code", "4001"); got != 2 {
		t.Fatalf("4001 refusals counted %v, want 2", got)
	}

	// An unknown broadcast is refused on the control stream, with the
	// relay's ERROR: the session was admitted by name and token.
	if _, err := watchWT(ctx, n, hashes, "nowhere", "tok"); wire.CodeOf(err) != wire.CodeNotFound {
		t.Fatalf("unknown broadcast: %v, want 4004", err)
	}
	testenv.WaitFor(t, 5*time.Second, "the refused viewer to leave", func() bool {
		return testenv.Metric(t, n.Registry(), "quiccast_edge_viewers", "transport", "wt") == 0
	})
	// A session subscribes only to the broadcast it was opened for.
	sess, _, err := dialWT(ctx, n, hashes, "here?token=tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := relay.NewClient(ctx, relay.WebTransport(sess), relay.ClientConfig{Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, "other", nil, media.New("other", media.Limits{})); wire.CodeOf(err) != wire.CodeForbidden {
		t.Fatalf("subscribe to another broadcast: %v, want 4003", err)
	}
	// The HELLO's empty token falls back to the session's ?token=.
	if _, err := c.Subscribe(ctx, "here", nil, media.New("here", media.Limits{})); err != nil {
		t.Fatalf("subscribe with the session's token: %v", err)
	}
	// Issue 9, finding 10: one session, one viewer slot, one subscription
	// per broadcast (it could take 4 and 4 times the egress).
	for range 3 {
		if _, err := c.Subscribe(ctx, "here", nil, media.New("here", media.Limits{})); wire.CodeOf(err) != wire.CodeConflict {
			t.Fatalf("second subscription to the same broadcast: %v, want 4009", err)
		}
	}
	// The edge is full (MaxViewers 1).
	if _, rsp, err := dialWT(ctx, n, hashes, "here?token=tok", nil); err == nil || rsp == nil || rsp.StatusCode != 503 || rsp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the viewer limit: %v %v, want 503 with Retry-After", rsp, err)
	}
	c.Close()

	// Over TCP, /wt is explained, not served.
	resp, err := http.Get(fmt.Sprintf("http://%s/wt/here", n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "WebTransport endpoint") {
		t.Fatalf("GET /wt over TCP: %s %q", resp.Status, body)
	}
}

func TestHTTP3ServesTheEdgeOnTheSamePortAndTCPAdvertisesIt(t *testing.T) {
	src := newFakeSource()
	n, _ := startWTEdge(t, Config{Source: src})
	tcpPort := n.Addr().(*net.TCPAddr).Port
	udpPort := n.WTAddr().(*net.UDPAddr).Port
	if tcpPort != udpPort {
		t.Logf("UDP port %d differs from TCP port %d (it was taken)", udpPort, tcpPort)
	}
	h := certHashes(t, n)
	if h.Port != udpPort || h.Algorithm != "sha-256" || len(h.Hashes) != 2 || h.Hashes[0] != h.Current || h.Hashes[1] != h.Next || h.Current == h.Next {
		t.Fatalf("/cert-hash %+v", h)
	}
	na, err := time.Parse(time.RFC3339, h.NotAfter)
	if err != nil || time.Until(na) > certs.MaxHashValidity || time.Until(na) < 24*time.Hour {
		t.Fatalf("notAfter %q: %v", h.NotAfter, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/healthz", n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("Alt-Svc"), fmt.Sprintf(`h3=":%d"; ma=86400`, udpPort); got != want {
		t.Fatalf("Alt-Svc %q, want %q", got, want)
	}
	// The whole mux answers over HTTP/3, with the certificate /cert-hash
	// names.
	tr := &http3.Transport{TLSClientConfig: wtDialer(h.Hashes[:1]).TLSClientConfig}
	defer tr.Close()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	r3, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", udpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r3.Body)
	r3.Body.Close()
	if r3.Proto != "HTTP/3.0" || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("over HTTP/3: %s %q", r3.Proto, body)
	}
	// The CORS header lets pages of other (allowed) origins read the hashes.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/cert-hash", n.Addr()), nil)
	req.Header.Set("Origin", "https://page.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://page.example" {
		t.Fatalf("no CORS header: %v", resp.Header)
	}
}

func TestWebTransportOffServesNoHashes(t *testing.T) {
	n, _ := startEdge(t, Config{Source: newFakeSource(), WTListen: "off"})
	resp, err := http.Get(fmt.Sprintf("http://%s/cert-hash", n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Alt-Svc") != "" || n.WTAddr() != nil {
		t.Fatalf("WebTransport off: /cert-hash %s, Alt-Svc %q", resp.Status, resp.Header.Get("Alt-Svc"))
	}
}

// writeCert writes a certificate for 127.0.0.1 signed by a fresh CA and
// returns the CA pool.
func writeCert(t *testing.T, dir string, mod time.Time) *x509.CertPool {
	t.Helper()
	c, err := certs.SelfSigned([]string{"127.0.0.1", "localhost"}, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	for _, f := range []string{"cert.pem", "key.pem"} {
		os.Chtimes(filepath.Join(dir, f), mod, mod)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

func TestCertificateFilesServeHTTPSAndHTTP3AndAreReloaded(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	pool1 := writeCert(t, dir, t0)
	n, logs := startWTEdge(t, Config{Source: newFakeSource(), TLSCert: filepath.Join(dir, "cert.pem"), TLSKey: filepath.Join(dir, "key.pem"), TLSCheck: 10 * time.Millisecond})
	get := func(pool *x509.CertPool, h3 bool) (*http.Response, error) {
		tc := &tls.Config{RootCAs: pool}
		var rt http.RoundTripper = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
		url := fmt.Sprintf("https://%s/cert-hash", n.Addr())
		if h3 {
			h3t := &http3.Transport{TLSClientConfig: tc}
			defer h3t.Close()
			rt = h3t
			url = fmt.Sprintf("https://127.0.0.1:%d/cert-hash", n.WTAddr().(*net.UDPAddr).Port)
		}
		resp, err := (&http.Client{Transport: rt, Timeout: 5 * time.Second}).Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := get(pool1, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("HTTPS on -listen speaks %s, want HTTP/2.0", resp.Proto)
	}
	if resp, err = get(pool1, true); err != nil || resp.Proto != "HTTP/3.0" {
		t.Fatalf("HTTP/3: %v %v", resp, err)
	}
	if testenv.Metric(t, n.Registry(), "quiccast_edge_cert_expiry_timestamp_seconds") < float64(time.Now().Add(80*24*time.Hour).Unix()) {
		t.Fatal("expiry metric does not show the file's certificate")
	}

	pool2 := writeCert(t, dir, t0.Add(time.Minute))
	time.Sleep(20 * time.Millisecond)
	testenv.WaitFor(t, 5*time.Second, "the new certificate over TCP", func() bool { _, err := get(pool2, false); return err == nil })
	if _, err := get(pool2, true); err != nil {
		t.Fatalf("HTTP/3 after the reload: %v", err)
	}
	if _, err := get(pool1, false); err == nil {
		t.Fatal("the old certificate is still served")
	}
	if len(logs.Lines("certificate reloaded")) == 0 || testenv.Metric(t, n.Registry(), "quiccast_edge_cert_reloads_total") < 1 {
		t.Fatal("reload not logged or counted")
	}
	// With a real certificate pages need no hashes.
	resp2, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool2}}}).Get(fmt.Sprintf("https://%s/cert-hash", n.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	var h CertHashes
	json.NewDecoder(resp2.Body).Decode(&h)
	resp2.Body.Close()
	if len(h.Hashes) != 0 || h.Port != n.WTAddr().(*net.UDPAddr).Port {
		t.Fatalf("/cert-hash with certificate files: %+v", h)
	}
}

// goroutinesOf lists the goroutines whose stacks mention any of subs.
func goroutinesOf(subs ...string) []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "Test") && strings.Contains(g, "testing.tRunner") {
			continue // the test itself
		}
		for _, s := range subs {
			if strings.Contains(g, s) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

func TestCloseSendsGoAwayToWebTransportViewersThenClosesAndLeavesNoGoroutine(t *testing.T) {
	src := newFakeSource()
	f := src.add(t, "drain")
	f.object(t, true, 10)
	n, err := New(Config{Listen: "127.0.0.1:0", WTListen: "same", Source: src, DrainTimeout: 500 * time.Millisecond, Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(context.Background()) }()
	hashes := certHashes(t, n).Hashes
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	polite, err := watchWT(ctx, n, hashes, "drain", "")
	if err != nil {
		t.Fatal(err)
	}
	stubborn, err := watchWT(ctx, n, hashes, "drain", "")
	if err != nil {
		t.Fatal(err)
	}
	go func() { // the polite viewer leaves on GOAWAY, as the player does
		<-polite.sub.Done()
		polite.close()
	}()
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !errors.Is(polite.sub.Err(), relay.ErrGoAway) || !errors.Is(stubborn.sub.Err(), relay.ErrGoAway) {
		t.Fatalf("viewers ended with %v and %v, want GOAWAY", polite.sub.Err(), stubborn.sub.Err())
	}
	// The stubborn one ignored the GOAWAY: its session was closed with 1001.
	select {
	case <-stubborn.sess.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session of a viewer that ignored GOAWAY is still open")
	}
	if took < 400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("Close took %s, want about the drain timeout (500 ms)", took)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	stubborn.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := goroutinesOf("quiccast/edge.", "webtransport-go", "quic-go")
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	if _, _, err := dialWT(dctx, n, hashes, "drain", nil); err == nil {
		t.Fatal("a closed edge accepted a session")
	}
}

func TestDevCertificateRotatesAndPagesConnectWithTheAnnouncedHash(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	src := newFakeSource()
	src.add(t, "rot").object(t, true, 10)
	n, _ := startWTEdge(t, Config{Source: src, DevCert: certs.DevOptions{Validity: 10 * time.Hour, Rotate: 4 * time.Hour, Now: clock}})
	before := certHashes(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A page that fetched the hashes before the rotation connects after it
	// with the "next" one.
	mu.Lock()
	now = now.Add(4*time.Hour + time.Minute)
	mu.Unlock()
	v, err := watchWT(ctx, n, []string{before.Next}, "rot", "")
	if err != nil {
		t.Fatalf("with the announced next hash after the rotation: %v", err)
	}
	v.close()
	after := certHashes(t, n)
	if after.Current != before.Next || after.Next == before.Next || after.Next == before.Current {
		t.Fatalf("hashes before %+v, after %+v", before, after)
	}
	if _, err := watchWT(ctx, n, []string{before.Current}, "rot", ""); err == nil {
		t.Fatal("the rotated-out certificate is still served")
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_cert_rotations_total"); got != 1 {
		t.Fatalf("rotations metric %v", got)
	}
}

// Issue 10: past -wt-max-viewers an edge sheds WebTransport sessions with
// 503 and a Retry-After of 1-3 s before the upgrade, while WebSocket (the
// player's fallback) is still admitted, and a freed slot is taken again.
func TestWebTransportPastItsCapacityIsRefusedWith503AndRetryAfter(t *testing.T) {
	src := newFakeSource()
	src.add(t, "full").object(t, true, 10)
	n, logs := startWTEdge(t, Config{Source: src, MaxViewers: 100, WTMaxViewers: 2, WTMaxSchedDelay: -1})
	hashes := certHashes(t, n).Hashes
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := watchWT(ctx, n, hashes, "full", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := watchWT(ctx, n, hashes, "full", "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	for range 3 {
		_, rsp, err := dialWT(ctx, n, hashes, "full", nil)
		if err == nil || rsp == nil || rsp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("third WebTransport session: %v %v, want 503", rsp, err)
		}
		if s, err := strconv.Atoi(rsp.Header.Get("Retry-After")); err != nil || s < 1 || s > 3 {
			t.Fatalf("Retry-After %q, want 1-3 seconds", rsp.Header.Get("Retry-After"))
		}
	}
	if len(logs.Lines("viewer refused", "WebTransport is full on this edge (2 sessions)")) != 3 {
		t.Fatalf("want a log line naming the limit per refusal:\n%s", strings.Join(logs.Lines("viewer refused"), "\n"))
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_edge_viewer_disconnects_total", "code", "4503"); got != 3 {
		t.Fatalf("4503 refusals counted %v, want 3", got)
	}
	// WebSocket, the player's fallback, is not bound by it.
	c, err := viewer.DialWith(ctx, testTLS, wsURL(n, "full"), "")
	if err != nil {
		t.Fatalf("WebSocket while WebTransport is full: %v", err)
	}
	c.Close()
	// A session that leaves gives its slot back.
	a.close()
	testenv.WaitFor(t, 10*time.Second, "a freed WebTransport slot", func() bool {
		v, err := watchWT(ctx, n, hashes, "full", "")
		if err != nil {
			return false
		}
		v.close()
		return true
	})
}

// Issue 10: an edge whose goroutines wait too long for a CPU refuses new
// WebTransport sessions (503, naming the starvation) once it serves a
// quarter of -wt-max-viewers, and admits them again when the CPU is
// back. The starvation is real: busy goroutines in this process.
func TestWebTransportIsRefusedWhileTheEdgeIsCPUStarved(t *testing.T) {
	src := newFakeSource()
	src.add(t, "busy").object(t, true, 10)
	n, logs := startWTEdge(t, Config{Source: src, WTMaxViewers: 8, WTMaxSchedDelay: 20 * time.Millisecond})
	hashes := certHashes(t, n).Hashes
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 2 { // a quarter of 8: below it, starvation refuses nothing
		v, err := watchWT(ctx, n, hashes, "busy", "")
		if err != nil {
			t.Fatal(err)
		}
		defer v.close()
	}
	// Spinning goroutines, 8 per P, are preempted every 10 ms: a
	// runnable goroutine waits about 70 ms for a P.
	var stop atomic.Bool
	var hogs sync.WaitGroup
	for range 8 * runtime.GOMAXPROCS(0) {
		hogs.Add(1)
		go func() {
			defer hogs.Done()
			for !stop.Load() {
			}
		}()
	}
	testenv.WaitFor(t, 30*time.Second, "a session refused as CPU-starved", func() bool {
		_, rsp, err := dialWT(ctx, n, hashes, "busy", nil)
		return err != nil && rsp != nil && rsp.StatusCode == http.StatusServiceUnavailable &&
			len(logs.Lines("viewer refused", "this edge is CPU-starved (goroutines wait")) > 0
	})
	stop.Store(true)
	hogs.Wait()
	if testenv.Metric(t, n.Registry(), "quiccast_edge_wt_refused_starved_total") == 0 {
		t.Error("starved refusals not counted")
	}
	testenv.WaitFor(t, 30*time.Second, "a session admitted once the CPU is back", func() bool {
		v, err := watchWT(ctx, n, hashes, "busy", "")
		if err != nil {
			return false
		}
		v.close()
		return true
	})
}
