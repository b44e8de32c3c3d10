// Package origin is the node broadcasters publish to. It validates the
// incoming CMAF, cuts it into groups and objects, and keeps a bounded cache
// of recent groups per broadcast for edges to pull.
package origin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/admin"
	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/auth/authconfig"
	"github.com/quiccast/quiccast/shared/budget"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/metrics"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/restream"
	"github.com/quiccast/quiccast/shared/route"
	"github.com/quiccast/quiccast/shared/serve"
)

// Config configures an origin. Zero fields take the defaults Flags shows.
type Config struct {
	// Listen is the HTTP address of /publish, /metrics, /healthz.
	Listen string
	// PublishTokens is a comma-separated list of accepted publish
	// tokens; empty allows anyone. Ignored when Auth is set.
	PublishTokens string
	// AuthFlags adds JWT, webhooks, CIDR rules and rate limits to the
	// tokens. Ignored when Auth is set.
	AuthFlags authconfig.Config
	// Auth decides publish and relay requests; nil means from
	// PublishTokens, Peer.Token and AuthFlags.
	Auth auth.Authorizer

	// Peer is this node's cluster identity: id, cluster token, relay TLS.
	Peer relay.Peer
	// Admin is where /metrics, /broadcasts and /debug/pprof/ are served
	// and what they require (shared/admin).
	Admin admin.Config
	// RelayListen is the UDP address edges pull broadcasts from (QUIC).
	RelayListen string
	// RelayAdvertise is the relay address recorded in the registry for
	// edges to dial; default: RelayListen with this host's name.
	RelayAdvertise string
	// RedisURL is the registry; empty runs an embedded one (single node).
	RedisURL string
	// RedisTLS are the CA and client certificate files of a TLS RedisURL.
	RedisTLS registry.TLSFiles
	// Registry, when set, is used instead of opening RedisURL.
	Registry *registry.Registry

	// MaxMessage bounds one WebSocket message from a publisher.
	MaxMessage int
	// MaxRate bounds a publisher's bytes per second (averaged with a
	// burst of MaxRate bytes) and MaxMessages its messages per second.
	MaxRate     int64
	MaxMessages int
	// MaxBox bounds one MP4 box (a moof+mdat pair counts as one).
	MaxBox int
	// IdleTimeout drops a publisher that sends nothing for this long.
	IdleTimeout time.Duration
	// Grace is how long a broadcast and its viewers wait for a
	// publisher that left to come back before the broadcast ends.
	Grace time.Duration

	// Cache bounds per track: groups, bytes, age.
	CacheGroups int
	CacheBytes  int64
	CacheAge    time.Duration
	// MemoryBudget bounds the bytes the process holds for broadcasts:
	// the caches, and the boxes being received from publishers, which
	// alone may use the last eighth.
	MemoryBudget int64

	// RTMPListen is the RTMP ingest address (rtmp://host/live/{broadcast});
	// empty disables RTMP. The origin command's flag defaults to :1935.
	RTMPListen string
	// RTMPCert and RTMPKey are PEM files; when both are set the RTMP
	// listener speaks TLS (rtmps://).
	RTMPCert, RTMPKey string
	// RTMPIdleTimeout drops an RTMP publisher that sends nothing for this
	// long.
	RTMPIdleTimeout time.Duration
	// RTMPAuthTimeout bounds an RTMP connection's handshake, connect and
	// publish commands: the time a stranger may hold a connection.
	RTMPAuthTimeout time.Duration
	// RTMPMaxPending and RTMPMaxPendingPerIP bound the RTMP connections
	// not yet authorised to publish, in total and per client address.
	RTMPMaxPending      int
	RTMPMaxPendingPerIP int

	// Pprof serves Go's profiler at /debug/pprof/ on the HTTP listener.
	Pprof bool

	// Record configures recording (shared/record); off without a Dir.
	Record record.Config
	// Restream configures pushing broadcasts to RTMP(S) servers
	// (shared/restream).
	Restream restream.Config

	Logger *slog.Logger
}

// Flags declares every setting on s.
func (c *Config) Flags(s *config.Set) {
	s.String(&c.Listen, "listen", ":7000", "HTTP address for WebSocket ingest (/publish/{broadcast}), /metrics and /healthz")
	s.String(&c.PublishTokens, "publish-tokens", "", "comma-separated tokens a publisher must present (?token= or Authorization: Bearer); empty allows anyone")
	c.AuthFlags.Flags(s)
	s.String(&c.RelayListen, "relay-listen", "127.0.0.1:7001", "UDP address of the QUIC relay edges pull broadcasts from; an address other hosts can reach needs -cluster-token or -relay-ca (or -relay-insecure)")
	s.String(&c.RelayAdvertise, "relay-advertise", "", "relay address edges should dial, recorded in the registry; default: -relay-listen with this host's name")
	s.GlobalString(&c.RedisURL, "redis-url", "", registry.URLUsage+"; empty runs an embedded registry (single node)")
	c.RedisTLS.Flags(s)
	c.Peer.Flags(s)
	c.Admin.Flags(s)
	c.Record.Flags(s)
	c.Restream.Flags(s)
	s.Bool(&c.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ with the admin routes (see -admin-listen, -admin-token)")
	s.Int(&c.MaxMessage, "max-message", 1<<20, "largest WebSocket message a publisher may send, bytes")
	s.Int64(&c.MaxRate, "max-rate", 6_250_000, "most bytes per second one publisher may send (6.25 MB/s = 50 Mbit/s)")
	s.Int(&c.MaxMessages, "max-messages", 1000, "most WebSocket messages per second one publisher may send")
	s.Int(&c.MaxBox, "max-box", 8<<20, "largest MP4 box (moof+mdat together), bytes")
	s.Duration(&c.IdleTimeout, "idle-timeout", 10*time.Second, "drop a publisher that sends nothing for this long")
	s.Duration(&c.Grace, "grace", 15*time.Second, "how long a broadcast waits for its publisher to return")
	s.Int(&c.CacheGroups, "cache-groups", 8, "groups kept per track")
	s.Int64(&c.CacheBytes, "cache-bytes", 32<<20, "bytes kept per track")
	s.Duration(&c.CacheAge, "cache-age", 30*time.Second, "groups older than this are dropped")
	s.Int64(&c.MemoryBudget, "memory-budget", 1<<30, "bytes the process may hold for broadcasts: group caches, and boxes being received from publishers (an eighth is kept for those)")
	s.String(&c.RTMPListen, "rtmp-listen", ":1935", "RTMP ingest address (rtmp://host/live/{broadcast}?key=TOKEN); empty disables RTMP")
	s.String(&c.RTMPCert, "rtmp-cert", "", "TLS certificate (PEM file) for RTMPS on -rtmp-listen, with -rtmp-key")
	s.String(&c.RTMPKey, "rtmp-key", "", "TLS private key (PEM file) for RTMPS on -rtmp-listen, with -rtmp-cert")
	s.Duration(&c.RTMPIdleTimeout, "rtmp-idle-timeout", 10*time.Second, "drop an RTMP publisher that sends nothing for this long")
	s.Duration(&c.RTMPAuthTimeout, "rtmp-auth-timeout", 5*time.Second, "an RTMP connection must be through its handshake, connect and publish (token checked) within this time")
	s.Int(&c.RTMPMaxPending, "rtmp-max-pending", 256, "most RTMP connections not yet authorised to publish, in total; more are closed at once")
	s.Int(&c.RTMPMaxPendingPerIP, "rtmp-max-pending-per-ip", 8, "most RTMP connections not yet authorised to publish from one client address")
}

func (c *Config) withDefaults() {
	d := Config{}
	d.Flags(config.New("origin", ""))
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.RelayListen == "" {
		c.RelayListen = d.RelayListen
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = d.MaxMessage
	}
	if c.MaxRate <= 0 {
		c.MaxRate = d.MaxRate
	}
	if c.MaxMessages <= 0 {
		c.MaxMessages = d.MaxMessages
	}
	if c.MaxBox <= 0 {
		c.MaxBox = d.MaxBox
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.Grace <= 0 {
		c.Grace = d.Grace
	}
	if c.MemoryBudget <= 0 {
		c.MemoryBudget = d.MemoryBudget
	}
	if c.RTMPIdleTimeout <= 0 {
		c.RTMPIdleTimeout = d.RTMPIdleTimeout
	}
	if c.RTMPAuthTimeout <= 0 {
		c.RTMPAuthTimeout = d.RTMPAuthTimeout
	}
	if c.RTMPMaxPending <= 0 {
		c.RTMPMaxPending = d.RTMPMaxPending
	}
	if c.RTMPMaxPendingPerIP <= 0 {
		c.RTMPMaxPendingPerIP = d.RTMPMaxPendingPerIP
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Node is a running origin.
type Node struct {
	cfg      Config
	log      *slog.Logger
	budget   *budget.Budget
	ln       net.Listener
	srv      *http.Server
	reg      *prometheus.Registry
	metrics  *originMetrics
	cluster  *cluster
	rtmp     *rtmpServer // nil when RTMP is off
	admin    *admin.Surface
	rec      *record.Recorder // nil when recording is off
	restream *restream.Manager
	// authCtx bounds the authorisers' background work (JWKS refresh).
	authCtx    context.Context
	authCancel context.CancelFunc

	mu     sync.Mutex
	bcasts map[string]*entry
	closed bool
}

// New validates cfg and binds the listener, so Addr works at once.
func New(cfg Config) (*Node, error) {
	cfg.withDefaults()
	n := &Node{
		cfg:    cfg,
		log:    cfg.Logger.With("node", "origin"),
		budget: budget.New(cfg.MemoryBudget).SetHeadroom(cfg.MemoryBudget / 8), // kept for input in progress
		bcasts: map[string]*entry{},
		reg:    metrics.NewRegistry(),
	}
	n.cfg.Peer.ID()
	n.authCtx, n.authCancel = context.WithCancel(context.Background())
	started := false
	defer func() {
		if !started {
			n.authCancel()
		}
	}()
	if n.cfg.Auth == nil {
		a, err := cfg.AuthFlags.Build(n.authCtx, auth.FromConfig(cfg.PublishTokens, "", cfg.Peer.Token), n.log)
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		n.cfg.Auth = a
	}
	if c, ok := n.cfg.Auth.(prometheus.Collector); ok {
		n.reg.MustRegister(c)
	}
	var err error
	if n.cluster, err = newCluster(n); err != nil {
		return nil, err
	}
	n.metrics = newOriginMetrics(n.reg, n)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		n.cluster.close()
		return nil, fmt.Errorf("origin: listen %s: %w", cfg.Listen, err)
	}
	n.ln = ln
	if n.admin, err = admin.New(cfg.Admin, n.log); err != nil {
		ln.Close()
		n.cluster.close()
		return nil, fmt.Errorf("origin: %w", err)
	}
	if n.rtmp, err = newRTMPServer(n); err != nil {
		ln.Close()
		n.admin.Close()
		n.cluster.close()
		return nil, err
	}
	if err := n.startRestream(); err != nil {
		ln.Close()
		n.admin.Close()
		n.cluster.close()
		n.rtmp.close()
		return nil, fmt.Errorf("origin: %w", err)
	}
	mux := http.NewServeMux()
	if err := n.startRecording(mux); err != nil {
		ln.Close()
		n.admin.Close()
		n.cluster.close()
		n.rtmp.close()
		return nil, fmt.Errorf("origin: %w", err)
	}
	mux.HandleFunc("GET /publish/{name...}", n.servePublish)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.Handle("GET "+route.Path, route.New(n.cluster.reg, n.log))
	n.admin.HandleFunc("GET /broadcasts", n.serveBroadcasts)
	ctl := api.New(n.cluster.reg, n.log)
	if n.rec != nil {
		ctl.SetRecorder(n.rec)
	}
	ctl.SetRestreamer(n.restream)
	ctl.Routes(n.admin)
	ctl.Pages(n.admin)
	n.admin.Handle("GET /metrics", metrics.Handler(n.reg))
	if cfg.Pprof {
		metrics.Profiling(n.admin)
	}
	n.admin.Mount(mux)
	n.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	budget.LimitProcess(n.budget)
	started = true
	return n, nil
}

// Addr returns the bound HTTP address.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// AdminAddr returns the -admin-listen address, or nil when the admin
// routes are on the public listener.
func (n *Node) AdminAddr() net.Addr { return n.admin.Addr() }

// RelayAddr returns the relay address this origin advertises.
func (n *Node) RelayAddr() string { return n.cluster.advertise }

// NodeID returns this node's cluster id.
func (n *Node) NodeID() string { return n.cfg.Peer.ID() }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Budget returns the process-wide cache budget of this node.
func (n *Node) Budget() *budget.Budget { return n.budget }

// Run serves until ctx is done, then closes the node.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("origin listening", "addr", n.Addr().String(), "relay", n.cluster.advertise, "node", n.cfg.Peer.ID(), "incarnation", n.cluster.inc, "registry", registryKind(n.cluster.reg))
	n.cluster.run()
	n.rtmp.start()
	n.admin.Start()
	return serve.Until(ctx, "origin", func() error { return n.srv.Serve(n.ln) }, n.Close)
}

// Close stops serving, disconnects publishers and ends every broadcast.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	var held []string
	for name, e := range n.bcasts {
		e.end() // stops timers and wakes readers; never blocks
		held = append(held, name)
	}
	n.bcasts = map[string]*entry{}
	n.mu.Unlock()
	n.rtmp.close()
	n.rec.Close() // the broadcasts ended: each recording's last segment is written
	n.restream.Close()
	n.cluster.drain(held)
	err := serve.Shutdown(n.srv, 2*time.Second) // hijacked WebSockets are not waited for
	n.admin.Close()
	n.cluster.close()
	n.authCancel()
	return err
}

func registryKind(r *registry.Registry) string {
	if r.Embedded() {
		return "embedded"
	}
	return "redis"
}

// cmafLimits bound a publisher's stream; the boxes it is receiving are
// charged to the process budget.
func (n *Node) cmafLimits() cmaf.Limits { return cmaf.Limits{MaxBox: n.cfg.MaxBox, Budget: n.budget} }

func (n *Node) cacheLimits() media.Limits {
	return media.Limits{MaxGroups: n.cfg.CacheGroups, MaxBytes: n.cfg.CacheBytes, MaxAge: n.cfg.CacheAge, Budget: n.budget}
}

func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
