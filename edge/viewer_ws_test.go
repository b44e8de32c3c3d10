package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/tlsrec"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// fakeSource serves broadcasts the test feeds directly.
type fakeSource struct {
	mu         sync.Mutex
	bcasts     map[string]*media.Broadcast
	subscribes map[string]int
	releases   map[string]int
}

func newFakeSource() *fakeSource {
	return &fakeSource{bcasts: map[string]*media.Broadcast{}, subscribes: map[string]int{}, releases: map[string]int{}}
}

func (s *fakeSource) Subscribe(_ context.Context, name string) (*media.Broadcast, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bcasts[name]
	if !ok {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
	}
	s.subscribes[name]++
	return b, func() { s.mu.Lock(); s.releases[name]++; s.mu.Unlock() }, nil
}

func (s *fakeSource) counts(name string) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribes[name], s.releases[name]
}

// feed publishes synthetic objects into a broadcast.
type feed struct {
	b     *media.Broadcast
	group uint64
	index uint32
	open  bool
}

func (s *fakeSource) add(t *testing.T, name string) *feed {
	t.Helper()
	b := media.New(name, media.Limits{})
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: name, Epoch: 1, Tracks: []wire.TrackInfo{{
		ID: 0, Kind: "video", Codec: "avc1.42E01E", MimeType: `video/mp4; codecs="avc1.42E01E"`, Timescale: 90000,
	}}}, [][]byte{[]byte("init segment of " + name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetCatalog(cat); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.bcasts[name] = b
	s.mu.Unlock()
	return &feed{b: b}
}

// payload is the deterministic content of an object, so that viewers can
// check every byte.
func payload(group uint64, index uint32, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(uint64(i) + group*31 + uint64(index)*7)
	}
	return p
}

// object appends the next object; keyframe starts a new group.
func (f *feed) object(t testing.TB, keyframe bool, size int) {
	now := time.Now()
	h := wire.Header{Kind: wire.KindObject, Capture: now.UnixMicro()}
	if keyframe {
		if f.open {
			f.b.Finish(0, f.group, now.UnixNano())
			f.group++
		}
		f.index, f.open = 0, true
		h.Flags = wire.FlagKeyframe
	} else {
		f.index++
	}
	h.Group, h.Index, h.DecodeTime = f.group, f.index, f.group*1000+uint64(f.index)
	if err := f.b.Append(media.NewObject(h, payload(f.group, f.index, size), now.UnixNano())); err != nil {
		t.Errorf("append: %v", err)
	}
}

func startEdge(t *testing.T, cfg Config) (*Node, *testenv.Logs) {
	t.Helper()
	if w, ok := strings.CutPrefix(cfg.WSWriter, "tls"); ok { // wss:// (forEachWriter)
		dir := t.TempDir()
		writeCert(t, dir, time.Now().Add(-time.Hour))
		cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		cfg.WSWriter = strings.TrimPrefix(w, "-")
	}
	logs := &testenv.Logs{}
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = logs.Logger()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, n.Run)
	return n, logs
}

// forEachWriter runs a test with each way of writing WebSocket viewers:
// the event-driven fan-out and a goroutine per viewer, over plain TCP
// (ws://) and over TLS (wss://: "tls" and "tls-goroutines", which
// startEdge turns into a certificate and -ws-writer).
func forEachWriter(t *testing.T, f func(t *testing.T, writer string)) {
	forWriters(t, []string{"events", "goroutines", "tls", "tls-goroutines"}, f)
}

func forWriters(t *testing.T, writers []string, f func(t *testing.T, writer string)) {
	for _, w := range writers {
		t.Run(w, func(t *testing.T) { f(t, w) })
	}
}

// testTLS is how the edge tests' wss:// viewers trust the test
// certificates.
var testTLS = &tls.Config{InsecureSkipVerify: true}

func init() { websocket.DefaultDialer.TLSClientConfig = testTLS }

func wsURL(n *Node, name string) string {
	if n.cfg.TLSCert != "" {
		return fmt.Sprintf("wss://%s/ws/%s", n.Addr(), name)
	}
	return fmt.Sprintf("ws://%s/ws/%s", n.Addr(), name)
}

// wsWriterUsed checks that the edge's WebSocket viewers so far were all
// written the way writer (forEachWriter's) means.
func wsWriterUsed(t *testing.T, n *Node, writer string) {
	t.Helper()
	want := map[string]string{"events": "events", "goroutines": "goroutines", "tls": "tls", "tls-goroutines": "goroutines"}[writer]
	if want == "tls" && tlsrec.KernelAvailable() {
		want = "ktls"
	}
	got := testenv.Metric(t, n.Registry(), "quiccast_edge_ws_viewers_total", "writer", want)
	if got == 0 {
		t.Errorf("no WebSocket viewer was written by %q", want)
	}
}

func dialViewer(t *testing.T, n *Node, name string) *viewer.Conn {
	t.Helper()
	c, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, name), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, c *viewer.Conn) viewer.Event {
	t.Helper()
	ev, err := c.Next(5 * time.Second)
	if err != nil {
		t.Fatalf("viewer: %v", err)
	}
	return ev
}

// expectObject checks the next event is object (group, index) with the
// feed's bytes.
func expectObject(t *testing.T, c *viewer.Conn, group uint64, index uint32, size int) {
	t.Helper()
	ev := next(t, c)
	if ev.Control != nil || ev.Header.Kind != wire.KindObject || ev.Header.Group != group || ev.Header.Index != index {
		t.Fatalf("got %+v %+v, want object %d/%d", ev.Control, ev.Header, group, index)
	}
	if want := payload(group, index, size); !bytes.Equal(ev.Payload, want) {
		d := 0
		for d < min(len(want), len(ev.Payload)) && want[d] == ev.Payload[d] {
			d++
		}
		t.Fatalf("object %d/%d: payload of %d bytes differs from the %d sent at byte %d", group, index, len(ev.Payload), size, d)
	}
}

func expectEndOfGroup(t *testing.T, c *viewer.Conn, group uint64, objects uint32) {
	t.Helper()
	ev := next(t, c)
	if ev.Header.Flags&wire.FlagEndOfGroup == 0 || ev.Header.Group != group || ev.Header.Index != objects || len(ev.Payload) != 0 {
		t.Fatalf("got %+v, want the end of group %d after %d objects", ev.Header, group, objects)
	}
}

func expectClosed(t *testing.T, c *viewer.Conn, code wire.Code, reason string) {
	t.Helper()
	for {
		_, err := c.Next(10 * time.Second)
		if err == nil {
			continue
		}
		cl, ok := err.(*viewer.Closed)
		if !ok || cl.Code != code || !strings.Contains(cl.Reason, reason) {
			t.Fatalf("got %v, want close %d containing %q", err, code, reason)
		}
		return
	}
}

func TestViewerStartsAtNewestGroupWithCatalogAndInit(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "live/a")
		for range 2 { // groups 0 and 1, done
			f.object(t, true, 100)
			f.object(t, false, 100)
		}
		f.object(t, true, 100) // group 2, open
		f.object(t, false, 100)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer})
		c := dialViewer(t, n, "live/a")

		ev := next(t, c)
		if ev.Control == nil || ev.Control.Type != wire.MsgCatalog || ev.Control.Catalog.Tracks[0].Codec != "avc1.42E01E" {
			t.Fatalf("first message %+v, want the catalog", ev.Control)
		}
		ev = next(t, c)
		if ev.Header.Kind != wire.KindInit || string(ev.Payload) != "init segment of live/a" {
			t.Fatalf("second message %+v %q, want the init segment", ev.Header, ev.Payload)
		}
		expectObject(t, c, 2, 0, 100)
		expectObject(t, c, 2, 1, 100)
		f.object(t, false, 5000) // live from here
		expectObject(t, c, 2, 2, 5000)
		f.object(t, true, 70000)
		expectEndOfGroup(t, c, 2, 3)
		expectObject(t, c, 3, 0, 70000)
	})
}

// TestSlowViewerIsDroppedWithoutSlowingPublisherOrFastViewer has one viewer
// that never reads. The publisher's appends and a fast viewer must not
// notice; the slow one is dropped after WriteTimeout.
func TestSlowViewerIsDroppedWithoutSlowingPublisherOrFastViewer(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "s")
		f.object(t, true, 1000)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer, WriteTimeout: time.Second, UnsentLimit: 16 << 10})

		d := websocket.Dialer{TLSClientConfig: testTLS, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(4096)
			}
			return c, err
		}}
		slow, _, err := d.Dial(wsURL(n, "s"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close() // never read
		fast := dialViewer(t, n, "s")
		for range 2 {
			next(t, fast) // catalog, init
		}
		expectObject(t, fast, 0, 0, 1000)

		var fastErr error
		fastDone := make(chan struct{})
		const groups, perGroup, size = 20, 10, 32 << 10 // 200 objects of 32 KiB in 2 s: ~26 Mbit/s
		go func() {
			defer close(fastDone)
			for g := uint64(0); g < groups; g++ {
				for i := uint32(0); i < perGroup; i++ {
					if g == 0 && i == 0 {
						continue
					}
					if i == 0 {
						ev, err := fast.Next(5 * time.Second)
						if err != nil || ev.Header.Flags&wire.FlagEndOfGroup == 0 {
							fastErr = fmt.Errorf("want end of group %d, got %+v %+v %v", g-1, ev.Header, ev.Control, err)
							return
						}
					}
					ev, err := fast.Next(5 * time.Second)
					want := payload(g, i, size)
					if g == 0 {
						want = payload(g, i, size)
					}
					if err != nil || ev.Control != nil || ev.Header.Group != g || ev.Header.Index != i || !bytes.Equal(ev.Payload, want) {
						fastErr = fmt.Errorf("fast viewer: want %d/%d, got %+v %+v %v", g, i, ev.Header, ev.Control, err)
						return
					}
				}
			}
		}()
		var slowest time.Duration
		for g := range groups {
			for i := range perGroup {
				if g == 0 && i == 0 {
					continue
				}
				start := time.Now()
				f.object(t, i == 0, size)
				slowest = max(slowest, time.Since(start))
				time.Sleep(10 * time.Millisecond)
			}
		}
		<-fastDone
		if fastErr != nil {
			t.Fatal(fastErr)
		}
		// Appends never wait for viewers: one that did would wait for the
		// slow viewer's write timeout (1 s). A lock and a copy take far less,
		// even with the race detector on a loaded machine.
		if slowest > 250*time.Millisecond {
			t.Errorf("slowest append took %s", slowest)
		}
		testenv.WaitFor(t, 4*time.Second, "the slow viewer to be dropped", func() bool {
			return testenv.Metric(t, n.Registry(), "quiccast_edge_viewer_disconnects_total", "code", "4008") == 1 &&
				testenv.Metric(t, n.Registry(), "quiccast_edge_viewers", "transport", "ws") == 1
		})
	})
}

// TestLaggingViewerSkipsToNewestGroupThenIsDisconnected has a viewer that
// keeps pausing: it is moved to the newest group, told so, and dropped with
// a reason once it has skipped more than MaxSkips times.
func TestLaggingViewerSkipsToNewestGroupThenIsDisconnected(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "lag")
		f.object(t, true, 1000)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer, WriteTimeout: 10 * time.Second, UnsentLimit: 16 << 10,
			MaxLag: 300 * time.Millisecond, MaxSkips: 2, SkipWindow: time.Minute})

		d := websocket.Dialer{TLSClientConfig: testTLS, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(16 << 10)
			}
			return c, err
		}}
		ws, _, err := d.Dial(wsURL(n, "lag"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()

		stop := make(chan struct{})
		defer close(stop)
		go func() { // 16 KiB objects at ~60/s, 6 per group
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(16 * time.Millisecond):
				}
				f.object(t, i%6 == 0, 16<<10)
			}
		}()

		skips, afterSkip := 0, false
		lastPause := time.Now()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if time.Since(lastPause) > 300*time.Millisecond {
				time.Sleep(800 * time.Millisecond) // stop reading
				lastPause = time.Now()
			}
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			typ, b, err := ws.ReadMessage()
			if err != nil {
				ce, ok := err.(*websocket.CloseError)
				if !ok || ce.Code != int(wire.CodeTooSlow) || !strings.Contains(ce.Text, "fell behind the live edge more than 2 times") {
					t.Fatalf("got %v, want close 4008", err)
				}
				if skips != 3 {
					t.Fatalf("closed after %d skip messages, want 3", skips)
				}
				if got := testenv.Metric(t, n.Registry(), "quiccast_edge_skipped_groups_total"); got != 3 {
					t.Fatalf("skip metric %v, want 3", got)
				}
				return
			}
			if typ == websocket.TextMessage {
				m, _ := wire.ParseMessage(b)
				if m.Type == wire.MsgSkip {
					skips++
					afterSkip = true
					if m.To <= m.From {
						t.Fatalf("skip from %d to %d", m.From, m.To)
					}
				}
				continue
			}
			h, _, err := wire.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if afterSkip && h.Kind == wire.KindObject {
				if h.Flags&wire.FlagKeyframe == 0 || h.Index != 0 {
					t.Fatalf("after a skip the viewer got %d/%d, want a group start", h.Group, h.Index)
				}
				afterSkip = false
			}
		}
		t.Fatalf("not disconnected after 20 s (%d skips)", skips)
	})
}

func TestViewerRefusals(t *testing.T) {
	src := newFakeSource()
	f := src.add(t, "here")
	f.object(t, true, 10)
	n, logs := startEdge(t, Config{Source: src, PlayTokens: "tok", MaxViewers: 1})
	for _, ca := range []struct {
		name, path string
		code       wire.Code
		reason     string
	}{
		{"no token", "here", wire.CodeUnauthorized, `play "here" needs a token`},
		{"wrong token", "here?token=nope", wire.CodeUnauthorized, "token not accepted"},
		{"bad name", "a..b/%2E%2E", wire.CodeBadRequest, "bad broadcast name"},
		{"unknown broadcast", "nowhere?token=tok", wire.CodeNotFound, `no broadcast "nowhere"`},
	} {
		t.Run(ca.name, func(t *testing.T) {
			c, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, ca.path), "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			expectClosed(t, c, ca.code, ca.reason)
			testenv.WaitFor(t, time.Second, "the log line", func() bool { return len(logs.Lines("viewer refused", fmt.Sprint(uint16(ca.code)))) > 0 })
		})
	}
	first, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, "here"), "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	next(t, first)
	c, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, "here"), "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c, wire.CodeOverCapacity, "edge is full (1 viewers)")
}

func TestEndedBroadcastClosesViewersNormally(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "short")
		f.object(t, true, 10)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer})
		c := dialViewer(t, n, "short")
		for range 3 {
			next(t, c)
		}
		f.b.Close()
		ev := next(t, c)
		if ev.Control == nil || ev.Control.Type != wire.MsgEnded {
			t.Fatalf("got %+v, want the ended message", ev)
		}
		expectClosed(t, c, wire.CodeNormal, "broadcast ended")
	})
}

func TestClosingEdgeSendsGoAway(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "drain")
		f.object(t, true, 10)
		n, err := New(Config{Listen: "127.0.0.1:0", Source: src, WSWriter: writer, Logger: (&testenv.Logs{}).Logger()})
		if err != nil {
			t.Fatal(err)
		}
		go n.Run(context.Background())
		c := dialViewer(t, n, "drain")
		for range 3 {
			next(t, c)
		}
		done := make(chan error)
		go func() { done <- n.Close() }()
		ev := next(t, c)
		if ev.Control == nil || ev.Control.Type != wire.MsgGoAway {
			t.Fatalf("got %+v, want goaway", ev)
		}
		expectClosed(t, c, wire.CodeGoingAway, "edge draining")
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if resp, err := http.Get(fmt.Sprintf("http://%s/healthz", n.Addr())); err == nil {
			resp.Body.Close()
			t.Fatal("closed edge still serves")
		}
	})
}

func TestOneUpstreamPerBroadcastReleasedAfterLinger(t *testing.T) {
	src := newFakeSource()
	f := src.add(t, "pop")
	f.object(t, true, 10)
	n, _ := startEdge(t, Config{Source: src, Linger: 200 * time.Millisecond})
	var cs []*viewer.Conn
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := viewer.DialWith(context.Background(), testTLS, wsURL(n, "pop"), "")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cs = append(cs, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, c := range cs {
		for range 3 {
			next(t, c)
		}
	}
	if s, r := src.counts("pop"); s != 1 || r != 0 {
		t.Fatalf("8 viewers: %d subscribes, %d releases; want 1, 0", s, r)
	}
	for _, c := range cs {
		c.Close()
	}
	// Plain-TCP viewers' closes are read every half second.
	testenv.WaitFor(t, 4*time.Second, "the release", func() bool { _, r := src.counts("pop"); return r == 1 })
	// A new viewer subscribes again.
	c := dialViewer(t, n, "pop")
	next(t, c)
	if s, _ := src.counts("pop"); s != 2 {
		t.Fatalf("%d subscribes after the release, want 2", s)
	}
}

func TestPingIsAnswered(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		src.add(t, "p").object(t, true, 10)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer})
		ws, _, err := websocket.DefaultDialer.Dial(wsURL(n, "p"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		var pongs atomic.Int32
		ws.SetPongHandler(func(data string) error {
			if data == "hi" {
				pongs.Add(1)
			}
			return nil
		})
		ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second))
		// ReadMessage returns data messages only; the pong handler runs
		// inside it. Read until the stream goes quiet.
		ws.SetReadDeadline(time.Now().Add(2 * time.Second)) // pings are read every half second
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		if pongs.Load() != 1 {
			t.Fatalf("%d pongs, want 1", pongs.Load())
		}
		wsWriterUsed(t, n, writer)
	})
}

// TestWSSViewersNeedNoGoroutines: 200 wss:// viewers on the fan-out add
// no goroutine each (their TLS records are sealed by the shard
// goroutines), where the goroutine writer adds two per viewer.
func TestWSSViewersNeedNoGoroutines(t *testing.T) {
	forWriters(t, []string{"tls", "tls-goroutines"}, func(t *testing.T, writer string) {
		{
			src := newFakeSource()
			f := src.add(t, "g")
			f.object(t, true, 1000)
			n, _ := startEdge(t, Config{Source: src, WSWriter: writer})
			before := runtime.NumGoroutine()
			const viewers = 200
			conns := make([]*viewer.Conn, viewers)
			for i := range conns {
				conns[i] = dialViewer(t, n, "g")
				for range 2 {
					next(t, conns[i]) // catalog, init
				}
				expectObject(t, conns[i], 0, 0, 1000)
			}
			f.object(t, false, 40000) // sealed as three TLS records
			for _, c := range conns {
				expectObject(t, c, 0, 1, 40000)
			}
			added := runtime.NumGoroutine() - before
			t.Logf("%s: %d goroutines added for %d viewers", writer, added, viewers)
			if writer == "tls" && added > viewers/4 {
				t.Errorf("%d goroutines added for %d wss:// viewers on the fan-out", added, viewers)
			}
			if writer == "tls-goroutines" && added < viewers {
				t.Errorf("only %d goroutines added for %d viewers with goroutines of their own: the count cannot tell", added, viewers)
			}
			wsWriterUsed(t, n, writer)
		}
	})
}

// TestPingBurstsAndLargeObjects: pings sent together, with the longest
// payload allowed, are all answered (over TLS they arrive as records
// that decrypt to more than the frame buffer holds at once), and objects
// larger than one write's sealing bound arrive whole and in order.
func TestPingBurstsAndLargeObjects(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		f := src.add(t, "big")
		f.object(t, true, 10)
		n, _ := startEdge(t, Config{Source: src, WSWriter: writer})
		ws, _, err := websocket.DefaultDialer.Dial(wsURL(n, "big"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		long := strings.Repeat("p", 125)
		var pongs atomic.Int32
		ws.SetPongHandler(func(data string) error {
			if data == long {
				pongs.Add(1)
			}
			return nil
		})
		for range 4 {
			ws.WriteControl(websocket.PingMessage, []byte(long), time.Now().Add(time.Second))
		}
		const size = 300 << 10 // over four times the 64 KiB sealed per write
		for range 3 {
			f.object(t, false, size)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		var objects int
		for objects < 4 {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("after %d objects: %v", objects, err)
			}
			h, body, err := wire.Parse(b)
			if err != nil || h.Kind != wire.KindObject {
				continue // catalog, init
			}
			if want := payload(h.Group, h.Index, int(h.Length)); !bytes.Equal(body, want) || int(h.Index) != objects {
				t.Fatalf("object %d/%d of %d bytes differs, want index %d", h.Group, h.Index, h.Length, objects)
			}
			objects++
		}
		// Pongs are handled inside ReadMessage, which returns data
		// messages only (and a timed-out read ends the connection):
		// small objects keep coming until the four pongs are in (pings
		// are read every half second, a few at a time).
		stop := make(chan struct{})
		var feeding sync.WaitGroup
		defer feeding.Wait()
		defer close(stop)
		feeding.Add(1)
		go func() {
			defer feeding.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					f.object(t, false, 10)
				}
			}
		}()
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		for pongs.Load() < 4 {
			if _, _, err := ws.ReadMessage(); err != nil {
				t.Fatalf("%d pongs, want 4: %v", pongs.Load(), err)
			}
		}
	})
}
