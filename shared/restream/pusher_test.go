package restream

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// liveClip is a broadcast holding the demo clip's first group, live.
func liveClip(t *testing.T, name string) *media.Broadcast {
	t.Helper()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	b := media.New(name, media.Limits{MaxGroups: 4, MaxBytes: 1 << 30, MaxAge: time.Hour})
	p := c.Init.PrimaryTrak()
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: name, Epoch: 1, Tracks: []wire.TrackInfo{{ID: 0, Kind: c.Init.Kind(), Codec: c.Init.Codec(), Timescale: p.Timescale}}}, [][]byte{c.Init.Data})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCatalog(cat)
	now := time.Now().UnixNano()
	for i, ch := range c.Chunks {
		if i > 0 && ch.Keyframe {
			break
		}
		h := wire.Header{Kind: wire.KindObject, Group: 1, Index: uint32(i), DecodeTime: ch.DecodeTime}
		if i == 0 {
			h.Flags |= wire.FlagKeyframe
		}
		if err := b.Append(media.NewObject(h, ch.Data, now)); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func statusOf(m *Manager, id string) Status {
	for _, s := range m.List() {
		if s.ID == id {
			return s
		}
	}
	return Status{}
}

// A server that hangs up at once is a refusal: backed off, given up after
// MaxRefusals. An address nobody listens on is a network failure: retried
// with a growing backoff, until removed. Neither logs the key.
func TestPusherTellsRefusalsFromNetworkFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gone, _ := net.Listen("tcp", "127.0.0.1:0")
	goneAddr := gone.Addr().String()
	gone.Close()

	logs := &testenv.Logs{}
	m, err := New(Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond,
		RefusedBackoff: 50 * time.Millisecond, MaxRefusals: 2, Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := liveClip(t, "cam/a")
	m.Live(b)

	refused, err := m.Add("cam/a", "rtmp://"+ln.Addr().String()+"/live/key-hangup-0001")
	if err != nil {
		t.Fatal(err)
	}
	unreachable, err := m.Add("cam/a", "rtmp://"+goneAddr+"/live/key-gone-0002")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add("cam/a", "rtmp://"+goneAddr+"/live/key-gone-0002"); err != ErrExists {
		t.Errorf("the same target again: %v, want ErrExists", err)
	}
	if _, err := m.Add("cam/b", "rtmp://"+goneAddr+"/live/key-gone-0002"); err != ErrNotLive {
		t.Errorf("a broadcast not live: %v, want ErrNotLive", err)
	}

	var st Status
	testenv.WaitFor(t, 10*time.Second, "the hang-up target given up", func() bool {
		st = statusOf(m, refused.ID)
		return !st.Active
	})
	if st.State != StateRefused || st.Attempts != 2 || !strings.Contains(st.LastError, "closed the connection before accepting the publish") ||
		!strings.Contains(st.LastError, "gave up after 2 refusals") {
		t.Errorf("hang-up target: %+v", st)
	}
	testenv.WaitFor(t, 10*time.Second, "4 attempts at the unreachable target", func() bool {
		st = statusOf(m, unreachable.ID)
		return st.Attempts >= 4
	})
	if st.State != StateReconnecting || !st.Active || st.Refusals != 0 || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("unreachable target: %+v", st)
	}
	if st, ok := m.Remove("cam/a", unreachable.ID); !ok || st.State != StateStopped || st.Active {
		t.Errorf("removed: %v %+v", ok, st)
	}
	if _, ok := m.Remove("cam/a", unreachable.ID); ok {
		t.Error("removed twice")
	}
	if lines := logs.Lines("key-"); len(lines) != 0 {
		t.Errorf("logged a key: %q", lines)
	}
}

// A target of a broadcast that ends stops with it.
func TestPusherStopsWithItsBroadcast(t *testing.T) {
	m, err := New(Config{MinBackoff: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := liveClip(t, "cam/a")
	m.Live(b)
	st, err := m.Add("cam/a", "rtmp://127.0.0.1:1/live/k")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	testenv.WaitFor(t, 10*time.Second, "the target stopped", func() bool {
		s := statusOf(m, st.ID)
		return !s.Active && s.State == StateStopped && s.LastError == "the broadcast ended"
	})
}
