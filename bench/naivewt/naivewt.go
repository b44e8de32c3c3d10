// Package naivewt is the bench's control for issue 10's "cheaper than a
// straightforward server": a deliberately plain WebTransport fan-out
// server, the one a Go programmer would write first with webtransport-go
// and quic-go at the module's versions. It pulls a broadcast from an
// origin the way an edge does (the shared/relay client) and serves it to
// viewers at /wt/{name} in the relay protocol the edge speaks (HELLO,
// SUBSCRIBE, one unidirectional stream per group), so that the bench's
// WebTransport viewers watch it unchanged.
//
// Naive on purpose: one goroutine per session reading its control stream,
// one goroutine per viewer that opens a stream for each new group and
// writes each object's frame (encoded once, shared by every viewer) with a
// plain blocking Write. No admission limit, no priorities, no resets of
// viewers that fall behind, no write deadlines: a dead viewer's writes
// fail when QUIC's idle timeout (the default 30 s) closes its connection.
// It is not for production; it exists to be measured beside the edge.
package naivewt

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/certs"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// SentMetric is the counter of frame bytes written to viewers' group
// streams (what the edge's quiccast_edge_webtransport_sent_bytes_total
// counts), for the bench's CPU per Gbit.
const SentMetric = "quiccast_naivewt_sent_bytes_total"

// Metrics live in the default registry, beside its process and Go
// collectors (process_cpu_seconds_total, process_resident_memory_bytes,
// go_goroutines): one server per process.
var (
	sentBytes = promauto.NewCounter(prometheus.CounterOpts{Name: SentMetric, Help: "Frame bytes written to WebTransport viewers' group streams."})
	sessions  = promauto.NewGauge(prometheus.GaugeOpts{Name: "quiccast_naivewt_sessions", Help: "WebTransport sessions open."})
	groups    = promauto.NewCounter(prometheus.CounterOpts{Name: "quiccast_naivewt_groups_total", Help: "Group streams opened to viewers."})
	dropped   = promauto.NewCounter(prometheus.CounterOpts{Name: "quiccast_naivewt_viewer_errors_total", Help: "Viewers ended by a failed write or stream open."})
)

// Config configures the server.
type Config struct {
	// Origin is the relay address (host:port, UDP) to pull broadcasts
	// from; Token is the cluster token it wants in HELLO.
	Origin string
	Token  string
	// Listen is the TCP address of /metrics, /cert-hash and
	// /debug/pprof; HTTP/3 and WebTransport take the UDP port of the same
	// number, or any free one if that is taken (/cert-hash says which).
	Listen string
	// AdminToken, when set, is required (Bearer) for /metrics and
	// /debug/pprof.
	AdminToken string
	Logger     *slog.Logger
}

// Server is the naive fan-out server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ctx  context.Context // Run's: the upstream subscriptions belong to the server, not to a viewer
	ln   net.Listener
	udp  *net.UDPConn
	dev  *certs.Dev
	wt   *webtransport.Server
	http *http.Server

	mu     sync.Mutex
	client *relay.Client
	ups    map[string]*upstream
	wg     sync.WaitGroup // sessions
}

// upstream is one broadcast pulled from the origin, shared by its viewers.
type upstream struct {
	ready chan struct{}
	b     *media.Broadcast
	sub   *relay.Subscription
	err   error
}

// New binds the listeners.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Origin == "" {
		return nil, errors.New("naivewt: no -origin relay address")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ups: map[string]*upstream{}, ctx: context.Background()}
	var err error
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("naivewt: -listen: %w", err)
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	port := s.ln.Addr().(*net.TCPAddr).Port
	if s.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host), Port: port}); err != nil {
		s.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)})
	}
	if err != nil {
		s.ln.Close()
		return nil, fmt.Errorf("naivewt: UDP: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host != "" && net.ParseIP(host) == nil {
		hosts = append(hosts, host)
	}
	// The edge's development certificate maker: the TLS cost is alike.
	if s.dev, err = certs.NewDev(hosts, certs.DevOptions{}); err != nil {
		s.ln.Close()
		s.udp.Close()
		return nil, err
	}
	wtMux := http.NewServeMux()
	wtMux.HandleFunc("CONNECT /wt/{name...}", s.serveWT)
	s.wt = &webtransport.Server{H3: &http3.Server{
		Handler:   wtMux,
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{GetCertificate: s.dev.GetCertificate}),
		// The defaults, but what WebTransport needs.
		QUICConfig: &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true},
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cert-hash", s.serveCertHash)
	mux.Handle("GET /metrics", s.admin(promhttp.Handler()))
	mux.Handle("/debug/pprof/", s.admin(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", s.admin(http.HandlerFunc(pprof.Profile)))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the TCP address of /metrics and /cert-hash.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// H3Port is the UDP port of WebTransport.
func (s *Server) H3Port() int { return s.udp.LocalAddr().(*net.UDPAddr).Port }

// Run serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	s.ctx = ctx
	s.log.Info("naive-wt listening", "addr", s.Addr().String(), "webtransport", s.udp.LocalAddr().String(), "origin", s.cfg.Origin)
	errc := make(chan error, 2)
	go func() { errc <- s.http.Serve(s.ln) }()
	go func() { errc <- s.wt.Serve(s.udp) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.http.Close()
	s.wt.Close()
	s.udp.Close()
	s.wg.Wait()
	s.mu.Lock()
	if s.client != nil {
		s.client.Close()
	}
	for _, u := range s.ups {
		<-u.ready
		if u.b != nil {
			u.b.Close()
		}
	}
	s.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t := s.cfg.AdminToken; t != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(t)) != 1 {
				http.Error(w, "admin token required", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// serveCertHash answers as the edge's /cert-hash does (edge.CertHashes).
func (s *Server) serveCertHash(w http.ResponseWriter, _ *http.Request) {
	cur, next, notAfter := s.dev.Hashes()
	c, n := base64.StdEncoding.EncodeToString(cur[:]), base64.StdEncoding.EncodeToString(next[:])
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"port": s.H3Port(), "algorithm": "sha-256", "hashes": []string{c, n},
		"current": c, "next": n, "notAfter": notAfter.UTC().Format(time.RFC3339)})
}

// broadcast returns the broadcast name pulled from the origin, subscribing
// on first use. A subscription that failed or ended is tried again.
func (s *Server) broadcast(name string) (*media.Broadcast, error) {
	s.mu.Lock()
	u := s.ups[name]
	if u != nil {
		select {
		case <-u.ready:
			if u.err != nil || u.b.Closed() {
				u = nil
			}
		default:
		}
	}
	if u == nil {
		u = &upstream{ready: make(chan struct{})}
		s.ups[name] = u
		s.mu.Unlock()
		u.b, u.sub, u.err = s.subscribe(s.ctx, name)
		close(u.ready)
	} else {
		s.mu.Unlock()
		<-u.ready
	}
	return u.b, u.err
}

func (s *Server) subscribe(ctx context.Context, name string) (*media.Broadcast, *relay.Subscription, error) {
	s.mu.Lock()
	c := s.client
	if c != nil {
		select {
		case <-c.Done():
			c = nil
		default:
		}
	}
	s.mu.Unlock()
	if c == nil {
		var err error
		c, err = relay.Dial(ctx, s.cfg.Origin, relay.ClientConfig{Node: "naive-wt", Token: s.cfg.Token, Logger: s.log})
		if err != nil {
			return nil, nil, err
		}
		s.mu.Lock()
		s.client = c
		s.mu.Unlock()
	}
	b := media.New(name, media.Limits{})
	sub, err := c.Subscribe(ctx, name, nil, b)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	go func() {
		<-sub.Done()
		b.Close() // its viewers are told ENDED; the next one subscribes again
	}()
	return b, sub, nil
}

// serveWT is one WebTransport session: its control stream is read here.
func (s *Server) serveWT(w http.ResponseWriter, r *http.Request) {
	sess, err := s.wt.Upgrade(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.wg.Add(1)
	defer s.wg.Done()
	sessions.Inc()
	defer sessions.Dec()
	ctx := sess.Context()
	ctl, err := sess.AcceptStream(ctx)
	if err != nil {
		return
	}
	v := &viewer{sess: sess, ctl: ctl}
	defer func() {
		sess.CloseWithError(0, "")
		v.wg.Wait()
	}()
	hello, err := relay.ReadMsg(ctl)
	if err != nil || hello.Type != relay.MsgHello || hello.Version != relay.Version {
		sess.CloseWithError(webtransport.SessionErrorCode(wire.CodeBadRequest), "want HELLO")
		return
	}
	if v.send(&relay.Msg{Type: relay.MsgHelloOK, Node: "naive-wt"}) != nil {
		return
	}
	for {
		m, err := relay.ReadMsg(ctl)
		if err != nil {
			return
		}
		if m.Type != relay.MsgSubscribe {
			continue
		}
		b, err := s.broadcast(m.Broadcast)
		if err != nil {
			v.send(&relay.Msg{Type: relay.MsgError, ID: m.ID, Code: wire.CodeOf(err), Reason: wire.Reason(err)})
			continue
		}
		cat := b.Catalog()
		if cat == nil {
			v.send(&relay.Msg{Type: relay.MsgError, ID: m.ID, Code: wire.CodeNotFound, Reason: "no catalog yet"})
			continue
		}
		if v.send(relay.CatalogMsg(relay.MsgSubscribeOK, m.ID, cat)) != nil {
			return
		}
		for ti := range cat.Tracks {
			v.wg.Add(1)
			go func() {
				defer v.wg.Done()
				v.run(ctx, b, m.ID, uint16(ti), cat)
			}()
		}
	}
}

type viewer struct {
	sess *webtransport.Session
	ctl  *webtransport.Stream
	mu   sync.Mutex // control stream writes
	wg   sync.WaitGroup
}

func (v *viewer) send(m *relay.Msg) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, err := v.ctl.Write(relay.EncodeMsg(m))
	return err
}

// run sends one track to the viewer from the newest group on, a group at
// a time: a stream per group, each object's frame written as it arrives.
func (v *viewer) run(ctx context.Context, b *media.Broadcast, id uint32, ti uint16, announced *media.Catalog) {
	var next uint64
	started := false
	var objs []*media.Object
	for {
		ch := b.Changed()
		var g *media.Group
		if started {
			g = b.GroupAtOrAfter(ti, next)
		} else {
			g = b.Latest(ti)
		}
		if g == nil {
			select {
			case <-ch:
				continue
			case <-b.Done():
				v.send(&relay.Msg{Type: relay.MsgEnded, ID: id})
				return
			case <-ctx.Done():
				return
			}
		}
		started, next = true, g.Seq+1
		if g.Catalog != announced {
			announced = g.Catalog
			if v.send(relay.CatalogMsg(relay.MsgAnnounce, id, g.Catalog)) != nil {
				return
			}
		}
		str, err := v.sess.OpenUniStreamSync(ctx)
		if err != nil {
			dropped.Inc()
			return
		}
		groups.Inc()
		var h [relay.GroupHeaderLen]byte
		relay.GroupHeader{Sub: id, Track: ti, Group: g.Seq, Epoch: g.Catalog.Epoch}.Put(h[:])
		if _, err := str.Write(h[:]); err != nil {
			dropped.Inc()
			return
		}
		for i := 0; ; {
			ch := b.Changed()
			var done bool
			objs, done = b.Objects(g, i, objs[:0])
			for _, o := range objs {
				f := o.Frame()
				if _, err := str.Write(f); err != nil {
					dropped.Inc()
					return
				}
				sentBytes.Add(float64(len(f)))
			}
			i += len(objs)
			clear(objs)
			if done && len(objs) == 0 {
				break
			}
			if len(objs) > 0 {
				continue
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
		str.Close()
	}
}
