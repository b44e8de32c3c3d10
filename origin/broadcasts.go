package origin

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/wire"
)

// entry is one broadcast this origin holds. Guarded by Node.mu, except
// nextGroup, which only the current publisher's session touches.
type entry struct {
	name      string
	b         *media.Broadcast
	pub       *Session // nil while waiting for a publisher to return
	remote    string
	epoch     uint64
	nextGroup uint64
	started   time.Time
	grace     *time.Timer
	claiming  bool // Publish is asking the registry
	// What the current publisher sent, for the API's reports.
	protocol string
	bytes    atomic.Int64
	groups   atomic.Uint64
}

func (e *entry) end() {
	if e.grace != nil {
		e.grace.Stop()
	}
	if e.pub != nil {
		e.pub.cancel()
	}
	e.b.Close()
}

// Publish starts a publishing session for name: it checks the name and
// the token and makes sure nobody else is publishing it, here or on another
// origin (the registry). A broadcast whose publisher left less than Grace
// ago continues, with a new epoch and group numbers that keep rising; one
// new to this origin continues the numbers the registry's group log has.
func (n *Node) Publish(ctx context.Context, name, token, remote string) (*Session, error) {
	return n.PublishRequest(ctx, auth.Request{Broadcast: name, Token: token, Remote: remote})
}

// PublishRequest is Publish with what the protocol knows of the request
// (webhooks forward it). A grant that expires ends the session then, with
// wire.CodeTokenExpired; a grant that renames (a webhook's 3xx) publishes
// under the new name.
func (n *Node) PublishRequest(ctx context.Context, r auth.Request) (*Session, error) {
	r.Action = auth.Publish
	if err := media.ValidName(r.Broadcast); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	g, err := auth.Decide(ctx, n.cfg.Auth, r)
	if err != nil {
		return nil, err
	}
	if g.Name != "" && g.Name != r.Broadcast {
		if err := media.ValidName(g.Name); err != nil {
			return nil, wire.Errorf(wire.CodeBadGateway, "publish %q: the authoriser renamed it to an invalid name: %v", r.Broadcast, err)
		}
		n.log.Info("publish renamed by the authoriser", "from", r.Broadcast, "to", g.Name, "remote", r.Remote)
		r.Broadcast = g.Name
	}
	s, err := n.publish(ctx, r.Broadcast, r.Remote)
	if err != nil {
		auth.Done(n.cfg.Auth, r)
		return nil, err
	}
	s.req = r
	if !g.Expires.IsZero() {
		s.expiry = time.AfterFunc(time.Until(g.Expires), func() { s.endWith(auth.ExpiredError(r)) })
	}
	return s, nil
}

// publish claims name for a new session; the request is authorised.
func (n *Node) publish(ctx context.Context, name, remote string) (*Session, error) {
	if err := n.cluster.barred(ctx, name); err != nil {
		return nil, err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, wire.Errorf(wire.CodeGoingAway, "origin is shutting down")
	}
	e := n.bcasts[name]
	if e != nil && (e.pub != nil || e.claiming) {
		n.mu.Unlock()
		return nil, wire.Errorf(wire.CodeConflict, "broadcast %q already has a publisher", name)
	}
	fresh := e == nil
	if fresh {
		// Hold the name while the registry is asked, without holding
		// the lock.
		e = &entry{name: name, b: media.New(name, n.cacheLimits()), started: time.Now(), claiming: true}
		n.bcasts[name] = e
	} else if e.grace != nil {
		e.grace.Stop()
		e.grace = nil
	}
	n.mu.Unlock()
	if fresh {
		if err := n.cluster.claim(ctx, e); err != nil {
			n.mu.Lock()
			if n.bcasts[name] == e {
				delete(n.bcasts, name)
			}
			n.mu.Unlock()
			e.b.Close()
			return nil, err
		}
		n.log.Info("broadcast started", "broadcast", name, "remote", remote, "epoch", e.epoch+1, "first_group", e.nextGroup)
		n.rec.Live(e.b)
		n.restream.Live(e.b)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e.claiming = false
	if n.closed || n.bcasts[name] != e {
		e.b.Close()
		return nil, wire.Errorf(wire.CodeGoingAway, "origin is shutting down")
	}
	e.epoch++
	e.remote = remote
	e.protocol = "websocket"
	e.groups.Store(0)
	s := newSession(n, e)
	e.pub = s
	n.metrics.publishers.Inc()
	if !fresh {
		go n.cluster.published(name, true, nil)
	}
	return s, nil
}

// held lists the broadcasts this origin holds, for the registry heartbeat.
func (n *Node) held(relayAddr, inc string) []registry.Broadcast {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]registry.Broadcast, 0, len(n.bcasts))
	for _, e := range n.bcasts {
		if e.claiming {
			continue
		}
		out = append(out, registry.Broadcast{Name: e.name, Origin: n.cfg.Peer.ID(), Relay: relayAddr, Incarnation: inc, Epoch: e.epoch, Started: e.started, Publishing: e.pub != nil})
	}
	return out
}

// endMoved ends a broadcast another origin took over: its publisher is
// told, and edges reading it here get ENDED and look it up again.
func (n *Node) endMoved(name string) {
	n.mu.Lock()
	e := n.bcasts[name]
	if e != nil {
		delete(n.bcasts, name)
	}
	n.mu.Unlock()
	if e != nil {
		if e.pub != nil {
			e.pub.moved = true
		}
		e.end()
	}
}

// left is called by a session when its publisher is gone. The broadcast
// waits Grace for a new publisher, then ends.
func (n *Node) left(e *entry, s *Session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e.pub != s {
		return
	}
	e.pub = nil
	n.metrics.publishers.Dec()
	if n.bcasts[e.name] != e {
		return // the node is closing, or the broadcast moved
	}
	go n.cluster.published(e.name, false, nil)
	e.grace = time.AfterFunc(n.cfg.Grace, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if e.pub != nil || n.bcasts[e.name] != e {
			return
		}
		delete(n.bcasts, e.name)
		e.b.Close()
		n.log.Info("broadcast ended", "broadcast", e.name)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
			defer cancel()
			n.cluster.reg.Release(ctx, e.name)
		}()
	})
}

// Lookup returns the live broadcast name, if this origin holds it.
func (n *Node) Lookup(name string) (*media.Broadcast, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.bcasts[name]
	if !ok {
		return nil, false
	}
	return e.b, true
}

// BroadcastInfo is one row of GET /broadcasts.
type BroadcastInfo struct {
	Name       string        `json:"name"`
	Publishing bool          `json:"publishing"`
	Remote     string        `json:"remote,omitempty"`
	Epoch      uint64        `json:"epoch"`
	Started    time.Time     `json:"started"`
	Catalog    *wire.Catalog `json:"catalog,omitempty"`
	CacheBytes int64         `json:"cacheBytes"`
}

// Broadcasts lists the broadcasts this origin holds, by name.
func (n *Node) Broadcasts() []BroadcastInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]BroadcastInfo, 0, len(n.bcasts))
	for _, e := range n.bcasts {
		bi := BroadcastInfo{Name: e.name, Publishing: e.pub != nil, Remote: e.remote, Epoch: e.epoch, Started: e.started, CacheBytes: e.b.Bytes()}
		if c := e.b.Catalog(); c != nil {
			bi.Catalog = &c.Catalog
		}
		out = append(out, bi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (n *Node) serveBroadcasts(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(n.Broadcasts())
}
