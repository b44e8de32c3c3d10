package edge

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// The report counts viewers per broadcast and transport; a kick of one
// broadcast closes its WebSocket viewers (either writer) and WebTransport
// sessions with 4410, leaves the other broadcast's viewers alone, and
// lets a new viewer in.
func TestKickClosesTheBroadcastsViewersOnly(t *testing.T) {
	// Plain ws:// only: its WebTransport viewer dials with the
	// development certificate's hashes, which a -tls-cert edge has not.
	forWriters(t, []string{"events", "goroutines"}, func(t *testing.T, writer string) {
		src := newFakeSource()
		k, other := src.add(t, "show/k"), src.add(t, "other")
		k.object(t, true, 10)
		other.object(t, true, 10)
		n, logs := startWTEdge(t, Config{Source: src, WSWriter: writer})
		a, b, o := dialViewer(t, n, "show/k"), dialViewer(t, n, "show/k"), dialViewer(t, n, "other")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		wt, err := watchWT(ctx, n, certHashes(t, n).Hashes, "show/k", "")
		if err != nil {
			t.Fatal(err)
		}
		defer wt.close()
		want := map[string]map[string]int{"show/k": {"ws": 2, "wt": 1}, "other": {"ws": 1}}
		testenv.WaitFor(t, 5*time.Second, "the viewers counted", func() bool {
			return reflect.DeepEqual(n.report("http://x").Viewers, want)
		})
		if rep := n.report("http://x"); rep.Node.Viewers != 4 || rep.Node.Broadcasts != 2 || rep.Node.Role != "edge" {
			t.Fatalf("report node = %+v", rep.Node)
		}

		n.kickViewers("show/k")
		expectClosed(t, a, wire.CodeRemoved, "operator")
		expectClosed(t, b, wire.CodeRemoved, "operator")
		_, err = wt.sess.AcceptStream(ctx)
		var se *webtransport.SessionError
		if !errors.As(err, &se) || se.ErrorCode != webtransport.SessionErrorCode(wire.CodeRemoved) {
			t.Fatalf("WebTransport session ended with %v, want 4410", err)
		}
		// The other broadcast plays on; a new viewer of show/k is let in.
		for range 3 {
			next(t, o)
		}
		other.object(t, false, 10)
		expectObject(t, o, other.group, other.index, 10)
		c := dialViewer(t, n, "show/k")
		for range 3 {
			next(t, c)
		}
		testenv.WaitFor(t, 5*time.Second, "the kicked viewers counted out", func() bool {
			return reflect.DeepEqual(n.report("http://x").Viewers, map[string]map[string]int{"show/k": {"ws": 1}, "other": {"ws": 1}})
		})
		if len(logs.Lines("viewers kicked by an operator")) != 1 {
			t.Error("the kick was not logged")
		}
	})
}
