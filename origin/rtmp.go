package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

// rtmpSetupTimeout bounds the first seconds of media after an authorised
// publish, in which the stream's tracks are found. The handshake, connect
// and publish commands before it are bounded by -rtmp-auth-timeout.
const rtmpSetupTimeout = 15 * time.Second

// rtmpServer accepts RTMP (or RTMPS) publishers: OBS, ffmpeg and any
// encoder that speaks RTMP. Each connection publishes one broadcast through
// Node.Publish, like a WebSocket publisher; its frames are remuxed into
// CMAF (rtmp_media.go).
type rtmpServer struct {
	n       *Node
	ln      net.Listener
	tls     bool
	conns   prometheus.Gauge
	pendG   prometheus.Gauge
	refused *prometheus.CounterVec

	mu      sync.Mutex
	open    map[net.Conn]struct{}
	pending map[string]int // connections not yet authorised, by client address
	total   int            // sum of pending
	lastLog time.Time      // of a refused connection (at most one line a second)
	closed  bool
	wg      sync.WaitGroup
}

// newRTMPServer binds the RTMP listener, or returns nil when RTMP is off.
func newRTMPServer(n *Node) (*rtmpServer, error) {
	cfg := n.cfg
	if cfg.RTMPListen == "" {
		return nil, nil
	}
	s := &rtmpServer{n: n, open: map[net.Conn]struct{}{}, pending: map[string]int{}}
	var tlsCfg *tls.Config
	switch {
	case cfg.RTMPCert != "" && cfg.RTMPKey != "":
		cert, err := tls.LoadX509KeyPair(cfg.RTMPCert, cfg.RTMPKey)
		if err != nil {
			return nil, fmt.Errorf("origin: RTMPS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case cfg.RTMPCert != "" || cfg.RTMPKey != "":
		return nil, errors.New("origin: RTMPS needs both -rtmp-cert and -rtmp-key")
	}
	ln, err := net.Listen("tcp", cfg.RTMPListen)
	if err != nil {
		return nil, fmt.Errorf("origin: RTMP listen %s: %w", cfg.RTMPListen, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		s.tls = true
	}
	s.ln = ln
	s.conns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_origin_rtmp_connections", Help: "RTMP connections open now (publishing or setting up)."})
	s.pendG = prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_origin_rtmp_pending", Help: "RTMP connections not yet authorised to publish."})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quiccast_origin_rtmp_refused_total",
		Help: "RTMP connections closed on accept because too many were not yet authorised (reason: total or per_ip).",
	}, []string{"reason"})
	n.reg.MustRegister(s.conns, s.pendG, s.refused)
	return s, nil
}

// RTMPAddr returns the bound RTMP address, or nil when RTMP is off.
func (n *Node) RTMPAddr() net.Addr {
	if n.rtmp == nil {
		return nil
	}
	return n.rtmp.ln.Addr()
}

func (s *rtmpServer) start() {
	if s == nil {
		return
	}
	scheme := "rtmp"
	if s.tls {
		scheme = "rtmps"
	}
	s.n.log.Info("RTMP ingest listening", "addr", s.ln.Addr().String(), "url", scheme+"://HOST/live/{broadcast}")
	s.wg.Add(1)
	go s.serve()
}

func (s *rtmpServer) serve() {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, then retry.
			s.n.log.Warn("RTMP accept", "err", err)
			time.Sleep(backoff)
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		ip := clientIP(nc.RemoteAddr())
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if reason := s.admit(ip); reason != "" {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.open[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.conns.Inc()
			defer s.conns.Dec()
			s.handle(nc, sync.OnceFunc(func() { s.authorised(ip) }))
			s.mu.Lock()
			delete(s.open, nc)
			s.mu.Unlock()
		}()
	}
}

// admit counts a new connection as pending, or says why it may not be
// (too many not yet authorised, in total or from ip). Called with s.mu.
func (s *rtmpServer) admit(ip string) (reason string) {
	cfg := &s.n.cfg
	switch {
	case s.total >= cfg.RTMPMaxPending:
		reason = "total"
	case s.pending[ip] >= cfg.RTMPMaxPendingPerIP:
		reason = "per_ip"
	default:
		s.pending[ip]++
		s.total++
		s.pendG.Inc()
		return ""
	}
	s.refused.WithLabelValues(reason).Inc()
	if now := time.Now(); now.Sub(s.lastLog) >= time.Second {
		s.lastLog = now
		s.n.log.Warn("RTMP connection refused: too many not yet authorised", "remote", ip, "reason", reason,
			"pending", s.total, "pending_from_remote", s.pending[ip],
			"limits", fmt.Sprintf("-rtmp-max-pending=%d -rtmp-max-pending-per-ip=%d", cfg.RTMPMaxPending, cfg.RTMPMaxPendingPerIP))
	}
	return reason
}

// authorised ends a connection's pending state: its publish was accepted,
// or it ended.
func (s *rtmpServer) authorised(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[ip]--; s.pending[ip] <= 0 {
		delete(s.pending, ip)
	}
	s.total--
	s.pendG.Dec()
}

// clientIP is the host part of a remote address.
func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// close stops accepting, closes every connection and waits for their
// goroutines. Sessions were already ended by Node.Close.
func (s *rtmpServer) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	for nc := range s.open {
		nc.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// handle runs one connection to its end and reports how it ended.
func (s *rtmpServer) handle(nc net.Conn, authorised func()) {
	defer nc.Close()
	defer authorised()
	remote := nc.RemoteAddr().String()
	c := &rtmpConn{
		n:          s.n,
		nc:         nc,
		remote:     remote,
		log:        s.n.log.With("remote", remote, "ingest", "rtmp"),
		rw:         newIngestConn(nc, s.n.cfg.RTMPIdleTimeout, s.n.cfg.MaxRate),
		authorised: authorised,
	}
	err := c.run()
	switch {
	case c.sess == nil && err != nil:
		c.log.Warn("publish refused", "code", uint16(wire.CodeOf(err)), "err", err)
		s.n.metrics.refuse(err)
		c.closeGracefully()
	case err != nil:
		c.log.Warn("publisher dropped", "code", uint16(wire.CodeOf(err)), "err", err)
		c.closeGracefully()
	default:
		c.log.Info("publisher left")
	}
}

// rtmpConn is one RTMP connection.
type rtmpConn struct {
	n      *Node
	nc     net.Conn
	rw     *ingestConn
	sc     *gortmplib.ServerConn
	remote string
	log    *slog.Logger
	sess   *Session
	media  *rtmpMedia
	// authorised is called once the publish is accepted (nil in tests
	// that build a connection by hand).
	authorised func()
}

// run takes the connection from the handshake to the end of the stream.
// A refusal or a drop is sent to the publisher as an onStatus error.
func (c *rtmpConn) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			// gortmplib and mediacommon parse untrusted bytes; a
			// panic there is bad input, not a reason to crash.
			c.log.Error("RTMP input made a parser panic", "panic", r)
			err = wire.Errorf(wire.CodeBadRequest, "malformed RTMP input")
		}
		if c.sess != nil {
			if err == nil && c.sess.ctx.Err() != nil {
				err = c.sess.EndErr()
			}
			c.sess.Close(err)
		}
		if err != nil && c.sc != nil {
			c.sendStatus(err)
		}
	}()
	if c.rw.guard == nil {
		c.rw.guard = newRTMPGuard() // every connection's bytes pass it, fuzzed ones too
	}
	c.rw.setupUntil(time.Now().Add(c.n.cfg.RTMPAuthTimeout), fmt.Sprintf("RTMP handshake, connect and publish not done within %s", c.n.cfg.RTMPAuthTimeout))
	sc := &gortmplib.ServerConn{RW: c.rw}
	if err := sc.Initialize(); err != nil {
		return c.protocolError("handshake or connect", err)
	}
	if err := sc.AcceptConn(); err != nil {
		return c.protocolError("connect", err)
	}
	c.sc = sc
	if !sc.Publish {
		return wire.Errorf(wire.CodeBadRequest, "this origin only takes publishers; play from an edge (/hls/{broadcast}/index.m3u8 or /ws/{broadcast})")
	}
	name, token, err := rtmpTarget(sc.URL)
	if err != nil {
		return err
	}
	c.log = c.log.With("broadcast", name)
	sess, err := c.n.PublishRequest(context.Background(), auth.Request{Broadcast: name, Token: token, Remote: c.remote,
		App: "live", URL: auth.RedactURL(sc.URL), FlashVer: sc.FlashVer, Args: sc.URL.Query()})
	if err != nil {
		if token == "" && wire.CodeOf(err) == wire.CodeUnauthorized {
			// RTMP carries the token in the stream key, not in a header.
			return wire.Errorf(wire.CodeUnauthorized, "publish %q needs a key: rtmp://HOST/live/%s?key=TOKEN (OBS: Stream Key %s?key=TOKEN)", name, name, name)
		}
		return err
	}
	c.sess = sess
	sess.SetProtocol("rtmp")
	if c.authorised != nil {
		c.authorised()
	}
	c.rw.setupUntil(time.Now().Add(rtmpSetupTimeout), fmt.Sprintf("RTMP setup (first media and its tracks) not done within %s", rtmpSetupTimeout))
	finished := make(chan struct{})
	defer close(finished) // runs before the session closes
	go func() {           // origin shutdown: unblock the reader
		select {
		case <-sess.Done():
			select {
			case <-finished:
			default:
				c.rw.stop()
			}
		case <-finished:
		}
	}()
	c.log.Info("RTMP publisher connected", "url", auth.RedactURL(sc.URL))
	c.media = newRTMPMedia(c)
	if err := c.media.start(); err != nil {
		return c.streamError(err)
	}
	c.rw.setupUntil(time.Time{}, "")
	for {
		if err := c.media.readOne(); err != nil {
			return c.streamError(err)
		}
	}
}

// protocolError classifies an error before the publish command.
func (c *rtmpConn) protocolError(stage string, err error) error {
	if cause := c.rw.failure(); cause != nil {
		return cause
	}
	var ue *url.Error
	if errors.As(err, &ue) { // the stream key; url.Error quotes it, token and all
		return wire.Errorf(wire.CodeBadRequest, "RTMP %s: %s is not a valid URL: %v", stage, auth.Redact(ue.URL), ue.Err)
	}
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) {
		return &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("RTMP %s: connection ended", stage), Err: err}
	}
	msg := fmt.Sprintf("RTMP %s: %v", stage, err)
	if red := auth.Redact(msg); red != msg {
		return &wire.Error{Code: wire.CodeBadRequest, Msg: red} // not wrapped: err holds the secret
	}
	return &wire.Error{Code: wire.CodeBadRequest, Msg: msg, Err: err}
}

// streamError classifies an error while publishing; nil is a clean end.
func (c *rtmpConn) streamError(err error) error {
	var we *wire.Error
	switch {
	case c.rw.failure() != nil:
		return c.rw.failure()
	case errors.As(err, &we):
		return err
	case c.sess.ctx.Err() != nil:
		return c.sess.EndErr()
	case errors.Is(err, io.EOF):
		if ferr := c.media.flush(); ferr != nil {
			return ferr
		}
		return nil // the publisher left
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		_ = c.media.flush() // the last frame is still good media
		return &wire.Error{Code: wire.CodeGoingAway, Msg: "publisher connection lost", Err: err}
	}
	return &wire.Error{Code: wire.CodeInvalidMedia, Msg: fmt.Sprintf("RTMP stream: %v", err), Err: err}
}

// sendStatus tells the publisher why it is refused or dropped: an onStatus
// error (ffmpeg prints its description as "Server error: …"). The
// description starts with the wire code.
func (c *rtmpConn) sendStatus(err error) {
	code := "NetStream.Publish.Rejected"
	switch wire.CodeOf(err) {
	case wire.CodeUnauthorized, wire.CodeForbidden:
		code = "NetStream.Publish.Unauthorized"
	case wire.CodeConflict, wire.CodeBadRequest:
		code = "NetStream.Publish.BadName"
	case wire.CodeGoingAway, wire.CodeTimeout:
		code = "NetStream.Publish.Failed"
	}
	if !c.sc.Publish {
		code = "NetStream.Play.Failed"
	}
	desc := fmt.Sprintf("quiccast %d: %s", uint16(wire.CodeOf(err)), wire.Reason(err))
	c.rw.writeOnly()
	_ = c.sc.Write(&message.CommandAMF0{
		ChunkStreamID:   5,
		MessageStreamID: 0x1000000,
		Name:            "onStatus",
		Arguments: []any{nil, amf0.Object{
			{Key: "level", Value: "error"},
			{Key: "code", Value: code},
			{Key: "description", Value: desc},
		}},
	})
}

// closeGracefully half-closes the connection and drains what the peer
// still sends for a moment, so that the status just written reaches it
// instead of being lost to a reset.
func (c *rtmpConn) closeGracefully() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 8<<20))
}

// rtmpTarget returns the broadcast and token of an RTMP URL:
// rtmp://host/live/{broadcast}?key=TOKEN (token= works too). OBS users put
// "{broadcast}?key=TOKEN" in the stream key field.
func rtmpTarget(u *url.URL) (name, token string, err error) {
	name, ok := strings.CutPrefix(u.Path, "/live/")
	if !ok || name == "" {
		return "", "", wire.Errorf(wire.CodeBadRequest, "RTMP path %q: publish to rtmp://HOST/live/{broadcast}", u.Path)
	}
	q := u.Query()
	token = q.Get("key")
	if token == "" {
		token = q.Get("token")
	}
	return name, token, nil
}

// ingestConn is a publisher's socket with the ingest limits: an idle
// timeout on every read, a deadline for the setup phase, a byte rate and a
// deadline on every write.
type ingestConn struct {
	nc       net.Conn
	idle     time.Duration
	setup    time.Time // reads must finish by then; zero once set up
	setupMsg string    // the error when setup is missed
	guard    *rtmpGuard
	rate     *bucket
	maxRate  int64
	cause    error // why a read failed, when it was one of the limits
	noRead   bool

	mu      sync.Mutex // orders stop against the deadline a read sets
	stopped bool
}

func newIngestConn(nc net.Conn, idle time.Duration, maxRate int64) *ingestConn {
	return &ingestConn{nc: nc, idle: idle, rate: newBucket(float64(maxRate)), maxRate: maxRate}
}

func (c *ingestConn) setupUntil(t time.Time, msg string) { c.setup, c.setupMsg = t, msg }

// writeOnly makes further reads fail at once (after a refusal only the
// status goes out).
func (c *ingestConn) writeOnly() { c.noRead = true }

func (c *ingestConn) failure() error { return c.cause }

// stop makes a blocked or later read fail at once. Safe from any goroutine.
func (c *ingestConn) stop() {
	c.mu.Lock()
	c.stopped = true
	c.nc.SetReadDeadline(time.Now())
	c.mu.Unlock()
}

func (c *ingestConn) Read(p []byte) (int, error) {
	if c.noRead {
		return 0, io.EOF
	}
	now := time.Now()
	dl := now.Add(c.idle)
	if !c.setup.IsZero() && c.setup.Before(dl) {
		dl = c.setup
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.nc.SetReadDeadline(dl)
	c.mu.Unlock()
	k, err := c.nc.Read(p)
	if k > 0 && !c.rate.take(float64(k), time.Now()) {
		c.cause = wire.Errorf(wire.CodeRateLimited, "more than %d bytes per second", c.maxRate)
		return 0, c.cause
	}
	if k > 0 && c.guard != nil {
		if gerr := c.guard.scan(p[:k]); gerr != nil {
			c.cause = gerr
			return 0, gerr
		}
	}
	var ne net.Error
	if err != nil && c.cause == nil && errors.As(err, &ne) && ne.Timeout() {
		switch {
		case !c.setup.IsZero() && !time.Now().Before(c.setup):
			c.cause = wire.Errorf(wire.CodeTimeout, "%s", c.setupMsg)
		case time.Since(now) >= c.idle:
			c.cause = wire.Errorf(wire.CodeTimeout, "no data for %s", c.idle)
		}
	}
	return k, err
}

func (c *ingestConn) Write(p []byte) (int, error) {
	c.nc.SetWriteDeadline(time.Now().Add(writeWait))
	return c.nc.Write(p)
}
