// Package edge is the node viewers connect to. It holds one upstream
// subscription per broadcast however many viewers watch it, and fans the
// cached objects out to every viewer without copying them.
package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/acme"
	"github.com/quiccast/quiccast/shared/admin"
	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/auth/authconfig"
	"github.com/quiccast/quiccast/shared/budget"
	"github.com/quiccast/quiccast/shared/certs"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/metrics"
	"github.com/quiccast/quiccast/shared/playback"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/route"
	"github.com/quiccast/quiccast/shared/serve"
)

// Source finds live broadcasts: in-process from an origin (the demo) or
// over the relay.
type Source interface {
	// Subscribe returns the live broadcast name. The edge calls it once
	// per broadcast however many viewers watch, and calls release when
	// the last viewer has been gone for Linger. A broadcast that does
	// not exist is a *wire.Error with CodeNotFound.
	Subscribe(ctx context.Context, name string) (b *media.Broadcast, release func(), err error)
}

// Config configures an edge. Zero fields take the defaults Flags shows.
type Config struct {
	// Listen is the HTTP address (TCP) of /ws, the player page and
	// /metrics: HTTPS (HTTP/2 and 1.1) when TLSCert is set, else plain
	// HTTP.
	Listen string
	// WTListen is the UDP address of HTTP/3 and WebTransport
	// (/wt/{name}, and every other route over HTTP/3). "same" takes the
	// host and port Listen bound, so one port number serves TCP and UDP;
	// "" or "off" disables HTTP/3.
	WTListen string
	// TLSCert and TLSKey are certificate files (PEM) for HTTPS on Listen
	// and for HTTP/3, reloaded when they change. Without them HTTP/3
	// uses a self-signed development certificate (ECDSA P-256, valid
	// under 14 days, rotated) whose hashes GET /cert-hash gives pages for
	// WebTransport's serverCertificateHashes.
	TLSCert, TLSKey string
	// TLSCheck is how often, at most, the certificate files are looked at
	// for changes (on the next handshake after it elapsed).
	TLSCheck time.Duration
	// ACME gets the certificate of a public DNS name from an ACME CA
	// instead (HTTPS on Listen and HTTP/3), cached on disk and renewed.
	ACME acme.Config
	// DevCert tunes the development certificate; zero: 10-day
	// certificates rotated every 4 days.
	DevCert certs.DevOptions
	// DrainTimeout is how long Close waits, after telling WebTransport
	// viewers to go away, for them to leave before it closes their
	// sessions.
	DrainTimeout time.Duration
	// PlayTokens is a comma-separated list of accepted play tokens;
	// empty allows anyone. Ignored when Auth is set.
	PlayTokens string
	// AuthFlags adds JWT, webhooks, CIDR rules and rate limits to the
	// tokens. Ignored when Auth is set.
	AuthFlags authconfig.Config
	Auth      auth.Authorizer
	// RecordDir, when set, is a recordings directory (written by an
	// origin, shared/record) served read-only at /recordings/ for the
	// player's ?start=.
	RecordDir string
	// AllowedOrigins lists the page origins allowed to open viewer
	// WebSockets, comma-separated; "*" allows any.
	AllowedOrigins string
	// Source finds broadcasts. When nil, the edge pulls them over the
	// relay: from the origin the registry names (RedisURL), else from
	// Parent.
	Source Source

	// Peer is this node's cluster identity: id, cluster token, relay TLS.
	Peer relay.Peer
	// Admin is where /metrics and /debug/pprof/ are served and what they
	// require (shared/admin).
	Admin admin.Config
	// RedisURL is the registry that says which origin has a broadcast.
	RedisURL string
	// RedisTLS are the CA and client certificate files of a TLS RedisURL.
	RedisTLS registry.TLSFiles
	// Registry, when set, is used instead of opening RedisURL.
	Registry *registry.Registry
	// Parent is the relay address (host:port, UDP) of the node to pull
	// from when the registry does not know a broadcast, or when there is
	// no registry: an origin, or a mid-tier edge.
	Parent string
	// ParentFirst pulls from Parent even when the registry knows the
	// broadcast's origin (a lower tier that still reports to the registry
	// for the API and the router).
	ParentFirst bool
	// RelayListen, when set, serves this edge's broadcasts over the relay
	// to lower-tier edges (whose Parent it is).
	RelayListen string
	// MemoryBudget bounds the bytes all mirrored broadcasts may hold.
	MemoryBudget int64

	// WriteTimeout bounds every write to a viewer; a viewer whose
	// socket stays full that long is dropped.
	WriteTimeout time.Duration
	// MaxLag, MaxSkips and SkipWindow: a viewer whose next object is
	// MaxLag behind the newest skips to the newest group; one that
	// skips more than MaxSkips times in SkipWindow is disconnected.
	MaxLag     time.Duration
	MaxSkips   int
	SkipWindow time.Duration
	// UnsentLimit caps the bytes a viewer's socket holds unsent in the
	// kernel (TCP_NOTSENT_LOWAT), so a slow viewer's lag shows up here,
	// where it can skip to a newer group, instead of hiding in megabytes
	// of socket buffer. Bytes in flight are not limited by it.
	UnsentLimit int
	// WSWriter is how WebSocket viewers are written: "events" (a few
	// goroutines per broadcast, non-blocking writev; wss:// viewers'
	// TLS 1.3 records sealed there too, see shared/tlsrec) or
	// "goroutines" (one writer and one reader goroutine per viewer).
	WSWriter string
	// KernelTLS lets the kernel seal wss:// viewers' records (kTLS)
	// where it offers TLS offload; the fan-out seals them otherwise.
	KernelTLS bool
	// MaxViewers bounds concurrent viewers of this node.
	MaxViewers int
	// MaxEgress is a routing ceiling in bit/s (0: none): past it the
	// router (shared/route) sends new viewers to other edges first. The
	// edge itself refuses no viewer for it.
	MaxEgress int64
	// Region is this edge's region for the router (e.g. "eu-west").
	Region string
	// NoRoute keeps the router from offering this edge to viewers (a
	// mid-tier that serves lower tiers only).
	NoRoute bool
	// WTMaxViewers bounds concurrent WebTransport sessions, which cost
	// 5-10x a WebSocket viewer's CPU (quic-go's packetisation and
	// sendmsg). Past it a session is refused with 503 and Retry-After
	// before the upgrade, so players retry or fall back to WebSocket
	// instead of every viewer falling behind. 0: 100 per CPU (a 2-core
	// edge held 200 and fell seconds behind at 500: bench/RESULTS.md).
	WTMaxViewers int
	// WTMaxSchedDelay refuses new WebTransport sessions (503, before the
	// upgrade) while runnable goroutines wait longer than this for a CPU
	// (the 99th percentile over the last half second) and it already
	// serves a quarter of WTMaxViewers: the edge is starved and its
	// admitted viewers would fall behind. 0: 30 ms; negative: never.
	WTMaxSchedDelay time.Duration
	// WTMaxLag: a WebTransport viewer's group still being sent when a
	// newer group exists and its next object arrived here more than this
	// ago is reset, so the newest group goes first (webtransport-go's
	// streams have no priorities: without it old and new groups share
	// the connection while the viewer falls further behind).
	WTMaxLag time.Duration
	// Linger keeps an upstream subscription this long after its last
	// viewer left, so a reload does not resubscribe.
	Linger time.Duration
	// HLSPart is the least duration of an LL-HLS part: a group's
	// consecutive objects are joined into parts of at least this (the
	// last of a group may be shorter; an object longer than it is a part
	// of its own). Default 200 ms; 1ns: one object a part.
	HLSPart time.Duration

	// PublicList is who sees the list of live broadcasts at / and
	// /broadcasts.json: "auto" (everyone, unless viewers need a grant to
	// play), "on" (everyone) or "off" (no one).
	PublicList string

	// Pprof serves Go's profiler at /debug/pprof/ on the HTTP listener.
	Pprof bool

	Logger *slog.Logger
}

// Flags declares every setting on s.
func (c *Config) Flags(s *config.Set) {
	s.String(&c.Listen, "listen", ":8080", "HTTP address (TCP) for viewers (/ws/{broadcast}, /watch/{broadcast}), /metrics and /healthz; HTTPS with -tls-cert")
	s.String(&c.WTListen, "wt-listen", "same", "UDP address for HTTP/3 and WebTransport (/wt/{broadcast}); same: the host and port of -listen; off: disabled")
	s.String(&c.TLSCert, "tls-cert", "", "certificate file (PEM) for HTTPS on -listen and for HTTP/3, reloaded when it changes; default: plain HTTP on -listen and a rotating self-signed certificate for HTTP/3 whose hashes /cert-hash gives")
	s.String(&c.TLSKey, "tls-key", "", "key file (PEM) of -tls-cert")
	c.ACME.Flags(s)
	s.Duration(&c.TLSCheck, "tls-check", 5*time.Second, "how often -tls-cert and -tls-key are checked for changes (reloaded at the next handshake)")
	s.Duration(&c.DrainTimeout, "drain-timeout", time.Second, "on shutdown, how long to wait after GOAWAY for WebTransport viewers to leave before closing their sessions")
	s.String(&c.PlayTokens, "play-tokens", "", "comma-separated tokens a viewer must present; empty allows anyone")
	s.String(&c.RecordDir, "record-dir", "", "serve the recordings in this directory (an origin's -record-dir, shared or copied) read-only at /recordings/, for the player's ?start=")
	c.AuthFlags.Flags(s)
	s.String(&c.AllowedOrigins, "allowed-origins", "*", "page origins allowed to open viewer connections, comma-separated; * allows any")
	s.Duration(&c.WriteTimeout, "write-timeout", 5*time.Second, "drop a viewer whose socket accepts nothing for this long")
	s.Duration(&c.MaxLag, "max-lag", 2*time.Second, "a viewer this far behind the newest object skips to the newest group")
	s.Int(&c.MaxSkips, "max-skips", 3, "skips tolerated within -skip-window before a viewer is disconnected as too slow")
	s.Duration(&c.SkipWindow, "skip-window", 30*time.Second, "window for -max-skips")
	s.Int(&c.UnsentLimit, "unsent-limit", 128<<10, "bytes a viewer socket may hold unsent in the kernel (TCP_NOTSENT_LOWAT); 0 keeps the system default")
	s.String(&c.Parent, "parent", "", "relay address (host:port) to pull broadcasts from when the registry has none: an origin or a mid-tier edge")
	s.Bool(&c.ParentFirst, "parent-first", false, "with -redis-url and -parent: pull from -parent even when the registry knows the origin (a lower tier that reports to the registry for the API and the router)")
	s.String(&c.RelayListen, "relay-listen", "", "UDP address to serve broadcasts to lower-tier edges over the relay; empty: off")
	s.GlobalString(&c.RedisURL, "redis-url", "", registry.URLUsage+"; finds the origin of each broadcast")
	c.RedisTLS.Flags(s)
	s.Int64(&c.MemoryBudget, "memory-budget", 1<<30, "bytes all mirrored broadcasts of the process may hold")
	c.Peer.Flags(s)
	c.Admin.Flags(s)
	s.Bool(&c.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ with the admin routes (see -admin-listen, -admin-token)")
	s.String(&c.WSWriter, "ws-writer", "events", "how WebSocket viewers are written: events (shared goroutines, non-blocking writev; wss:// records sealed there) or goroutines (two per viewer)")
	s.Bool(&c.KernelTLS, "ktls", true, "let the kernel seal wss:// viewers' TLS records where it offers kernel TLS (the tls ULP in /proc/sys/net/ipv4/tcp_available_ulp); otherwise the fan-out seals them")
	s.Int(&c.MaxViewers, "max-viewers", 19000, "most concurrent viewers on this node")
	s.Int64(&c.MaxEgress, "max-egress", 0, "routing ceiling in bit/s to viewers and lower tiers: past it the router (GET /edge) sends new viewers to other edges first; 0: none")
	s.Bool(&c.NoRoute, "no-route", false, "never offer this edge to viewers through the router (GET /edge): a mid-tier that serves lower tiers only")
	s.String(&c.Region, "region", "", "this edge's region, reported for the router (GET /edge?region=, or the X-Quiccast-Region header)")
	s.Int(&c.WTMaxViewers, "wt-max-viewers", 0, "most concurrent WebTransport sessions on this node, past which new ones get 503 with Retry-After (players fall back to WebSocket); 0: 100 per CPU")
	s.Duration(&c.WTMaxSchedDelay, "wt-max-sched-delay", 30*time.Millisecond, "refuse new WebTransport sessions (503 before the upgrade) while this process's runnable goroutines wait longer than this for a CPU (p99 over the last 0.5 s) and it serves a quarter of -wt-max-viewers already: the edge is CPU-starved; negative: never")
	s.Duration(&c.WTMaxLag, "wt-max-lag", 500*time.Millisecond, "a WebTransport viewer this far behind with a newer group waiting has its old group reset, so the newest goes first (the player's default target is 0.5 s)")
	s.Duration(&c.Linger, "linger", 10*time.Second, "keep an upstream subscription this long after its last viewer left")
	s.String(&c.PublicList, "public-list", "auto", "who sees the live broadcasts listed at / and /broadcasts.json: auto (everyone, unless play needs a token or other grant), on (everyone) or off")
	s.Duration(&c.HLSPart, "hls-part", 200*time.Millisecond, "least duration of an LL-HLS part: a group's consecutive objects are joined into parts this long (PART-HOLD-BACK is 3 parts); 1ns: one object a part")
}

func (c *Config) withDefaults() {
	d := Config{}
	d.Flags(config.New("edge", ""))
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.AllowedOrigins == "" {
		c.AllowedOrigins = d.AllowedOrigins
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.MaxLag <= 0 {
		c.MaxLag = d.MaxLag
	}
	if c.MaxSkips <= 0 {
		c.MaxSkips = d.MaxSkips
	}
	if c.SkipWindow <= 0 {
		c.SkipWindow = d.SkipWindow
	}
	if c.MaxViewers <= 0 {
		c.MaxViewers = d.MaxViewers
	}
	if c.WTMaxViewers <= 0 {
		c.WTMaxViewers = 100 * runtime.GOMAXPROCS(0)
	}
	if c.WTMaxLag <= 0 {
		c.WTMaxLag = d.WTMaxLag
	}
	if c.WTMaxSchedDelay == 0 {
		c.WTMaxSchedDelay = d.WTMaxSchedDelay
	}
	if c.Linger <= 0 {
		c.Linger = d.Linger
	}
	if c.PublicList == "" {
		c.PublicList = d.PublicList
	}
	if c.HLSPart <= 0 {
		c.HLSPart = d.HLSPart
	}
	if c.TLSCheck <= 0 {
		c.TLSCheck = d.TLSCheck
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.MemoryBudget <= 0 {
		c.MemoryBudget = d.MemoryBudget
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Node is a running edge.
type Node struct {
	cfg Config
	log *slog.Logger
	// tlsFallback and ktlsFallback log once that a wss:// fast path was
	// not available.
	tlsFallback, ktlsFallback sync.Once
	ln                        net.Listener
	srv                       *http.Server
	reg                       *prometheus.Registry
	metrics                   *edgeMetrics
	budget                    *budget.Budget
	cluster                   *RelaySource       // when the edge pulls over the relay
	dir                       *registry.Registry // opened here, closed here
	relay                     *relay.Server      // serving lower tiers, when RelayListen is set
	relayLn                   *quic.Listener
	hls                       *hlsServer
	list                      listing // the landing page's

	// HTTP/3 and WebTransport (webtransport.go), when WTListen is on.
	certs   certSource
	dev     *certs.Dev    // the development certificate, or
	files   *certs.Files  // the certificate files, or
	acme    *acme.Manager // the ACME certificate
	wt      *webtransport.Server
	wtConn  *net.UDPConn
	wtPort  int
	wtRelay *relay.Server // the relay protocol inside the sessions

	ctx    context.Context // cancelled by Close: ends upstreams and viewers
	cancel context.CancelFunc
	wg     sync.WaitGroup // viewers
	bg     sync.WaitGroup // background goroutines: fan-out shards, the HTTP/3 server

	// playGated: viewers need a grant, so answers are private to them.
	playGated bool
	admin     *admin.Surface
	reporter  *api.Reporter

	egress egressMeter // for the router's reports

	mu        sync.Mutex
	draining  bool // POST /admin/drain: no new viewers, reported as draining
	ups       map[string]*upstream
	watch     map[string]*watchers // viewers per broadcast, for the API
	viewers   int
	wtViewers int
	sched     *schedMeter // the scheduler's latency, for WebTransport admission
	closed    bool
}

// New validates cfg and binds the listener, so Addr works at once.
func New(cfg Config) (*Node, error) {
	cfg.withDefaults()
	if err := checkPublicList(cfg.PublicList); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:    cfg,
		log:    cfg.Logger.With("node", "edge"),
		reg:    metrics.NewRegistry(),
		ups:    map[string]*upstream{},
		watch:  map[string]*watchers{},
		ctx:    ctx,
		cancel: cancel,
		budget: budget.New(cfg.MemoryBudget),
	}
	n.list.n = n
	budget.LimitProcess(n.budget)
	n.cfg.Peer.ID()
	if n.cfg.Auth == nil {
		a, err := cfg.AuthFlags.Build(ctx, auth.FromConfig("", cfg.PlayTokens, cfg.Peer.Token), n.log)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("edge: %w", err)
		}
		n.cfg.Auth = a
	}
	if c, ok := n.cfg.Auth.(prometheus.Collector); ok {
		n.reg.MustRegister(c)
	}
	n.playGated = auth.Guards(n.cfg.Auth, auth.Play)
	if err := n.startCluster(); err != nil {
		cancel()
		n.stopCluster()
		return nil, err
	}
	fail := func(err error) (*Node, error) {
		cancel()
		if n.ln != nil {
			n.ln.Close()
		}
		if n.wtConn != nil {
			n.wtConn.Close()
		}
		if n.admin != nil {
			n.admin.Close()
		}
		n.stopCluster()
		return nil, err
	}
	if cfg.ACME.Domain != "" {
		if err := n.newACME(); err != nil {
			return fail(err)
		}
	} else if err := n.startTLS(); err != nil {
		return fail(err)
	}
	n.sched = newSchedMeter(500 * time.Millisecond) // read while WebTransport is served
	n.metrics = newEdgeMetrics(n.reg, n)
	n.hls = newHLSServer(n)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("edge: listen %s: %w", cfg.Listen, err))
	}
	n.ln = ln
	if n.admin, err = admin.New(cfg.Admin, n.log); err != nil {
		return fail(fmt.Errorf("edge: %w", err))
	}
	if n.acme != nil {
		if err := n.acme.Start(n.ctx); err != nil {
			return fail(err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{name...}", n.serveWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", n.serveReady)
	n.admin.Handle("GET /metrics", metrics.Handler(n.reg))
	if cfg.Pprof {
		metrics.Profiling(n.admin)
	}
	n.apiRoutes()
	n.drainRoutes()
	n.admin.Mount(mux)
	mux.HandleFunc("GET /cert-hash", n.serveCertHash)
	mux.Handle("GET "+route.Path, route.New(n.registry(), n.log))
	n.pageRoutes(mux)
	n.hls.routes(mux)
	if cfg.RecordDir != "" {
		mux.Handle("GET "+playback.Prefix, playback.New(playback.Config{Dir: cfg.RecordDir, Auth: n.cfg.Auth, Logger: n.log}))
	}
	if err := n.startWT(mux); err != nil {
		return fail(err)
	}
	n.srv = &http.Server{
		Handler:           n.altSvc(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	n.srv.RegisterOnShutdown(n.hls.shutdown)
	if n.files != nil {
		n.srv.TLSConfig = &tls.Config{GetCertificate: n.certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	if n.acme != nil {
		n.srv.TLSConfig = n.acme.TLSConfig()
	}
	return n, nil
}

// Addr returns the bound HTTP address.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// AdminAddr returns the -admin-listen address, or nil when the admin
// routes are on the public listener.
func (n *Node) AdminAddr() net.Addr { return n.admin.Addr() }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Run serves until ctx is done, then drains and closes the node.
func (n *Node) Run(ctx context.Context) error {
	wt := ""
	if a := n.WTAddr(); a != nil {
		wt = a.String()
	}
	n.log.Info("edge listening", "addr", n.Addr().String(), "tls", n.srv.TLSConfig != nil, "acme", n.cfg.ACME.Domain, "webtransport", wt, "node", n.cfg.Peer.ID(), "relay", n.RelayAddr(), "parent", n.cfg.Parent)
	if n.relay != nil {
		go n.relay.Serve(n.ctx, n.relayLn)
	}
	n.admin.Start()
	n.startReports()
	if n.wt != nil {
		n.bg.Add(2)
		go func() {
			defer n.bg.Done()
			if err := n.wt.Serve(n.wtConn); err != nil && n.ctx.Err() == nil {
				n.log.Error("HTTP/3 server stopped", "err", err)
			}
		}()
		go func() {
			defer n.bg.Done()
			t := time.NewTicker(n.sched.every)
			defer t.Stop()
			for {
				select {
				case <-n.ctx.Done():
					return
				case now := <-t.C:
					n.sched.read(now)
				}
			}
		}()
	}
	return serve.Until(ctx, "edge", func() error {
		if n.srv.TLSConfig != nil {
			return n.srv.ServeTLS(n.ln, "", "")
		}
		return n.srv.Serve(n.ln)
	}, n.Close)
}

// Close stops accepting, sends every viewer a GOAWAY and a 1001 close so it
// moves to another edge (WebTransport viewers get up to DrainTimeout to
// leave by themselves), waits for the viewers to finish and releases the
// upstreams.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.reporter.Now() // the router stops sending viewers here at once
	if n.relay != nil {
		n.relay.GoAway("")
	}
	n.drainWT(n.cfg.DrainTimeout)
	err := serve.Shutdown(n.srv, 2*time.Second)
	n.cancel()
	n.wg.Wait()
	if n.wt != nil {
		n.wt.Close()
		n.wtConn.Close()
	}
	n.bg.Wait()
	n.admin.Close()
	n.reporter.Stop()
	n.mu.Lock()
	ups := n.ups
	n.ups = map[string]*upstream{}
	n.mu.Unlock()
	for _, u := range ups {
		u.stop()
	}
	n.stopCluster()
	if n.acme != nil {
		n.acme.Close()
	}
	return err
}

func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	n.mu.Lock()
	closed := n.closed || n.draining
	n.mu.Unlock()
	if closed {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// originAllowed implements AllowedOrigins for WebSocket upgrades.
func (n *Node) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || n.cfg.AllowedOrigins == "*" {
		return true
	}
	if strings.EqualFold(o, "http://"+r.Host) || strings.EqualFold(o, "https://"+r.Host) {
		return true
	}
	for _, a := range strings.Split(n.cfg.AllowedOrigins, ",") {
		if strings.EqualFold(strings.TrimSpace(a), o) {
			return true
		}
	}
	return false
}
