package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// startOrigin runs an origin on a free loopback port until the test ends.
func startOrigin(t *testing.T, cfg Config) (*Node, *testenv.Logs) {
	t.Helper()
	logs := &testenv.Logs{}
	cfg.Listen, cfg.RelayListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = logs.Logger()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, n.Run)
	return n, logs
}

func demoClip(t *testing.T) *clip.Clip {
	t.Helper()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dialPublish(t *testing.T, n *Node, path string, h http.Header) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/publish/%s", n.Addr(), path), h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClose reads until the origin closes and checks code and reason.
func expectClose(t *testing.T, c *websocket.Conn, code wire.Code, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %d %q, got %v", code, reason, err)
		}
		if wire.Code(ce.Code) != code || !strings.Contains(ce.Text, reason) {
			t.Fatalf("closed with %d %q, want %d containing %q", ce.Code, ce.Text, code, reason)
		}
		return
	}
}

// expectReady reads the "ready" message of an accepted publisher.
func expectReady(t *testing.T, c *websocket.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage {
		t.Fatalf("want the ready message, got %v %v", typ, err)
	}
	m, err := wire.ParseMessage(b)
	if err != nil || m.Type != wire.MsgReady {
		t.Fatalf("want ready, got %s (%v)", b, err)
	}
	c.SetReadDeadline(time.Time{})
}

func send(c *websocket.Conn, msgs ...[]byte) {
	for _, m := range msgs {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if c.WriteMessage(websocket.BinaryMessage, m) != nil {
			return // the origin may already have closed; expectClose says why
		}
	}
}

// control publishes the demo clip in-process on name and reads it like a
// viewer, so a test can check that it never stalled or skipped.
type control struct {
	mu      sync.Mutex
	objects int
	skips   int
	gaps    int
	err     error
}

func startControl(t *testing.T, n *Node, name string) *control {
	t.Helper()
	s, err := n.Publish(context.Background(), name, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &control{}
	var wg sync.WaitGroup
	wg.Add(2)
	cl := demoClip(t)
	go func() { defer wg.Done(); cl.Loop(ctx, s); s.Close(nil) }()
	go func() {
		defer wg.Done()
		cur := s.Broadcast().NewCursor(media.CursorConfig{})
		var last uint64
		first := true
		for {
			items, err := cur.Next(ctx)
			c.mu.Lock()
			for _, it := range items {
				switch {
				case it.Skip != nil:
					c.skips++
				case it.Object != nil && it.Object.Flags&wire.FlagKeyframe != 0:
					if !first && it.Object.Group != last+1 {
						c.gaps++
					}
					first, last = false, it.Object.Group
					c.objects++
				case it.Object != nil:
					c.objects++
				}
			}
			if err != nil && ctx.Err() == nil {
				c.err = err
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// check asserts the control broadcast flowed at its pace without skips.
func (c *control) check(t *testing.T, since time.Time) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	// The clip has 30 objects per second; allow for start-up.
	want := int(time.Since(since).Seconds()*30) - 45
	if c.err != nil || c.skips != 0 || c.gaps != 0 || c.objects < want {
		t.Fatalf("control broadcast disturbed: %d objects (want >= %d), %d skips, %d gaps, err %v", c.objects, want, c.skips, c.gaps, c.err)
	}
}

func TestBadPublishersGetClearErrorsAndDoNotDisturbOthers(t *testing.T) {
	n, logs := startOrigin(t, Config{MaxMessage: 256 << 10, MaxBox: 1 << 20})
	start := time.Now()
	ctrl := startControl(t, n, "control")
	cl := demoClip(t)
	init, c0, c1 := cl.Init.Data, cl.Chunks[0].Data, cl.Chunks[1].Data
	moof := c0[:int(c0[0])<<24|int(c0[1])<<16|int(c0[2])<<8|int(c0[3])]
	badCodec := bytes.Replace(init, []byte("avc1"), []byte("avc2"), 1)
	hugeBox := []byte{0x06, 0x40, 0x00, 0x00, 'm', 'd', 'a', 't'} // 100 MiB
	bigFree := make([]byte, 256<<10+1)                            // one byte over MaxMessage
	copy(bigFree, []byte{0x00, 0x08, 0x00, 0x00, 'f', 'r', 'e', 'e'})

	for _, ca := range []struct {
		name   string
		path   string
		msgs   [][]byte
		text   bool
		code   wire.Code
		reason string
	}{
		{name: "bad broadcast name", path: "bad%20name", code: wire.CodeBadRequest, reason: "bad broadcast name"},
		{name: "text message", path: "t1", text: true, code: wire.CodeBadRequest, reason: "binary"},
		{name: "not mp4", path: "t2", msgs: [][]byte{[]byte("\x00\x00\x00\x10\x01\x02\x03\x04garbage!")}, code: wire.CodeInvalidMedia, reason: "not a fragmented MP4"},
		{name: "media before init", path: "t3", msgs: [][]byte{c0}, code: wire.CodeInvalidMedia, reason: "before the init segment"},
		{name: "moof without mdat", path: "t4", msgs: [][]byte{init, moof, moof}, code: wire.CodeInvalidMedia, reason: "moof not followed by its mdat"},
		{name: "box over the size limit", path: "t5", msgs: [][]byte{init, hugeBox}, code: wire.CodeTooLarge, reason: "box over the size limit"},
		{name: "message over the limit", path: "t6", msgs: [][]byte{bigFree}, code: wire.CodeTooLarge, reason: "message over 262144 bytes"},
		{name: "decode time going back", path: "t7", msgs: [][]byte{init, c0, c1, c1}, code: wire.CodeInvalidMedia, reason: "decode time did not rise"},
		{name: "unsupported codec", path: "t8", msgs: [][]byte{badCodec}, code: wire.CodeInvalidMedia, reason: `unsupported codec: video sample entry "avc2"`},
		{name: "init changed mid-stream", path: "t9", msgs: [][]byte{init, c0, badCodec}, code: wire.CodeInvalidMedia, reason: "init segment changed"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			before := testenv.Metric(t, n.Registry(), "quiccast_origin_publish_errors_total", "code", fmt.Sprint(uint16(ca.code)))
			c := dialPublish(t, n, ca.path, nil)
			if ca.text {
				c.WriteMessage(websocket.TextMessage, []byte("hello"))
			}
			send(c, ca.msgs...)
			expectClose(t, c, ca.code, ca.reason)
			testenv.WaitFor(t, 2*time.Second, "the error metric", func() bool {
				return testenv.Metric(t, n.Registry(), "quiccast_origin_publish_errors_total", "code", fmt.Sprint(uint16(ca.code))) == max(before, 0)+1
			})
			// The text log quotes the reason; look for its unquoted start.
			logged, _, _ := strings.Cut(ca.reason, `"`)
			if len(logs.Lines("level=WARN", logged)) == 0 {
				t.Errorf("no warning logged with %q", logged)
			}
		})
	}
	ctrl.check(t, start)
	if _, ok := n.Lookup("control"); !ok {
		t.Fatal("control broadcast gone")
	}
}

func TestSecondPublisherIsRefusedAndFirstContinues(t *testing.T) {
	n, _ := startOrigin(t, Config{})
	cl := demoClip(t)
	first := dialPublish(t, n, "live/one", nil)
	expectReady(t, first)
	send(first, cl.Init.Data, cl.Chunks[0].Data)
	second := dialPublish(t, n, "live/one", nil)
	expectClose(t, second, wire.CodeConflict, `broadcast "live/one" already has a publisher`)
	send(first, cl.Chunks[1].Data, cl.Chunks[2].Data)
	b, _ := n.Lookup("live/one")
	testenv.WaitFor(t, 2*time.Second, "the first publisher's objects", func() bool {
		g := b.Latest(0)
		if g == nil {
			return false
		}
		objs, _ := b.Objects(g, 0, nil)
		return len(objs) == 3
	})
}

func TestPublishTokens(t *testing.T) {
	n, _ := startOrigin(t, Config{PublishTokens: "s3cret, other"})
	expectClose(t, dialPublish(t, n, "a", nil), wire.CodeUnauthorized, `publish "a" needs a token`)
	expectClose(t, dialPublish(t, n, "b?token=wrong", nil), wire.CodeUnauthorized, `publish "b": token not accepted`)
	expectReady(t, dialPublish(t, n, "c?token=s3cret", nil))
	expectReady(t, dialPublish(t, n, "d", http.Header{"Authorization": {"Bearer other"}}))
}

func TestPublisherOverTheRateLimitIsDropped(t *testing.T) {
	n, _ := startOrigin(t, Config{MaxRate: 100_000})
	cl := demoClip(t)
	c := dialPublish(t, n, "fast", nil)
	expectReady(t, c)
	go func() {
		send(c, cl.Init.Data)
		for _, ch := range cl.Chunks { // 6.4 s of media at once
			send(c, ch.Data)
		}
	}()
	expectClose(t, c, wire.CodeRateLimited, "more than 100000 bytes per second")
}

func TestIdlePublisherIsDropped(t *testing.T) {
	n, _ := startOrigin(t, Config{IdleTimeout: 300 * time.Millisecond, Grace: 200 * time.Millisecond})
	c := dialPublish(t, n, "idle", nil)
	expectReady(t, c)
	send(c, demoClip(t).Init.Data)
	expectClose(t, c, wire.CodeTimeout, "no data for 300ms")
	// After the grace period the broadcast ends.
	testenv.WaitFor(t, 2*time.Second, "the broadcast to end", func() bool {
		_, ok := n.Lookup("idle")
		return !ok
	})
}

func TestRepublishWithinGraceContinuesGroupNumbers(t *testing.T) {
	n, _ := startOrigin(t, Config{Grace: 5 * time.Second})
	cl := demoClip(t)
	publishGroups := func() {
		c := dialPublish(t, n, "again", nil)
		expectReady(t, c)
		send(c, cl.Init.Data)
		for _, ch := range cl.Chunks[:65] { // groups at chunks 0, 32, 64
			send(c, ch.Data)
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.ReadMessage() // wait for the origin's close
	}
	publishGroups()
	b, ok := n.Lookup("again")
	if !ok {
		t.Fatal("broadcast gone after its publisher left within the grace period")
	}
	// A broadcast starts at the clock (groupFloor), then counts up.
	first := b.Groups(0)[0].Seq
	testenv.WaitFor(t, 2*time.Second, "group 2", func() bool { g := b.Latest(0); return g != nil && g.Seq == first+2 })
	publishGroups()
	testenv.WaitFor(t, 2*time.Second, "group 5", func() bool { g := b.Latest(0); return g != nil && g.Seq == first+5 })
	gs := b.Groups(0)
	for i, g := range gs {
		if g.Seq != first+uint64(i) {
			t.Fatalf("group %d has sequence %d, want %d", i, g.Seq, first+uint64(i))
		}
	}
	if gs[3].Catalog.Epoch != gs[2].Catalog.Epoch+1 {
		t.Fatalf("epochs %d, %d; want the second one higher by one", gs[2].Catalog.Epoch, gs[3].Catalog.Epoch)
	}
	objs, done := b.Objects(gs[3], 0, nil)
	if !done || objs[0].Flags&wire.FlagDiscontinuity == 0 {
		t.Fatalf("first object of epoch 2 lacks the discontinuity flag (group done %v)", done)
	}
}

// TestDroppedPublisherIsClosedAtOnce drops publishers that are sending
// at their pace, at varied moments: each must be closed with the drop's
// code at once, not after the idle timeout (a read that renewed its
// deadline just after the drop set it used to wait that long).
func TestDroppedPublisherIsClosedAtOnce(t *testing.T) {
	n, _ := startOrigin(t, Config{IdleTimeout: 30 * time.Second})
	cl := demoClip(t)
	for i := range 20 {
		name := fmt.Sprintf("drop/%d", i)
		c := dialPublish(t, n, name, nil)
		expectReady(t, c)
		stop := make(chan struct{})
		sent := make(chan int, 1)
		go func() {
			send(c, cl.Init.Data)
			k := 0
			defer func() { sent <- k }()
			for ; k < len(cl.Chunks); k++ { // 6.4 s at the clip's pace
				select {
				case <-stop:
					return
				case <-time.After(33 * time.Millisecond):
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if c.WriteMessage(websocket.BinaryMessage, cl.Chunks[k].Data) != nil {
					return
				}
			}
		}()
		testenv.WaitFor(t, 5*time.Second, name+" publishing", func() bool {
			b, ok := n.Lookup(name)
			return ok && b.Latest(0) != nil
		})
		time.Sleep(time.Duration(i*7) * time.Millisecond) // varied moments within the 33 ms send loop
		start := time.Now()
		n.dropPublisher(name, 0, "test")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		for err == nil {
			_, _, err = c.ReadMessage()
		}
		close(stop)
		<-sent
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || wire.Code(ce.Code) != wire.CodeRemoved {
			t.Fatalf("%s: drop ended the publisher with %v, want close %d", name, err, wire.CodeRemoved)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: closed %s after the drop", name, d)
		}
	}
}
