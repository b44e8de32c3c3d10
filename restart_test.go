package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// freeAddr returns a loopback address with a port free for network
// ("tcp" or "udp") now, for a node that must come back on the same one.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	var addr string
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	return addr
}

// logTime is when a node logged its first line with msg, zero if none.
func (p *proc) logTime(msg string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if l["msg"] == msg {
			s, _ := l["time"].(string)
			at, _ := time.Parse(time.RFC3339Nano, s)
			return at
		}
	}
	return time.Time{}
}

// TestOriginRestartSameAddress (issue 9, item 7): an origin killed with
// SIGKILL and started again on the same relay address is a new process;
// the edge must drop its connection to the dead one at once (the new
// incarnation in the registry) instead of at the QUIC idle timeout (15 s),
// so viewers resume within about a group of the publisher's return.
func TestOriginRestartSameAddress(t *testing.T) { originRestart(t, false) }

// TestOriginRestartAfterRedisLoss (issue 9, item 6): Redis restarts empty
// (the group log is gone) and then the origin restarts. Group numbers must
// still rise past the ones viewers had, so the edge's resubscription from
// the next group is served at once and no player gets older numbers.
func TestOriginRestartAfterRedisLoss(t *testing.T) { originRestart(t, true) }

func originRestart(t *testing.T, loseRedis bool) {
	testenv.RequireTool(t, "ffmpeg")
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	httpAddr, relayAddr := freeAddr(t, "tcp"), freeAddr(t, "udp")
	common := []string{"-redis-url", rds.URL(), "-cluster-token", "t0ken"}
	startOrigin := func() *proc {
		return startProc(t, bin, "origin", "origin listening", append([]string{"origin", "-listen", httpAddr,
			"-relay-listen", relayAddr, "-rtmp-listen", "127.0.0.1:0", "-node-id", "origin-a"}, common...)...)
	}
	startEdge := func(id string) *proc {
		return startProc(t, bin, id, "edge listening", append([]string{"edge", "-listen", "127.0.0.1:0",
			"-node-id", id}, common...)...)
	}
	o1 := startOrigin()
	e1 := startEdge("edge-1")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const gop = 500 * time.Millisecond
	sent := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	pub := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/a", httpAddr), sent, gop)
	testenv.WaitFor(t, 15*time.Second, "the publisher on the origin", func() bool {
		return !o1.logTime("publisher ready").IsZero()
	})
	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	w := startWatcher(wctx, &wg, "cam/a", fmt.Sprintf("ws://%s/ws/cam/a", e1.field("addr")))
	// Some groups, so that numbers starting over would be noticed.
	testenv.WaitFor(t, time.Minute, "8 groups at the viewer", func() bool { return w.keyframes() >= 8 })

	hs, _ := w.objectsSince(time.Time{})
	lastGroup := hs[len(hs)-1].Group
	killed := time.Now()
	o1.cmd.Process.Signal(syscall.SIGKILL)
	<-o1.done
	if loseRedis {
		rds.Stop()
		rds.Start()
	}
	o2 := startOrigin()
	if o2.field("incarnation") == "" || o2.field("incarnation") == o1.field("incarnation") {
		t.Errorf("restarted origin's incarnation %q, the first one's %q", o2.field("incarnation"), o1.field("incarnation"))
	}
	testenv.WaitFor(t, 15*time.Second, "the publisher back on the restarted origin", func() bool {
		return !o2.logTime("publisher ready").IsZero()
	})
	back := o2.logTime("publisher ready")
	testenv.WaitFor(t, time.Minute, "the viewer two groups past the restart", func() bool {
		hs, _ := w.objectsSince(killed)
		return len(hs) > 0 && hs[len(hs)-1].Group >= lastGroup+2 && w.keyframes() >= 10
	})

	hs, at := w.objectsSince(killed)
	var first *wire.Header
	var firstAt time.Time
	for j := range hs {
		if hs[j].Group > lastGroup {
			first, firstAt = &hs[j], at[j]
			break
		}
	}
	if first == nil {
		t.Fatalf("the viewer got nothing newer than group %d after the restart", lastGroup)
	}
	delay := firstAt.Sub(back)
	t.Logf("origin killed and restarted on %s (redis lost its data: %t): publisher back %s after the kill; viewer: last group %d before, resumed at group %d %s after the publisher; longest gap %s",
		relayAddr, loseRedis, back.Sub(killed).Round(time.Millisecond), lastGroup, first.Group,
		delay.Round(time.Millisecond), w.maxGap(killed.Add(-time.Second), firstAt).Round(time.Millisecond))
	if first.Index != 0 || first.Flags&wire.FlagKeyframe == 0 {
		t.Errorf("viewer resumed at group %d object %d, want a group start", first.Group, first.Index)
	}
	if delay > 2*gop {
		t.Errorf("viewer resumed %s after the publisher came back, want within about a group (%s)", delay.Round(time.Millisecond), gop)
	}
	if e1.count("msg", "upstream restarted; dropping the connection to its old process") == 0 {
		t.Error("edge-1 did not log dropping its connection to the dead origin")
	}
	// Group numbers never go back at the viewer.
	evs, _, err := w.snapshot()
	if err != nil {
		t.Errorf("viewer disconnected: %v", err)
	}
	var prev uint64
	for _, ev := range evs {
		if ev.Control == nil && ev.Header.Kind == wire.KindObject && ev.Header.Flags&wire.FlagKeyframe != 0 {
			if ev.Header.Group <= prev && prev != 0 {
				t.Errorf("viewer: group %d after group %d", ev.Header.Group, prev)
				break
			}
			prev = ev.Header.Group
		}
	}
	// The restarted origin's first group is above every number sent before,
	// so that a fresh edge never hands players older numbers either.
	o2.mu.Lock()
	for _, l := range o2.logs {
		if l["msg"] == "broadcast started" {
			if g, _ := l["first_group"].(float64); g <= float64(lastGroup) {
				t.Errorf("restarted origin began at group %v after groups up to %d had been sent", l["first_group"], lastGroup)
			}
		}
	}
	o2.mu.Unlock()

	stopWatch()
	wg.Wait()
	cancel()
	if err := <-pub; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("publisher: %v", err)
	}
}
