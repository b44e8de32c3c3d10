package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// Directory finds which relay address holds a broadcast, and says when
// that changes. *registry.Registry is one.
type Directory interface {
	Lookup(ctx context.Context, name string) (*registry.Broadcast, error)
	Follow(ctx context.Context, fn func(registry.Event)) error
}

// ClusterConfig configures a RelaySource.
type ClusterConfig struct {
	// Directory finds origins (Redis); Parent is the relay address of an
	// upstream node (an origin or a mid-tier edge) used when there is no
	// directory or it does not know the broadcast.
	Directory Directory
	Parent    string
	// ParentFirst pulls from Parent even when the Directory knows the
	// broadcast's origin: a lower-tier edge that reports to the registry
	// (for the API and the router) but pulls through a mid-tier edge.
	ParentFirst bool
	Client      relay.ClientConfig
	// Limits bound the mirrors' caches.
	Limits media.Limits
	// Gone is how long a link waits for a broadcast that ended, or whose
	// upstream was lost, to come back before its viewers are told it
	// ended. Default 10 s.
	Gone time.Duration
	// DialTimeout bounds connecting to an upstream: the QUIC handshake
	// and HELLO. An upstream that does not answer within it is
	// unreachable, and viewers waiting for it get a 503 at once rather
	// than after the relay's 5 s. Default 1.5 s.
	DialTimeout time.Duration
	// OnEvent, if set, sees every directory event too (the node's
	// kicks).
	OnEvent func(registry.Event)
	Logger  *slog.Logger
}

// RelaySource is an edge's Source in a cluster: it mirrors each broadcast
// from its origin (or parent) over the relay, one subscription per
// broadcast, and moves the subscription when the upstream dies or the
// broadcast moves, resuming at the next group.
type RelaySource struct {
	cfg ClusterConfig
	log *slog.Logger

	// Counters for metrics.
	Resubscribes atomic.Int64
	Restarts     atomic.Int64 // pooled connections dropped for a restarted upstream
	Refused      atomic.Int64 // upstreams that refused this node's cluster token
	Unreachable  atomic.Int64 // dials to an upstream that failed

	warned sync.Map // "cause addr" -> *warning: misconfiguration log lines, rate-limited

	mu      sync.Mutex
	clients map[string]*pooled
	links   map[string]*link
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type pooled struct {
	ready chan struct{}
	c     *relay.Client
	err   error
}

// NewRelaySource starts following the directory, if any.
func NewRelaySource(cfg ClusterConfig) *RelaySource {
	if cfg.Gone <= 0 {
		cfg.Gone = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 1500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Client.Logger = cfg.Logger
	ctx, cancel := context.WithCancel(context.Background())
	s := &RelaySource{cfg: cfg, log: cfg.Logger, clients: map[string]*pooled{}, links: map[string]*link{}, ctx: ctx, cancel: cancel}
	if cfg.Directory != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			cfg.Directory.Follow(ctx, s.event)
		}()
	}
	return s
}

// Close ends every link and connection.
func (s *RelaySource) Close() {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.clients {
		select {
		case <-p.ready:
			if p.c != nil {
				p.c.Close()
			}
		default:
		}
	}
}

// event reacts to directory events: a broadcast that started or moved
// elsewhere is followed there at once; after an outage every link checks.
// A node that announces another incarnation at a relay address than the
// pooled connection to it answered was restarted there: the connection
// goes to a dead process, so it is dropped at once (its subscriptions
// end and their links resubscribe) rather than at the QUIC idle timeout.
func (s *RelaySource) event(ev registry.Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
	switch ev.Type {
	case registry.EventNodeUp, registry.EventStarted, registry.EventMoved:
		s.dropStale(ev.Relay, ev.Incarnation)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Type == registry.EventResync {
		for _, l := range s.links {
			l.poke("")
		}
		return
	}
	if ev.Type != registry.EventStarted && ev.Type != registry.EventMoved {
		return
	}
	if l := s.links[ev.Broadcast]; l != nil {
		l.poke(ev.Relay)
	}
}

// dropStale closes the pooled connection to addr if it answered with
// another incarnation than inc, the one now running there.
func (s *RelaySource) dropStale(addr, inc string) {
	if addr == "" || inc == "" {
		return
	}
	s.mu.Lock()
	p := s.clients[addr]
	if p == nil || !isDone(p.ready) || p.c == nil || p.c.Incarnation() == inc || p.c.Incarnation() == "" {
		s.mu.Unlock()
		return
	}
	delete(s.clients, addr)
	s.mu.Unlock()
	s.Restarts.Add(1)
	s.log.Info("upstream restarted; dropping the connection to its old process", "upstream", addr, "old_incarnation", p.c.Incarnation(), "incarnation", inc)
	p.c.Close()
}

// resolve returns the relay address to subscribe to name at, and the
// incarnation the directory says runs there ("" if unknown).
func (s *RelaySource) resolve(ctx context.Context, name string) (addr, inc string, err error) {
	if s.cfg.ParentFirst && s.cfg.Parent != "" {
		return s.cfg.Parent, "", nil
	}
	if s.cfg.Directory != nil {
		b, err := s.cfg.Directory.Lookup(ctx, name)
		switch {
		case err == nil && b.Relay != "":
			return b.Relay, b.Incarnation, nil
		case err != nil && !errors.Is(err, registry.ErrNotFound):
			if s.cfg.Parent == "" {
				return "", "", wire.Errorf(wire.CodeNotFound, "broadcast %q: directory unavailable (%v)", name, err)
			}
		}
	}
	if s.cfg.Parent != "" {
		return s.cfg.Parent, "", nil
	}
	return "", "", wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
}

// client returns the pooled connection to addr, dialing it once however
// many callers wait.
func (s *RelaySource) client(ctx context.Context, addr string) (*relay.Client, error) {
	s.mu.Lock()
	p := s.clients[addr]
	if p != nil {
		select {
		case <-p.ready:
			if p.err != nil || isDone(p.c.Done()) {
				p = nil
			}
		default:
		}
	}
	if p == nil {
		p = &pooled{ready: make(chan struct{})}
		s.clients[addr] = p
		s.mu.Unlock()
		dctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
		p.c, p.err = relay.Dial(dctx, addr, s.cfg.Client)
		cancel()
		if p.err != nil {
			p.err = s.upstreamFailed(addr, p.err, true)
		}
		close(p.ready)
		if p.err != nil {
			s.mu.Lock()
			if s.clients[addr] == p {
				delete(s.clients, addr)
			}
			s.mu.Unlock()
		}
		return p.c, p.err
	}
	s.mu.Unlock()
	select {
	case <-p.ready:
		return p.c, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Subscribe mirrors name from its upstream. It returns once the upstream
// accepted, with the catalog in place.
func (s *RelaySource) Subscribe(ctx context.Context, name string) (*media.Broadcast, func(), error) {
	addr, _, err := s.resolve(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	mirror := media.New(name, s.cfg.Limits)
	sub, inc, err := s.subscribe(ctx, addr, name, nil, mirror)
	if err != nil {
		mirror.Close()
		return nil, nil, err
	}
	lctx, stop := context.WithCancel(s.ctx)
	l := &link{s: s, name: name, addr: addr, inc: inc, mirror: mirror, pokes: make(chan string, 1)}
	s.mu.Lock()
	s.links[name] = l
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.run(lctx, sub)
		s.mu.Lock()
		if s.links[name] == l {
			delete(s.links, name)
		}
		s.mu.Unlock()
	}()
	return mirror, stop, nil
}

// subscribe subscribes over the pooled connection to addr; it also returns
// the incarnation that connection answered with.
func (s *RelaySource) subscribe(ctx context.Context, addr, name string, start *uint64, mirror *media.Broadcast) (*relay.Subscription, string, error) {
	c, err := s.client(ctx, addr)
	if err != nil {
		return nil, "", fmt.Errorf("upstream %s: %w", addr, err)
	}
	sub, err := c.Subscribe(ctx, name, start, mirror)
	if err != nil {
		err = s.upstreamFailed(addr, err, false)
	}
	return sub, c.Incarnation(), err
}

// warnEvery is how often, at most, one misconfiguration between nodes (one
// cause, one upstream) is logged.
const warnEvery = time.Minute

type warning struct {
	mu      sync.Mutex
	last    time.Time
	repeats int // since the last line
}

// upstreamFailed turns a failure to reach or subscribe at the upstream
// addr into what viewers are told: the upstream refusing this node's
// cluster token (4001/4003) is a 502 (4502) and an upstream that cannot be
// reached (dial: a failed dial) a 503 (4503), both "upstream unavailable"
// and neither hinting that the viewer's token is wrong. Both are logged
// loudly here, at the node whose configuration is at fault, at most once a
// minute per cause and upstream, and counted. Other errors are returned
// as they are.
func (s *RelaySource) upstreamFailed(addr string, err error, dial bool) error {
	if s.ctx.Err() != nil {
		return err
	}
	var we *wire.Error
	switch code := wire.CodeOf(err); {
	case code == wire.CodeUnauthorized || code == wire.CodeForbidden:
		s.Refused.Add(1)
		s.warn("refused "+addr, func(repeats int) {
			s.log.Error(fmt.Sprintf("-cluster-token not accepted by upstream %s: give this edge the cluster token its upstream has", addr),
				"upstream", addr, "err", err, "repeats", repeats)
		})
		return &wire.Error{Code: wire.CodeBadGateway, Err: err,
			Msg: "upstream unavailable: this edge's upstream refused it (a configuration error between the servers, not your token); try again later"}
	case dial && !errors.As(err, &we):
		s.Unreachable.Add(1)
		s.warn("unreachable "+addr, func(repeats int) {
			what := fmt.Sprintf("origin %s (from the registry) unreachable", addr)
			if addr == s.cfg.Parent {
				what = fmt.Sprintf("parent %s unreachable: check -parent", addr)
			}
			s.log.Warn(what, "upstream", addr, "err", err, "repeats", repeats)
		})
		return &wire.Error{Code: wire.CodeUnavailable, Err: err,
			Msg: "upstream unavailable: this edge cannot reach its upstream; try again later or another edge"}
	}
	return err
}

// warn calls log for key at most once per warnEvery, with how many times
// it was suppressed since the previous call.
func (s *RelaySource) warn(key string, log func(repeats int)) {
	v, _ := s.warned.LoadOrStore(key, &warning{})
	w := v.(*warning)
	w.mu.Lock()
	now := time.Now()
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.repeats++
		w.mu.Unlock()
		return
	}
	repeats := w.repeats
	w.last, w.repeats = now, 0
	w.mu.Unlock()
	log(repeats)
}

// link keeps one broadcast's mirror fed, moving between upstreams.
type link struct {
	s      *RelaySource
	name   string
	addr   string
	inc    string // the incarnation of the upstream at addr subscribed to
	mirror *media.Broadcast
	pokes  chan string // a new relay address ("" = check the directory)
}

func (l *link) poke(addr string) {
	select {
	case l.pokes <- addr:
	default:
	}
}

func (l *link) run(ctx context.Context, sub *relay.Subscription) {
	log := l.s.log.With("broadcast", l.name)
	defer l.mirror.Close()
	for {
		select {
		case <-ctx.Done():
			sub.Close()
			return
		case addr := <-l.pokes:
			var inc string
			if addr == "" {
				var err error
				if addr, inc, err = l.s.resolve(ctx, l.name); err != nil {
					continue
				}
			}
			if addr == l.addr && (inc == "" || l.inc == "" || inc == l.inc) {
				continue
			}
			if addr == l.addr {
				// The directory names another run of the process at
				// the same address (the events saying so may have
				// been lost in a Redis outage): this one is dead.
				log.Info("upstream restarted; resubscribing", "upstream", addr, "incarnation", inc)
				l.s.dropStale(addr, inc)
			} else {
				log.Info("broadcast moved; following", "from", l.addr, "to", addr)
			}
			sub.Close()
		case <-sub.Done():
			log.Info("upstream subscription ended", "upstream", l.addr, "err", sub.Err())
		}
		var ok bool
		if sub, ok = l.resubscribe(ctx, log); !ok {
			return
		}
	}
}

// resubscribe finds the broadcast again and subscribes from the group
// after the newest the mirror has. It gives up after Gone.
func (l *link) resubscribe(ctx context.Context, log *slog.Logger) (*relay.Subscription, bool) {
	// Groups the old upstream left open will not be completed by the
	// new one: finish them, so that viewers move on at once.
	for ti := range l.mirrorTracks() {
		if g := l.mirror.Latest(uint16(ti)); g != nil {
			l.mirror.Finish(uint16(ti), g.Seq, time.Now().UnixNano())
		}
	}
	deadline := time.Now().Add(l.s.cfg.Gone)
	wait := 100 * time.Millisecond
	for time.Now().Before(deadline) {
		var start *uint64
		for ti := range l.mirrorTracks() {
			if g := l.mirror.Latest(uint16(ti)); g != nil {
				next := g.Seq + 1
				if start == nil || next < *start {
					start = &next
				}
			}
		}
		addr, _, err := l.s.resolve(ctx, l.name)
		if err == nil {
			var sub *relay.Subscription
			var inc string
			sub, inc, err = l.s.subscribe(ctx, addr, l.name, start, l.mirror)
			if err == nil {
				l.addr, l.inc = addr, inc
				l.s.Resubscribes.Add(1)
				from := "newest"
				if start != nil {
					from = strconv.FormatUint(*start, 10)
				}
				log.Info("upstream resubscribed", "upstream", addr, "from_group", from)
				return sub, true
			}
		}
		log.Debug("resubscribe failed", "err", err)
		select {
		case <-ctx.Done():
			return nil, false
		case <-l.pokes:
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
	log.Info("broadcast gone", "waited", l.s.cfg.Gone)
	return nil, false
}

func (l *link) mirrorTracks() []wire.TrackInfo {
	if c := l.mirror.Catalog(); c != nil {
		return c.Tracks
	}
	return nil
}

// startCluster sets up the relay side of the node: the RelaySource when no
// Source was given, and the relay listener for lower tiers.
func (n *Node) startCluster() error {
	cfg := &n.cfg
	if cfg.Source == nil {
		var dir Directory
		switch {
		case cfg.Registry != nil:
			dir = cfg.Registry
		case cfg.RedisURL != "":
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := registry.Open(ctx, registry.Options{URL: cfg.RedisURL, TLS: cfg.RedisTLS, NodeID: cfg.Peer.ID(), Logger: n.log})
			cancel()
			if err != nil {
				return fmt.Errorf("edge: %w", err) // err says "registry: …"
			}
			n.dir, dir = r, r
		case cfg.Parent == "":
			return errors.New("edge: nowhere to pull broadcasts from: set -redis-url (the cluster's registry) or -parent (an upstream relay address)")
		}
		tc, err := relay.ClientTLS(cfg.Peer.TLS)
		if err != nil {
			return err
		}
		n.cluster = NewRelaySource(ClusterConfig{
			Directory: dir, Parent: cfg.Parent, ParentFirst: cfg.ParentFirst, Logger: n.log, OnEvent: n.event,
			Client: relay.ClientConfig{Node: cfg.Peer.ID(), Token: cfg.Peer.Token, TLS: tc},
			Limits: media.Limits{Budget: n.budget},
		})
		cfg.Source = n.cluster
	}
	if cfg.RelayListen != "" {
		host, _, err := net.SplitHostPort(cfg.RelayListen)
		if err != nil {
			return fmt.Errorf("edge: -relay-listen %q: %w", cfg.RelayListen, err)
		}
		if err := cfg.Peer.CheckListen("-relay-listen", cfg.RelayListen); err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		if cfg.Peer.Exposed(cfg.RelayListen) {
			n.log.Warn("relay listener open to anyone who can reach it (-relay-insecure): it serves every broadcast without a play token", "relay", cfg.RelayListen)
		}
		tc, err := relay.ServerTLS(cfg.Peer.TLS, []string{host, "localhost", "127.0.0.1"})
		if err != nil {
			return err
		}
		if n.relayLn, err = quic.ListenAddr(cfg.RelayListen, tc, relay.ServerQUICConfig()); err != nil {
			return fmt.Errorf("edge: relay listen %s: %w", cfg.RelayListen, err)
		}
		n.relay = relay.NewServer(relay.ServerConfig{
			Node: cfg.Peer.ID(), Action: auth.Relay, Auth: cfg.Auth, Logger: n.log,
			Sent: func(o *media.Object) { observeObject(n.metrics.delayRly, o) },
			// A lower tier is one more viewer of the coalesced upstream.
			Lookup: func(ctx context.Context, name string) (*media.Broadcast, func(), error) {
				u, err := n.attach(ctx, name)
				if err != nil {
					return nil, nil, err
				}
				return u.b, func() { n.detach(u) }, nil
			},
		})
	}
	return nil
}

func (n *Node) stopCluster() {
	if n.relayLn != nil {
		n.relayLn.Close()
	}
	if n.cluster != nil {
		n.cluster.Close()
	}
	if n.dir != nil {
		n.dir.Close()
	}
}

// RelayAddr returns the address lower tiers can use as their parent, or ""
// when the edge serves no relay.
func (n *Node) RelayAddr() string {
	if n.relayLn == nil {
		return ""
	}
	return n.relayLn.Addr().String()
}
