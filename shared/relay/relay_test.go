package relay

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// source is a broadcast the test publishes into.
type source struct {
	b     *media.Broadcast
	group uint64
	index uint32
	open  bool
}

func newSource(t testing.TB, name string, epoch uint64) *source {
	s := &source{b: media.New(name, media.Limits{MaxGroups: 16})}
	s.setEpoch(t, epoch)
	return s
}

func (s *source) setEpoch(t testing.TB, epoch uint64) *media.Catalog {
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: s.b.Name, Epoch: epoch, Tracks: []wire.TrackInfo{{ID: 0, Kind: "video", Codec: "avc1.42E01E", Timescale: 90000}}},
		[][]byte{[]byte(fmt.Sprintf("init of epoch %d", epoch))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.SetCatalog(cat); err != nil {
		t.Fatal(err)
	}
	return cat
}

func (s *source) object(t testing.TB, keyframe bool, size int) {
	now := time.Now().UnixNano()
	h := wire.Header{Kind: wire.KindObject, Capture: now / 1000}
	if keyframe {
		if s.open {
			s.b.Finish(0, s.group, now)
			s.group++
		}
		s.index, s.open = 0, true
		h.Flags = wire.FlagKeyframe
	} else {
		s.index++
	}
	h.Group, h.Index, h.DecodeTime = s.group, s.index, s.group*100+uint64(s.index)
	p := bytes.Repeat([]byte{byte(s.group), byte(s.index)}, size/2)
	if err := s.b.Append(media.NewObject(h, p, now)); err != nil {
		t.Fatalf("append: %v", err)
	}
}

type testServer struct {
	srv  *Server
	addr string
	bs   map[string]*media.Broadcast
	mu   sync.Mutex
}

func startServer(t testing.TB, cfg ServerConfig, files TLSFiles) *testServer {
	t.Helper()
	ts := &testServer{bs: map[string]*media.Broadcast{}}
	if cfg.Lookup == nil {
		cfg.Lookup = func(_ context.Context, name string) (*media.Broadcast, func(), error) {
			ts.mu.Lock()
			defer ts.mu.Unlock()
			b, ok := ts.bs[name]
			if !ok {
				return nil, nil, wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
			}
			return b, func() {}, nil
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = (&testenv.Logs{}).Logger()
	}
	ts.srv = NewServer(cfg)
	tc, err := ServerTLS(files, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", tc, ServerQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ts.srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ts
}

func (ts *testServer) add(s *source) {
	ts.mu.Lock()
	ts.bs[s.b.Name] = s.b
	ts.mu.Unlock()
}

func dial(t testing.TB, addr string, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = (&testenv.Logs{}).Logger()
	}
	c, err := Dial(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sameObjects checks that the mirror holds the source's frames of group
// seq byte for byte.
func sameObjects(t *testing.T, src, mirror *media.Broadcast, seq uint64) {
	t.Helper()
	var sg, mg *media.Group
	for _, g := range src.Groups(0) {
		if g.Seq == seq {
			sg = g
		}
	}
	for _, g := range mirror.Groups(0) {
		if g.Seq == seq {
			mg = g
		}
	}
	if sg == nil || mg == nil {
		t.Fatalf("group %d: in source %v, in mirror %v", seq, sg != nil, mg != nil)
	}
	so, sdone := src.Objects(sg, 0, nil)
	mo, mdone := mirror.Objects(mg, 0, nil)
	if len(so) != len(mo) || sdone != mdone {
		t.Fatalf("group %d: source has %d objects (done %v), mirror %d (done %v)", seq, len(so), sdone, len(mo), mdone)
	}
	for i := range so {
		if !bytes.Equal(so[i].Frame(), mo[i].Frame()) {
			t.Fatalf("group %d object %d differs", seq, i)
		}
	}
	if mg.Catalog.Epoch != sg.Catalog.Epoch {
		t.Fatalf("group %d: mirror epoch %d, source %d", seq, mg.Catalog.Epoch, sg.Catalog.Epoch)
	}
}

func waitGroupDone(t *testing.T, b *media.Broadcast, seq uint64) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("group %d in the mirror", seq), func() bool {
		for _, g := range b.Groups(0) {
			if g.Seq == seq {
				_, done := b.Objects(g, 0, nil)
				return done
			}
		}
		return false
	})
}

func TestSubscriptionMirrorsGroupsByteExact(t *testing.T) {
	ts := startServer(t, ServerConfig{Node: "origin-1", Incarnation: "run-7"}, TLSFiles{})
	src := newSource(t, "live/x", 1)
	ts.add(src)
	src.object(t, true, 1000) // group 0
	src.object(t, false, 1000)
	src.object(t, true, 2000) // group 1, the newest: the subscription starts here
	c := dial(t, ts.addr, ClientConfig{Node: "edge-1"})
	if c.Peer() != "origin-1" || c.Incarnation() != "run-7" {
		t.Fatalf("peer %q incarnation %q, want origin-1 run-7", c.Peer(), c.Incarnation())
	}
	mirror := media.New("live/x", media.Limits{})
	sub, err := c.Subscribe(context.Background(), "live/x", nil, mirror)
	if err != nil {
		t.Fatal(err)
	}
	if cat := mirror.Catalog(); cat == nil || cat.Epoch != 1 || string(cat.Inits[0].Payload()) != "init of epoch 1" {
		t.Fatalf("mirror catalog %+v", cat)
	}
	for range 5 {
		src.object(t, false, 300_000)
	}
	src.object(t, true, 10) // group 2
	src.object(t, false, 70_000)
	src.object(t, true, 10) // group 3
	waitGroupDone(t, mirror, 1)
	waitGroupDone(t, mirror, 2)
	sameObjects(t, src.b, mirror, 1)
	sameObjects(t, src.b, mirror, 2)
	for _, g := range mirror.Groups(0) {
		if g.Seq == 0 {
			t.Fatal("group 0 was sent though the subscription started at the newest group")
		}
	}
	if sub.Cut.Load() != 0 || ts.srv.Stats.Resets.Load() != 0 {
		t.Fatalf("cut %d, resets %d", sub.Cut.Load(), ts.srv.Stats.Resets.Load())
	}
	if n := ts.srv.Stats.Subscriptions.Load(); n != 1 {
		t.Fatalf("%d subscriptions on the server", n)
	}
	sub.Close()
	testenv.WaitFor(t, 2*time.Second, "the server to drop the subscription", func() bool { return ts.srv.Stats.Subscriptions.Load() == 0 })
}

func TestSubscribeFromAGroupAndAcrossEpochs(t *testing.T) {
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	src := newSource(t, "ep", 1)
	ts.add(src)
	for range 4 { // groups 0..3
		src.object(t, true, 100)
		src.object(t, false, 100)
	}
	c := dial(t, ts.addr, ClientConfig{})
	mirror := media.New("ep", media.Limits{})
	start := uint64(1)
	if _, err := c.Subscribe(context.Background(), "ep", &start, mirror); err != nil {
		t.Fatal(err)
	}
	// Old groups come first: newer ones would make them too far behind
	// (MaxGroupsBehind) and get them reset, by design.
	for seq := uint64(1); seq <= 2; seq++ {
		waitGroupDone(t, mirror, seq)
	}
	src.setEpoch(t, 2) // a publisher reconnects
	src.object(t, true, 100)
	src.object(t, true, 100) // group 5 open, group 4 (epoch 2) done
	for seq := uint64(1); seq <= 4; seq++ {
		waitGroupDone(t, mirror, seq)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		sameObjects(t, src.b, mirror, seq)
	}
	gs := mirror.Groups(0)
	if gs[0].Seq != 1 || gs[len(gs)-1].Catalog.Epoch != 2 || string(gs[len(gs)-1].Catalog.Inits[0].Payload()) != "init of epoch 2" {
		t.Fatalf("mirror groups from %d, newest epoch %d", gs[0].Seq, gs[len(gs)-1].Catalog.Epoch)
	}
}

func TestSubscribeUnknownBroadcastIsNotFound(t *testing.T) {
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	c := dial(t, ts.addr, ClientConfig{})
	_, err := c.Subscribe(context.Background(), "nope", nil, media.New("nope", media.Limits{}))
	if wire.CodeOf(err) != wire.CodeNotFound {
		t.Fatalf("got %v, want 4004", err)
	}
	_, err = c.Subscribe(context.Background(), "../bad", nil, media.New("x", media.Limits{}))
	if wire.CodeOf(err) != wire.CodeBadRequest {
		t.Fatalf("got %v, want 4000 for a bad name", err)
	}
}

func TestClusterTokenIsRequired(t *testing.T) {
	ts := startServer(t, ServerConfig{Auth: auth.FromConfig("", "", "s3cret")}, TLSFiles{})
	_, err := Dial(context.Background(), ts.addr, ClientConfig{Token: "wrong"})
	if wire.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("wrong token: %v, want 4001", err)
	}
	_, err = Dial(context.Background(), ts.addr, ClientConfig{})
	if wire.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("no token: %v, want 4001", err)
	}
	dial(t, ts.addr, ClientConfig{Token: "s3cret"})
	if n := ts.srv.Stats.Refused.Load(); n != 2 {
		t.Fatalf("refused %d, want 2", n)
	}
}

func TestEndedBroadcastEndsTheSubscription(t *testing.T) {
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	src := newSource(t, "end", 1)
	ts.add(src)
	src.object(t, true, 10)
	c := dial(t, ts.addr, ClientConfig{})
	sub, err := c.Subscribe(context.Background(), "end", nil, media.New("end", media.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	src.b.Close()
	select {
	case <-sub.Done():
		if !errors.Is(sub.Err(), ErrEnded) {
			t.Fatalf("ended with %v", sub.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription still open")
	}
}

func TestGoAwayEndsSubscriptions(t *testing.T) {
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	src := newSource(t, "g", 1)
	ts.add(src)
	src.object(t, true, 10)
	c := dial(t, ts.addr, ClientConfig{})
	sub, err := c.Subscribe(context.Background(), "g", nil, media.New("g", media.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.GoAway("")
	select {
	case <-sub.Done():
		if !errors.Is(sub.Err(), ErrGoAway) {
			t.Fatalf("ended with %v", sub.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription still open after GOAWAY")
	}
}

// TestGroupFallingBehindIsReset uses a subscriber that never reads its
// group streams: the server resets old groups instead of queueing them,
// and keeps opening streams for new ones.
// slowSubscriber subscribes to name over a connection whose streams take
// 64 KB before their reader, which reads only control messages.
func slowSubscriber(t *testing.T, ts *testServer, name string) *quic.Conn {
	t.Helper()
	conn, st := slowSubscription(t, ts, name)
	go func() {
		for {
			if _, err := readMsg(st); err != nil {
				return
			}
		}
	}()
	return conn
}

// slowSubscription dials ts with stream windows of 64 KB, says HELLO and
// subscribes to name; it returns the connection and its control stream.
func slowSubscription(t *testing.T, ts *testServer, name string) (*quic.Conn, *quic.Stream) {
	t.Helper()
	tc, _ := ClientTLS(TLSFiles{})
	qc := QUICConfig()
	qc.InitialStreamReceiveWindow, qc.MaxStreamReceiveWindow = 64<<10, 64<<10
	conn, err := quic.DialAddr(context.Background(), ts.addr, tc, qc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	st, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Write(encodeMsg(&Msg{Type: MsgHello, Version: Version}))
	st.Write(encodeMsg(&Msg{Type: MsgSubscribe, ID: 1, Broadcast: name}))
	return conn, st
}

func TestGroupFallingBehindIsReset(t *testing.T) {
	ts := startServer(t, ServerConfig{MaxGroupsBehind: 2}, TLSFiles{})
	src := newSource(t, "slow", 1)
	ts.add(src)
	src.object(t, true, 10)
	conn := slowSubscriber(t, ts, "slow")
	streams := make(chan *quic.ReceiveStream, 100)
	go func() {
		for {
			s, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				return
			}
			streams <- s
		}
	}()
	// The subscription starts at the newest group once its sender runs:
	// let it start at group 0 (on a busy machine it began at group 2).
	testenv.WaitFor(t, 20*time.Second, "group 0's stream", func() bool { return len(streams) > 0 })
	for g := 0; g < 6; g++ {
		for i := 0; i < 4; i++ {
			src.object(t, i == 0, 100_000) // 400 KB per group against a 64 KB window
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.WaitFor(t, 5*time.Second, "a reset", func() bool { return ts.srv.Stats.Resets.Load() > 0 })
	testenv.WaitFor(t, 5*time.Second, "streams for every group", func() bool { return len(streams) >= 6 })
}

// TestMutualTLS: with a CA configured, the server refuses a client without
// a certificate signed by it.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := makeCA(t, dir)
	serverFiles := makeLeaf(t, dir, "server", ca, caKey)
	clientFiles := makeLeaf(t, dir, "client", ca, caKey)
	ts := startServer(t, ServerConfig{}, serverFiles)
	good, err := ClientTLS(clientFiles)
	if err != nil {
		t.Fatal(err)
	}
	dial(t, ts.addr, ClientConfig{TLS: good})
	noCert, _ := ClientTLS(TLSFiles{CA: clientFiles.CA})
	if _, err := Dial(context.Background(), ts.addr, ClientConfig{TLS: noCert, Timeout: 2 * time.Second}); err == nil {
		t.Fatal("a client without a certificate got in")
	}
}

func makeCA(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", der)
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func makeLeaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) TLSFiles {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: nil, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	tmpl.IPAddresses = append(tmpl.IPAddresses, []byte{127, 0, 0, 1})
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	f := TLSFiles{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, f.Cert, "CERTIFICATE", der)
	writePEM(t, f.Key, "EC PRIVATE KEY", kb)
	return f
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Issue 9, finding 5: a HELLO of 1 MiB from unauthenticated peers was read
// whole (and buffered by QUIC) before it was refused. Now the length is
// refused at once and the server's receive windows keep what a peer can
// push small.
func TestOversizedHelloIsRefusedBeforeItIsRead(t *testing.T) {
	logs := &testenv.Logs{}
	ts := startServer(t, ServerConfig{Auth: auth.FromConfig("", "", "cluster-s3cret"), Logger: logs.Logger()}, TLSFiles{})
	const conns = 30
	body := make([]byte, 1<<20) // shared: the clients hold one copy
	base := heapInuseNow()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	reasons := make(chan string, conns)
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc, _ := ClientTLS(TLSFiles{})
			conn, err := quic.DialAddr(context.Background(), ts.addr, tc, QUICConfig())
			if err != nil {
				reasons <- err.Error()
				return
			}
			defer conn.CloseWithError(0, "")
			st, err := conn.OpenStreamSync(context.Background())
			if err != nil {
				reasons <- err.Error()
				return
			}
			st.SetWriteDeadline(time.Now().Add(15 * time.Second))
			st.Write(binary.BigEndian.AppendUint32(nil, uint32(len(body))))
			st.Write(body)
			<-conn.Context().Done()
			var ae *quic.ApplicationError
			if errors.As(context.Cause(conn.Context()), &ae) {
				reasons <- fmt.Sprintf("%d %s", ae.ErrorCode, ae.ErrorMessage)
				return
			}
			reasons <- context.Cause(conn.Context()).Error()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	close(reasons)
	for r := range reasons {
		if !strings.Contains(r, "4000 HELLO:") || !strings.Contains(r, "limit 8192") {
			t.Fatalf("connection closed with %q, want 4000 and the HELLO limit", r)
		}
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("%d peers sending a 1 MiB HELLO: heap in use %d MiB before, peak +%d MiB; all refused within %v", conns, base>>20, grew>>20, took.Round(time.Millisecond))
	if grew > 24<<20 {
		t.Errorf("heap grew by %d MiB for %d unauthenticated peers", grew>>20, conns)
	}
	if ts.srv.Stats.Refused.Load() != conns {
		t.Errorf("%d refusals counted, want %d", ts.srv.Stats.Refused.Load(), conns)
	}
	if len(logs.Lines("relay: connection refused", "HELLO")) == 0 {
		t.Error("refusal not logged")
	}
}

func heapInuseNow() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestServeReturnsWhenStoppedWithPeersConnected: stopping a server whose
// peers keep their connections open ends those connections (going away)
// and Serve returns, so a node's shutdown does not wait for its edges.
func TestServeReturnsWhenStoppedWithPeersConnected(t *testing.T) {
	src := newSource(t, "s", 1)
	srv := NewServer(ServerConfig{Logger: (&testenv.Logs{}).Logger(), Lookup: func(_ context.Context, name string) (*media.Broadcast, func(), error) {
		return src.b, func() {}, nil
	}})
	tc, err := ServerTLS(TLSFiles{}, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", tc, ServerQUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	src.object(t, true, 10)
	c := dial(t, ln.Addr().String(), ClientConfig{})
	sub, err := c.Subscribe(context.Background(), "s", nil, media.New("s", media.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the server counts the connection", func() bool { return srv.Stats.Conns.Load() == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still waiting for a connected peer 10 s after it was stopped")
	}
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription outlived the server")
	}
}

// With MaxLag (the WebTransport viewers' setting, whose streams have no
// priorities), a group still being sent is reset as soon as a newer group
// exists and the subscriber is MaxLag behind, long before MaxGroupsBehind,
// and the newer group is delivered; without it the old group is kept.
func TestLaggingGroupIsResetWhenANewerOneWaits(t *testing.T) {
	for _, lag := range []time.Duration{100 * time.Millisecond, 0} {
		t.Run(fmt.Sprint("max-lag=", lag), func(t *testing.T) {
			ts, src, conn, g0 := slowFirstGroup(t, ServerConfig{MaxGroupsBehind: 8, MaxLag: lag})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Group 0 outgrows the 64 KB window the test never reads;
			// it is then older than MaxLag when group 1 begins.
			for range 4 {
				src.object(t, false, 100_000)
			}
			time.Sleep(2 * max(lag, 50*time.Millisecond))
			src.object(t, true, 1000)
			g1, err := conn.AcceptUniStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var h [GroupHeaderLen]byte
			if _, err := io.ReadFull(g1, h[:]); err != nil {
				t.Fatalf("group 1: %v", err)
			}
			if lag == 0 {
				// Kept: still open, a reader finds more of it.
				time.Sleep(200 * time.Millisecond)
				if r := ts.srv.Stats.Resets.Load(); r != 0 {
					t.Fatalf("%d resets without MaxLag", r)
				}
				return
			}
			testenv.WaitFor(t, 5*time.Second, "group 0 reset", func() bool { return ts.srv.Stats.LagResets.Load() == 1 })
			_, err = io.Copy(io.Discard, g0)
			var se *quic.StreamError
			if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(wire.CodeTooSlow) {
				t.Fatalf("group 0 ended with %v, want a reset with %d", err, wire.CodeTooSlow)
			}
		})
	}
}

// TestEachSubscriptionSendsOnOneGoroutine: a subscriber that keeps up
// costs the server one goroutine, across group boundaries: the goroutine
// that follows the track sends each group in turn (an edge serves
// thousands of WebTransport viewers this way).
func TestEachSubscriptionSendsOnOneGoroutine(t *testing.T) {
	const subs = 8
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	src := newSource(t, "live/one", 1)
	ts.add(src)
	src.object(t, true, 1000)
	var mirrors []*media.Broadcast
	for range subs {
		c := dial(t, ts.addr, ClientConfig{})
		m := media.New("live/one", media.Limits{})
		if _, err := c.Subscribe(context.Background(), "live/one", nil, m); err != nil {
			t.Fatal(err)
		}
		mirrors = append(mirrors, m)
		// The subscription starts at the newest group once its sender
		// runs: let it start at group 0 before group 1 begins.
		testenv.WaitFor(t, 20*time.Second, "group 0 begun in the mirror", func() bool { return len(m.Groups(0)) > 0 })
	}
	for g := uint64(1); g <= 3; g++ {
		for i := range 5 {
			src.object(t, i == 0, 5000)
		}
		for _, m := range mirrors {
			waitGroupDone(t, m, g-1)
		}
	}
	senders := func() int {
		buf := make([]byte, 4<<20)
		n := 0
		for _, st := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(st, "relay.(*sender)") {
				n++
			}
		}
		return n
	}
	// Goroutines that were handed a group while its end was still on
	// the way finish it and leave: wait for the steady state.
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("one sending goroutine per subscription (%d)", subs), func() bool { return senders() == subs })
	for _, m := range mirrors {
		sameObjects(t, src.b, m, 2)
	}
}

// TestBlockedWriteIsResetAfterWriteTimeout: group writes have no deadline;
// the server's watchdog resets one that has accepted nothing for
// WriteTimeout even when no newer group exists.
func TestBlockedWriteIsResetAfterWriteTimeout(t *testing.T) {
	ts, src, conn, g0 := slowFirstGroup(t, ServerConfig{WriteTimeout: 300 * time.Millisecond})
	src.object(t, false, 200_000) // outgrows the 64 KB window the test never reads
	testenv.WaitFor(t, 5*time.Second, "the blocked group reset", func() bool { return ts.srv.Stats.Resets.Load() == 1 })
	_, err := io.Copy(io.Discard, g0)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(wire.CodeTooSlow) {
		t.Fatalf("group 0 ended with %v, want a reset with %d", err, wire.CodeTooSlow)
	}
	// The watchdog stops once no subscription is left to watch.
	conn.CloseWithError(0, "")
	testenv.WaitFor(t, 5*time.Second, "the watchdog to stop", func() bool {
		ts.srv.wmu.Lock()
		defer ts.srv.wmu.Unlock()
		return !ts.srv.watching
	})
}

// slowFirstGroup starts a server with cfg, a broadcast with one object and
// a subscriber whose streams take 64 KB, and returns its first group
// stream.
func slowFirstGroup(t *testing.T, cfg ServerConfig) (*testServer, *source, *quic.Conn, *quic.ReceiveStream) {
	t.Helper()
	ts := startServer(t, cfg, TLSFiles{})
	src := newSource(t, "slow/first", 1)
	ts.add(src)
	src.object(t, true, 10)
	conn := slowSubscriber(t, ts, "slow/first")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g0, err := conn.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ts, src, conn, g0
}

// blockedWrites counts the server's group writes that are blocked now.
func blockedWrites(srv *Server) int {
	srv.wmu.Lock()
	defer srv.wmu.Unlock()
	n := 0
	for w := range srv.writers {
		w.mu.Lock()
		if !w.since.IsZero() {
			n++
		}
		w.mu.Unlock()
	}
	return n
}

// TestEndedReachesASubscriberWhoseGroupWriteBlocks: when the broadcast
// ends while a group write to a slow subscriber blocks, the subscriber gets
// ENDED and the group a reset (1001) at once, not after WriteTimeout.
func TestEndedReachesASubscriberWhoseGroupWriteBlocks(t *testing.T) {
	ts := startServer(t, ServerConfig{WriteTimeout: time.Minute}, TLSFiles{})
	src := newSource(t, "slow/end", 1)
	ts.add(src)
	src.object(t, true, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, st := slowSubscription(t, ts, "slow/end")
	ended := make(chan struct{})
	go func() {
		for {
			m, err := readMsg(st)
			if err != nil {
				return
			}
			if m.Type == MsgEnded {
				close(ended)
			}
		}
	}()
	g0, err := conn.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src.object(t, false, 200_000) // outgrows the 64 KB window the test never reads
	testenv.WaitFor(t, 10*time.Second, "a blocked group write", func() bool { return blockedWrites(ts.srv) == 1 })
	src.b.Close()
	select {
	case <-ended:
	case <-time.After(20 * time.Second): // WriteTimeout is a minute
		t.Fatal("no ENDED within 20 s of the broadcast's end")
	}
	_, err = io.Copy(io.Discard, g0)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(wire.CodeGoingAway) {
		t.Fatalf("group 0 ended with %v, want a reset with %d", err, wire.CodeGoingAway)
	}
	if r := ts.srv.Stats.Resets.Load(); r != 0 {
		t.Fatalf("%d resets counted as too slow", r)
	}
}

// TestNewerGroupOpensWhileAnOlderOneHasABacklog: a relay subscriber with
// a backlog in one group gets the next group's stream as soon as that
// group begins (with priorities it goes first), not after the backlog.
func TestNewerGroupOpensWhileAnOlderOneHasABacklog(t *testing.T) {
	const objects, size = 40, 30_000
	ts := startServer(t, ServerConfig{}, TLSFiles{})
	src := newSource(t, "backlog", 1)
	ts.add(src)
	src.object(t, true, 10)
	conn := slowSubscriber(t, ts, "backlog")
	var read0 atomic.Int64 // bytes of group 0 read
	opened := make(chan uint64, 4)
	go func() {
		for {
			s, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				return
			}
			go func() {
				h, err := readGroupHeader(s)
				if err != nil {
					return
				}
				opened <- h.Group
				buf := make([]byte, 8<<10)
				for {
					n, err := s.Read(buf)
					if h.Group == 0 {
						read0.Add(int64(n))
						time.Sleep(4 * time.Millisecond) // about 2 MB/s: each write is done within the watchdog's 50 ms
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	if g := <-opened; g != 0 {
		t.Fatalf("first group %d", g)
	}
	for range objects {
		src.object(t, false, size)
	}
	src.object(t, true, 1000) // group 1
	select {
	case g := <-opened:
		if r := read0.Load(); g != 1 || r > objects*size/2 {
			t.Fatalf("group %d opened after %d of group 0's %d bytes were read", g, r, objects*size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("group 1 never opened")
	}
}
