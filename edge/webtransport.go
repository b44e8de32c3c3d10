package edge

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/certs"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// WebTransport viewers speak the relay protocol (shared/relay) inside a
// WebTransport session at /wt/{name}: the browser opens the control
// stream, says HELLO and SUBSCRIBEs; the edge answers with the catalog and
// init segments and opens one unidirectional stream per group. The HTTP/3
// server that carries the sessions serves the rest of the edge's routes
// too.

// certSource is the certificate of the edge's TLS listeners.
type certSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// startTLS loads the certificate files, or makes the development
// certificate when HTTP/3 is on without files.
func (n *Node) startTLS() error {
	cfg := &n.cfg
	switch {
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		f, err := certs.NewFiles(cfg.TLSCert, cfg.TLSKey, certs.FilesOptions{Check: cfg.TLSCheck, Logger: n.log})
		if err != nil {
			return fmt.Errorf("edge: -tls-cert/-tls-key: %w", err)
		}
		n.files, n.certs = f, f
	case wtEnabled(cfg.WTListen):
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		for _, a := range []string{cfg.Listen, cfg.WTListen} {
			if h, _, err := net.SplitHostPort(a); err == nil && h != "" && net.ParseIP(h) == nil {
				hosts = append(hosts, h)
			}
		}
		d, err := certs.NewDev(hosts, cfg.DevCert)
		if err != nil {
			return fmt.Errorf("edge: development certificate: %w", err)
		}
		n.dev, n.certs = d, d
	}
	return nil
}

func wtEnabled(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	return s != "" && s != "off"
}

// wtQUICConfig is the QUIC configuration of the HTTP/3 listener.
// WebTransport needs datagrams and partial-delivery stream resets. Viewers
// send little (requests, the control stream): what they may open and leave
// unread is kept small.
func wtQUICConfig() *quic.Config {
	return &quic.Config{
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
		MaxIdleTimeout:                   30 * time.Second,
		KeepAlivePeriod:                  10 * time.Second,
		HandshakeIdleTimeout:             5 * time.Second,
		MaxIncomingStreams:               100, // HTTP/3 requests, CONNECT, the control stream
		MaxIncomingUniStreams:            16,  // HTTP/3 control and QPACK streams
		MaxStreamReceiveWindow:           1 << 20,
		MaxConnectionReceiveWindow:       2 << 20,
		// With QLOGDIR set, every connection writes a qlog there (loss,
		// congestion window, RTT): how the loss scenarios were diagnosed.
		Tracer: qlog.DefaultConnectionTracer,
	}
}

// startWT binds the UDP socket of HTTP/3 and WebTransport and builds the
// server; Run serves it. Called after the TCP listener is bound, so that
// "same" can take its port.
func (n *Node) startWT(mux *http.ServeMux) error {
	cfg := &n.cfg
	if !wtEnabled(cfg.WTListen) {
		return nil
	}
	addr, anyPort := cfg.WTListen, false
	if strings.EqualFold(strings.TrimSpace(addr), "same") {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return fmt.Errorf("edge: -listen %q: %w", cfg.Listen, err)
		}
		_, bound, _ := net.SplitHostPort(n.ln.Addr().String())
		addr, anyPort = net.JoinHostPort(host, bound), port == "0" || port == ""
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("edge: -wt-listen %q: %w", addr, err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil && anyPort {
		// -listen asked for any port and the UDP twin of the one TCP got
		// is taken: any UDP port will do, /cert-hash and Alt-Svc say which.
		ua.Port = 0
		uc, err = net.ListenUDP("udp", ua)
	}
	if err != nil {
		return fmt.Errorf("edge: -wt-listen %s: %w", addr, err)
	}
	n.wtConn = uc
	n.wtPort = uc.LocalAddr().(*net.UDPAddr).Port
	n.wtRelay = relay.NewServer(relay.ServerConfig{
		Node:             cfg.Peer.ID(),
		Action:           auth.Play,
		Auth:             sessionAuth{cfg.Auth},
		Lookup:           n.wtLookup,
		WriteTimeout:     cfg.WriteTimeout,
		HelloTimeout:     5 * time.Second,
		MaxLag:           cfg.WTMaxLag,
		MaxSubscriptions: 4,
		OnePerBroadcast:  true,
		Sent:             func(o *media.Object) { observeObject(n.metrics.delayWT, o) },
		Logger:           n.log.With("transport", "wt"),
	})
	tc := http3.ConfigureTLSConfig(&tls.Config{GetCertificate: n.certs.GetCertificate, MinVersion: tls.VersionTLS13})
	n.wt = &webtransport.Server{
		H3: &http3.Server{
			Handler:    mux,
			TLSConfig:  tc,
			QUICConfig: wtQUICConfig(),
			Logger:     n.log,
		},
		CheckOrigin: n.originAllowed,
	}
	mux.HandleFunc("CONNECT /wt/{name...}", n.serveWT)
	mux.HandleFunc("GET /wt/{name...}", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "/wt/{broadcast} is a WebTransport endpoint: open it with an HTTP/3 extended CONNECT (new WebTransport(url) in a browser)", http.StatusBadRequest)
	})
	rs := &n.wtRelay.Stats
	n.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_webtransport_sent_bytes_total", Help: "Frame bytes written to WebTransport viewers' group streams."},
			func() float64 { return float64(rs.Bytes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_webtransport_group_resets_total", Help: "Group streams to WebTransport viewers reset because they fell behind."},
			func() float64 { return float64(rs.Resets.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_webtransport_lag_resets_total", Help: "Of those, reset because a newer group waited while the viewer was -wt-max-lag behind."},
			func() float64 { return float64(rs.LagResets.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_webtransport_groups_total", Help: "Group streams opened to WebTransport viewers."},
			func() float64 { return float64(rs.Groups.Load()) }),
	)
	return nil
}

// WTAddr returns the UDP address of HTTP/3 and WebTransport, or nil when
// they are off.
func (n *Node) WTAddr() net.Addr {
	if n.wtConn == nil {
		return nil
	}
	return n.wtConn.LocalAddr()
}

// altSvc advertises HTTP/3 on the TCP listener's responses.
func (n *Node) altSvc(h http.Handler) http.Handler {
	if n.wt == nil {
		return h
	}
	v := fmt.Sprintf(`h3=":%d"; ma=86400`, n.wtPort)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", v)
		h.ServeHTTP(w, r)
	})
}

// session is what a WebTransport session was admitted for; the relay
// server's Lookup and Authorizer find it in their context.
type session struct {
	name  string
	token string
	req   auth.Request // as admitted: a SUBSCRIBE is asked with the same fields (a webhook's cache hit)
}

type sessionKey struct{}

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// sessionAuth authorises a SUBSCRIBE with the HELLO's token, or with the
// session's ?token= when the HELLO carried none.
type sessionAuth struct{ a auth.Authorizer }

func (s sessionAuth) Authorize(ctx context.Context, r auth.Request) error {
	if ss := sessionOf(ctx); ss != nil {
		if r.Token == "" {
			r.Token = ss.token
		}
		if r.Token == ss.token {
			r.App, r.URL, r.Args = ss.req.App, ss.req.URL, ss.req.Args
		}
	}
	return s.a.Authorize(ctx, r)
}

// wtLookup attaches a subscription to the broadcast's upstream. A session
// subscribes only to the broadcast it was admitted for.
func (n *Node) wtLookup(ctx context.Context, name string) (*media.Broadcast, func(), error) {
	if ss := sessionOf(ctx); ss != nil && ss.name != name {
		return nil, nil, wire.Errorf(wire.CodeForbidden, "this session is for %q, not %q: open /wt/%s", ss.name, name, name)
	}
	u, err := n.attach(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return u.b, func() { n.detach(u) }, nil
}

// codeStatus maps a wire code to the HTTP status it mirrors: 4001 → 401,
// 4029 → 429, 4503 → 503; 1001 (going away) → 503.
func codeStatus(c wire.Code) int {
	switch s := int(c) - 4000; {
	case s >= 0 && s < 100:
		return 400 + s
	case s >= 400 && s < 600:
		return s
	}
	if c == wire.CodeGoingAway {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// refuseHTTP answers a WebTransport request that is not admitted, before
// the upgrade: a status and a message.
func (n *Node) refuseHTTP(w http.ResponseWriter, r *http.Request, name string, err error) {
	n.log.Info("viewer refused", "transport", "wt", "broadcast", name, "remote", r.RemoteAddr, "err", err)
	n.metrics.disconnect(err)
	status := httpStatus(err)
	if status == http.StatusServiceUnavailable {
		// 1-3 s, spread so that a refused join burst does not come back
		// as one burst.
		w.Header().Set("Retry-After", strconv.Itoa(1+rand.IntN(3)))
	}
	http.Error(w, wire.Reason(err), status)
}

// closeExpired answers a session whose token has expired (its signature
// held: the page holds a token it can renew) with an upgrade closed at once
// with 4401: a browser sees no HTTP status of a refused WebTransport
// request, only a session's close code, and without it the player would
// retry with the stale token instead of asking the page for a fresh one.
func (n *Node) closeExpired(w http.ResponseWriter, r *http.Request, name string, err error) {
	n.log.Info("viewer refused", "transport", "wt", "broadcast", name, "remote", r.RemoteAddr, "err", err)
	n.metrics.disconnect(err)
	sess, uerr := n.wt.Upgrade(w, r)
	if uerr != nil {
		http.Error(w, wire.Reason(err), httpStatus(err))
		return
	}
	sess.CloseWithError(webtransport.SessionErrorCode(wire.CodeTokenExpired), wire.Reason(err))
}

// takeWTSlot reserves one of -wt-max-viewers WebTransport sessions, or
// says why not: none is left, or the process is CPU-starved
// (-wt-max-sched-delay) while it already serves a quarter of
// -wt-max-viewers (below that its sessions are not what starves it, and
// refusing them would shed nothing). releaseWTSlot gives it back.
func (n *Node) takeWTSlot() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.wtViewers >= n.cfg.WTMaxViewers {
		return wire.Errorf(wire.CodeOverCapacity, "WebTransport is full on this edge (%d sessions); retry later, use another edge or WebSocket", n.cfg.WTMaxViewers)
	}
	if max := n.cfg.WTMaxSchedDelay; max > 0 && n.wtViewers >= n.cfg.WTMaxViewers/4 {
		if d := n.sched.delay(time.Now()); d > max {
			n.metrics.wtStarved.Inc()
			return wire.Errorf(wire.CodeOverCapacity, "this edge is CPU-starved (goroutines wait %s for a CPU); retry later, use another edge or WebSocket", d.Round(time.Millisecond))
		}
	}
	n.wtViewers++
	return nil
}

func (n *Node) releaseWTSlot() {
	n.mu.Lock()
	n.wtViewers--
	n.mu.Unlock()
}

// serveWT is CONNECT /wt/{name} over HTTP/3: one WebTransport viewer.
func (n *Node) serveWT(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !n.originAllowed(r) {
		n.refuseHTTP(w, r, name, wire.Errorf(wire.CodeForbidden, "page origin %q is not allowed (-allowed-origins)", r.Header.Get("Origin")))
		return
	}
	// A WebTransport slot is taken before anything else costs the node:
	// past -wt-max-viewers the session is refused before the upgrade, so
	// the player retries after Retry-After or falls back to WebSocket.
	if err := n.takeWTSlot(); err != nil {
		n.refuseHTTP(w, r, name, err)
		return
	}
	defer n.releaseWTSlot()
	token := auth.TokenFromRequest(r)
	req := auth.Request{Action: auth.Play, Broadcast: name, Token: token, Remote: r.RemoteAddr, App: "wt", URL: auth.RedactURL(r.URL), Args: r.URL.Query()}
	g, err := n.admit(r.Context(), req)
	if wire.CodeOf(err) == wire.CodeTokenExpired {
		n.closeExpired(w, r, name, err)
		return
	}
	if err != nil {
		n.refuseHTTP(w, r, name, err)
		return
	}
	defer n.leave(req)
	sess, err := n.wt.Upgrade(w, r)
	if err != nil {
		n.refuseHTTP(w, r, name, wire.Errorf(wire.CodeBadRequest, "%v", err))
		return
	}
	n.metrics.viewers.WithLabelValues("wt").Inc()
	defer n.metrics.viewers.WithLabelValues("wt").Dec()
	// The node's end closes the session; its GOAWAY went out first (Close).
	stop := context.AfterFunc(n.ctx, func() {
		sess.CloseWithError(webtransport.SessionErrorCode(wire.CodeGoingAway), "edge draining; reconnect to another edge")
	})
	defer stop()
	kick := n.joined(name, transportWT)
	defer n.parted(name, transportWT)
	ctx, end := context.WithCancelCause(context.WithValue(n.ctx, sessionKey{}, &session{name: name, token: token, req: req}))
	defer end(nil)
	// A kick or the token's expiry ends the session with its code: the
	// relay server sends the viewer an ERROR with it on the control
	// stream, then the session closes with it.
	defer context.AfterFunc(kick, func() { end(errRemoved) })()
	var expired atomic.Bool
	if !g.Expires.IsZero() {
		t := time.AfterFunc(time.Until(g.Expires), func() {
			expired.Store(true)
			end(auth.ExpiredError(req))
		})
		defer t.Stop()
	}
	err = n.wtRelay.ServeConn(ctx, relay.WebTransport(sess))
	var we *wire.Error
	switch {
	case n.ctx.Err() != nil:
		err = wire.Errorf(wire.CodeGoingAway, "edge draining")
	case kicked(kick.Done()):
		err = errRemoved
	case expired.Load():
		err = auth.ExpiredError(req)
	case errors.As(err, &we):
	case errors.Is(err, relay.ErrControl):
		err = wire.Errorf(wire.CodeBadRequest, "%v", err)
	default:
		err = nil // the viewer left
	}
	n.metrics.disconnect(err)
	if err != nil && wire.CodeOf(err) != wire.CodeGoingAway {
		n.log.Info("viewer dropped", "transport", "wt", "broadcast", name, "remote", r.RemoteAddr, "err", err)
	}
	code, reason := wire.CodeNormal, ""
	if err != nil {
		code, reason = wire.CodeOf(err), wire.Reason(err)
	}
	sess.CloseWithError(webtransport.SessionErrorCode(code), reason)
}

// drainWT tells WebTransport viewers to go away and waits, up to d, for
// them to leave by themselves, so that the GOAWAY is read before the
// session closes.
func (n *Node) drainWT(d time.Duration) {
	if n.wt == nil {
		return
	}
	n.wtRelay.GoAway("")
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		left := n.wtViewers
		n.mu.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CertHashes is the body of GET /cert-hash: how a page reaches this edge
// over WebTransport.
type CertHashes struct {
	// Port is the UDP port of HTTP/3 and WebTransport (/wt/{broadcast}).
	Port int `json:"port"`
	// Algorithm is "sha-256".
	Algorithm string `json:"algorithm"`
	// Hashes are the base64 SHA-256 of the development certificate served
	// now and of the one that replaces it at the next rotation, for
	// WebTransport's serverCertificateHashes. Empty when the edge has a
	// real certificate (-tls-cert): then none are needed.
	Hashes []string `json:"hashes"`
	// Current and Next are Hashes[0] and Hashes[1]; NotAfter is when the
	// current certificate expires (RFC 3339). Absent with a real
	// certificate.
	Current  string `json:"current,omitempty"`
	Next     string `json:"next,omitempty"`
	NotAfter string `json:"notAfter,omitempty"`
}

// serveCertHash is GET /cert-hash.
func (n *Node) serveCertHash(w http.ResponseWriter, r *http.Request) {
	n.cors(w, r)
	w.Header().Set("Cache-Control", "no-store")
	if n.wt == nil {
		http.Error(w, "WebTransport is off on this edge (-wt-listen off)", http.StatusNotFound)
		return
	}
	body := CertHashes{Port: n.wtPort, Algorithm: "sha-256", Hashes: []string{}}
	if n.dev != nil {
		cur, next, notAfter := n.dev.Hashes()
		body.Current = base64.StdEncoding.EncodeToString(cur[:])
		body.Next = base64.StdEncoding.EncodeToString(next[:])
		body.Hashes = []string{body.Current, body.Next}
		body.NotAfter = notAfter.UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(body)
}

// cors lets pages of allowed origins read the response (the player's
// modules and /cert-hash).
func (n *Node) cors(w http.ResponseWriter, r *http.Request) {
	o := r.Header.Get("Origin")
	if o == "" || !n.originAllowed(r) {
		return
	}
	w.Header().Set("Access-Control-Allow-Origin", o)
	w.Header().Add("Vary", "Origin")
}

// certNotAfter is when the served certificate expires, for metrics.
func (n *Node) certNotAfter() float64 {
	switch {
	case n.files != nil:
		return float64(n.files.NotAfter().Unix())
	case n.acme != nil:
		if na := n.acme.NotAfter(); !na.IsZero() {
			return float64(na.Unix())
		}
	case n.dev != nil:
		_, _, na := n.dev.Hashes()
		return float64(na.Unix())
	}
	return 0
}
