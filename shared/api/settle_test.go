package api_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/restream"
)

// lateNode is a recorder and restreamer that learn of a broadcast only
// at live, as an origin's do a moment after its registry claim.
type lateNode struct {
	mu   sync.Mutex
	name string
	live time.Time
}

func (l *lateNode) isLive(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return name == l.name && time.Now().After(l.live)
}

// lateRecorder and lateRestreamer are its two faces.
type lateRecorder struct{ *lateNode }
type lateRestreamer struct{ *lateNode }

func (l lateRecorder) Start(name string) error {
	if !l.isLive(name) {
		return record.ErrNotLive
	}
	return nil
}
func (l lateRecorder) Stop(string) bool                             { return false }
func (l lateRecorder) List() []record.Status                        { return nil }
func (l lateRestreamer) Remove(_, _ string) (restream.Status, bool) { return restream.Status{}, false }
func (l lateRestreamer) List() []restream.Status                    { return nil }
func (l lateRestreamer) Add(name, _ string) (restream.Status, error) {
	if !l.isLive(name) {
		return restream.Status{}, restream.ErrNotLive
	}
	return restream.Status{Broadcast: name, ID: "e797d52a0e1d", URL: "rtmp://127.0.0.1:1/live/REDACTED", Source: "api",
		Active: true, State: "connecting", Since: time.Now()}, nil
}

// A recording or restream asked for in the moment between this node's
// registry claim and its recorder and restreamer learning of the
// broadcast is carried out here (201), not refused with 404; a broadcast
// another node holds goes to it at once (202).
func TestRequestsInABroadcastsFirstMomentWaitForTheHolder(t *testing.T) {
	ctx := t.Context()
	open := openRegistries(t)
	reg, other := open("origin-1"), open("origin-2")
	a := api.New(reg, nil)
	late := &lateNode{}
	a.SetRecorder(lateRecorder{late})
	a.SetRestreamer(lateRestreamer{late})
	mux := http.NewServeMux()
	a.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := client{t: t, url: srv.URL}

	for _, req := range []struct{ path, body string }{
		{"/recordings/{name}", ""},
		{"/restreams/{name}", `{"url":"rtmp://127.0.0.1:1/live/key"}`},
	} {
		name := "cam/first" + req.path[1:5]
		if _, err := reg.Claim(ctx, registry.Broadcast{Name: name, Relay: "127.0.0.1:1", Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		late.mu.Lock()
		late.name, late.live = name, time.Now().Add(300*time.Millisecond)
		late.mu.Unlock()
		if st, body := c.do("POST", req.path, name, req.body); st != http.StatusCreated {
			t.Errorf("POST %s in the first moment: %d %s, want 201", req.path, st, body)
		}
		// Held elsewhere: an event to the holder, at once.
		elsewhere := name + "x"
		if _, err := other.Claim(ctx, registry.Broadcast{Name: elsewhere, Relay: "127.0.0.1:2", Publishing: true}, false); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if st, body := c.do("POST", req.path, elsewhere, req.body); st != http.StatusAccepted || time.Since(start) > time.Second {
			t.Errorf("POST %s held elsewhere: %d %s after %s, want 202 at once", req.path, st, body, time.Since(start))
		}
	}
}
