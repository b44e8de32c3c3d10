package edge

import (
	"context"
	"runtime"
	"time"

	"github.com/quiccast/quiccast/shared/media"
)

// upstream is the edge's one subscription to a broadcast, shared by all of
// its viewers. Its fields other than ready are set before ready closes;
// viewers and linger are guarded by Node.mu.
type upstream struct {
	name    string
	ready   chan struct{}
	b       *media.Broadcast
	release func()
	err     error
	viewers int
	linger  *time.Timer
	fan     *fanout // its plain-TCP WebSocket viewers, made on first use
}

func (u *upstream) stop() {
	if u.linger != nil {
		u.linger.Stop()
	}
	if u.fan != nil {
		u.fan.cancel() // its viewers are gone or going; the shards exit
	}
	if u.release != nil {
		u.release()
	}
}

// attach returns the broadcast name for one more viewer, subscribing
// upstream only if no other viewer already did.
func (n *Node) attach(ctx context.Context, name string) (*upstream, error) {
	n.mu.Lock()
	u := n.ups[name]
	if u != nil {
		select {
		case <-u.ready:
			if u.err != nil || u.b.Closed() {
				delete(n.ups, name)
				u.stop()
				u = nil
			}
		default:
		}
	}
	if u == nil {
		u = &upstream{name: name, ready: make(chan struct{})}
		n.ups[name] = u
		n.mu.Unlock()
		// The subscription belongs to the node, not to this viewer.
		u.b, u.release, u.err = n.cfg.Source.Subscribe(n.ctx, name)
		close(u.ready)
		n.mu.Lock()
		if u.err != nil {
			if n.ups[name] == u {
				delete(n.ups, name)
			}
			n.mu.Unlock()
			return nil, u.err
		}
		n.metrics.subscribes.Inc()
		n.log.Info("upstream subscribed", "broadcast", name)
	} else {
		n.mu.Unlock()
		select {
		case <-u.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if u.err != nil {
			return nil, u.err
		}
		n.mu.Lock()
	}
	u.viewers++
	if u.linger != nil {
		u.linger.Stop()
		u.linger = nil
	}
	n.mu.Unlock()
	return u, nil
}

// fanout returns u's fan-out, making it on first use.
func (n *Node) fanout(u *upstream) *fanout {
	n.mu.Lock()
	defer n.mu.Unlock()
	if u.fan == nil {
		u.fan = newFanout(n, u.b, runtime.GOMAXPROCS(0))
	}
	return u.fan
}

// detach lets go of one viewer; the last one starts the linger timer.
func (n *Node) detach(u *upstream) {
	n.mu.Lock()
	defer n.mu.Unlock()
	u.viewers--
	if u.viewers > 0 || n.closed {
		return
	}
	u.linger = time.AfterFunc(n.cfg.Linger, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if u.viewers > 0 || n.ups[u.name] != u {
			return
		}
		delete(n.ups, u.name)
		if u.release != nil {
			u.release()
		}
		n.log.Info("upstream released", "broadcast", u.name)
	})
}
