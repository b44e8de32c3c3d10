package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// registryTimeout bounds each registry call made on a publisher's behalf.
const registryTimeout = 2 * time.Second

// cluster is an origin's part in the cluster: the relay listener edges
// pull from, and the registry it announces its broadcasts and groups in.
type cluster struct {
	n         *Node
	reg       *registry.Registry
	ownReg    bool // opened here, closed here
	srv       *relay.Server
	ln        *quic.Listener
	advertise string
	inc       string // this run of the process (relay.NewIncarnation)
	groups    chan loggedGroup
	reporter  *api.Reporter
	// The last report's byte counts, for bitrates (the reporter's).
	lastBytes  map[*entry]int64
	lastReport time.Time
	ctx        context.Context // ends the goroutines run starts
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

type loggedGroup struct {
	name string
	g    registry.Group
}

func newCluster(n *Node) (*cluster, error) {
	c := &cluster{n: n, inc: relay.NewIncarnation(), groups: make(chan loggedGroup, 4096)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cfg := &n.cfg
	var err error
	if c.reg = cfg.Registry; c.reg == nil {
		ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
		c.reg, err = registry.Open(ctx, registry.Options{URL: cfg.RedisURL, TLS: cfg.RedisTLS, NodeID: cfg.Peer.ID(), Logger: n.log})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err) // err says "registry: …"
		}
		c.ownReg = true
	}
	host, _, err := net.SplitHostPort(cfg.RelayListen)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("origin: -relay-listen %q: %w", cfg.RelayListen, err)
	}
	if err := cfg.Peer.CheckListen("-relay-listen", cfg.RelayListen); err != nil {
		c.close()
		return nil, fmt.Errorf("origin: %w", err)
	}
	if cfg.Peer.Exposed(cfg.RelayListen) {
		n.log.Warn("relay listener open to anyone who can reach it (-relay-insecure): it serves every broadcast without a token", "relay", cfg.RelayListen)
	}
	tc, err := relay.ServerTLS(cfg.Peer.TLS, []string{host, "localhost", "127.0.0.1"})
	if err != nil {
		c.close()
		return nil, err
	}
	if c.ln, err = quic.ListenAddr(cfg.RelayListen, tc, relay.ServerQUICConfig()); err != nil {
		c.close()
		return nil, fmt.Errorf("origin: relay listen %s: %w", cfg.RelayListen, err)
	}
	c.advertise = cfg.RelayAdvertise
	if c.advertise == "" {
		c.advertise = advertised(c.ln.Addr())
	}
	c.srv = relay.NewServer(relay.ServerConfig{
		Node: cfg.Peer.ID(), Incarnation: c.inc, Action: auth.Relay, Auth: cfg.Auth, Logger: n.log,
		Lookup: func(_ context.Context, name string) (*media.Broadcast, func(), error) {
			b, ok := n.Lookup(name)
			if !ok {
				return nil, nil, wire.Errorf(wire.CodeNotFound, "origin %s has no broadcast %q", cfg.Peer.ID(), name)
			}
			return b, func() {}, nil
		},
	})
	return c, nil
}

// advertised turns a listen address into one other hosts can dial: an
// unspecified host becomes this host's name.
func advertised(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

func (c *cluster) run() {
	ctx := c.ctx
	c.wg.Add(4)
	go func() { defer c.wg.Done(); c.srv.Serve(ctx, c.ln) }()
	go func() { defer c.wg.Done(); c.follow(ctx) }()
	c.startReports()
	go func() { defer c.wg.Done(); c.heartbeat(ctx) }()
	go func() { defer c.wg.Done(); c.logGroups(ctx) }()
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	c.reg.PublishEvent(rctx, registry.Event{Type: registry.EventNodeUp, Relay: c.advertise, Incarnation: c.inc})
	cancel()
}

// drain tells edges to move and the registry that this node is going.
func (c *cluster) drain(held []string) {
	c.srv.GoAway("")
	ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
	defer cancel()
	c.reg.PublishEvent(ctx, registry.Event{Type: registry.EventNodeDraining, Relay: c.advertise, Incarnation: c.inc})
	for _, name := range held {
		c.reg.Release(ctx, name)
	}
}

func (c *cluster) close() {
	c.cancel()
	c.reporter.Stop()
	if c.ln != nil {
		c.ln.Close()
	}
	c.wg.Wait()
	if c.ownReg && c.reg != nil {
		c.reg.Close()
	}
}

// claim records this origin as the holder of e's broadcast and works out
// where its group numbers and epochs continue. A holder that is alive and
// publishing keeps the broadcast (CodeConflict); a dead one (its relay does
// not answer) is taken over.
func (c *cluster) claim(ctx context.Context, e *entry) error {
	log := c.n.log.With("broadcast", e.name)
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	b := registry.Broadcast{Name: e.name, Origin: c.n.cfg.Peer.ID(), Relay: c.advertise, Incarnation: c.inc, Epoch: 1, Started: e.started, Publishing: true}
	last, lerr := c.reg.LastGroup(ctx, e.name)
	prev, err := c.reg.Claim(ctx, b, false)
	var taken *registry.TakenError
	if errors.As(err, &taken) {
		if c.alive(ctx, taken.Holder.Relay) {
			return wire.Errorf(wire.CodeConflict, "broadcast %q is being published to origin %s", e.name, taken.Holder.Origin)
		}
		log.Warn("taking over a broadcast from an origin that does not answer", "holder", taken.Holder.Origin, "relay", taken.Holder.Relay)
		prev, err = c.reg.Claim(ctx, b, true)
	}
	now := time.Now()
	e.nextGroup, e.epoch = groupFloor(now), epochFloor(now)
	if err != nil || lerr != nil {
		// The heartbeat claims the key once Redis is back.
		log.Warn("registry unavailable: group numbers continue from the clock", "err", errors.Join(err, lerr))
		return nil
	}
	if prev != nil {
		e.epoch = max(e.epoch, prev.Epoch)
	}
	if last != nil {
		// The group that was open when the last origin stopped may
		// never have been logged: skip its number.
		e.nextGroup = max(e.nextGroup, last.Seq+2)
		e.epoch = max(e.epoch, last.Epoch)
	}
	return nil
}

// groupFloor is the least first group number of a broadcast an origin
// takes up: quarter seconds since groupClockStart. Numbers handed out
// before, here or by an origin before this one, rose by one per group from
// a clock reading of their own, and a group lasts at least a quarter second
// (a keyframe interval; audio groups last a second), so they are below the
// clock now: numbers keep rising across origin restarts and moves even when
// Redis lost the group log or does not answer. The unit and the start keep
// numbers below 2^31 until 2043, as some HLS clients parse
// EXT-X-MEDIA-SEQUENCE (gohlslib: 31 bits), and exact in JavaScript.
func groupFloor(now time.Time) uint64 {
	if now.Before(groupClockStart) {
		return 0
	}
	return uint64(now.Sub(groupClockStart) / groupClockUnit)
}

var groupClockStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const groupClockUnit = 250 * time.Millisecond

// epochFloor is the least epoch of a broadcast an origin takes up: the wall
// clock in milliseconds (an epoch is a publisher session, which lasts
// longer), so epochs rise without the registry's memory too.
func epochFloor(now time.Time) uint64 { return uint64(now.UnixMilli()) }

// alive reports whether a relay address answers a HELLO.
func (c *cluster) alive(ctx context.Context, addr string) bool {
	if addr == "" || addr == c.advertise {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	tc, err := relay.ClientTLS(c.n.cfg.Peer.TLS)
	if err != nil {
		return false
	}
	cl, err := relay.Dial(ctx, addr, relay.ClientConfig{Node: c.n.cfg.Peer.ID(), Token: c.n.cfg.Peer.Token, TLS: tc, Timeout: 500 * time.Millisecond, Logger: c.n.log})
	if err != nil {
		return false
	}
	cl.Close()
	return true
}

// published tells the registry a publisher (re)started or left.
func (c *cluster) published(name string, publishing bool, cat *wire.Catalog) {
	var raw json.RawMessage
	if cat != nil {
		raw, _ = json.Marshal(cat)
	}
	ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
	defer cancel()
	if err := c.reg.SetPublishing(ctx, name, publishing, raw); err != nil {
		c.n.log.Warn("registry: publishing flag not updated", "broadcast", name, "err", err)
	}
}

// logGroup queues a finished group for the registry's group log without
// ever blocking ingest.
func (c *cluster) logGroup(name string, g registry.Group) {
	select {
	case c.groups <- loggedGroup{name, g}:
	default:
		c.n.metrics.groupLogDropped.Inc()
	}
}

// logGroups writes queued groups to the registry in order. A write that
// fails (Redis down, or a Sentinel or Cluster failover under way) is
// retried with backoff, newer groups waiting in the queue, for up to
// groupLogRetry: a failover's groups reach the log, so the next origin's
// numbers continue from them.
func (c *cluster) logGroups(ctx context.Context) {
	for {
		var lg loggedGroup
		select {
		case <-ctx.Done():
			return
		case lg = <-c.groups:
		}
		queued := time.Now()
		backoff := 50 * time.Millisecond
		for {
			rctx, cancel := context.WithTimeout(ctx, registryTimeout)
			err := c.reg.LogGroup(rctx, lg.name, lg.g)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Since(queued) > groupLogRetry {
				c.n.metrics.groupLogDropped.Inc()
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 500*time.Millisecond)
		}
	}
}

// groupLogRetry is how long a group's log entry is retried.
const groupLogRetry = 30 * time.Second

// heartbeat keeps this origin's registry keys alive (recreating them after
// Redis lost them) and ends broadcasts another origin has taken over.
func (c *cluster) heartbeat(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held := c.n.held(c.advertise, c.inc)
		if len(held) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, registryTimeout)
		lost, err := c.reg.Refresh(rctx, held)
		cancel()
		if err != nil {
			continue // Redis is down: broadcasts keep flowing; retry next beat
		}
		for _, name := range lost {
			c.n.log.Warn("broadcast taken over by another origin; ending it here", "broadcast", name)
			c.n.endMoved(name)
		}
	}
}
