package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// Errors that end a subscription.
var (
	ErrEnded  = errors.New("relay: broadcast ended")
	ErrGoAway = errors.New("relay: upstream is draining")
)

// ClientConfig configures the subscribing side.
type ClientConfig struct {
	Node  string // this node's id, sent in HELLO
	Token string // cluster token (relay) or play token (viewers)
	// TLS for Dial; nil means ClientTLS(TLSFiles{}) (no verification:
	// peers authenticate with Token).
	TLS  *tls.Config
	QUIC *quic.Config
	// MaxPayload bounds one object. Default wire.MaxPayload.
	MaxPayload int
	// GroupIdle abandons a group stream that delivers nothing this long.
	// Default 10 s.
	GroupIdle time.Duration
	// Timeout bounds the handshake, HELLO and SUBSCRIBE. Default 5 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

func (c *ClientConfig) defaults() {
	if c.MaxPayload <= 0 {
		c.MaxPayload = wire.MaxPayload
	}
	if c.GroupIdle <= 0 {
		c.GroupIdle = 10 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// QUICConfig is the QUIC configuration relay peers use: keep-alives, room
// for many group streams, windows for high-bitrate broadcasts.
func QUICConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:                5 * time.Second,
		MaxIdleTimeout:                 15 * time.Second,
		MaxIncomingStreams:             16,
		MaxIncomingUniStreams:          4096,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		// With QLOGDIR set, every relay connection writes a qlog there.
		Tracer: qlog.DefaultConnectionTracer,
	}
}

// ServerQUICConfig is QUICConfig for a relay listener. A subscriber sends
// the server only its control stream (HELLO, SUBSCRIBE, UNSUBSCRIBE), so the
// windows for what peers send are small: an unauthenticated peer can make
// the server buffer at most MaxConnectionReceiveWindow bytes, not megabytes
// per stream. Group streams flow the other way and are unaffected.
func ServerQUICConfig() *quic.Config {
	c := QUICConfig()
	c.MaxIncomingStreams = 4     // the control stream; a few spare
	c.MaxIncomingUniStreams = -1 // subscribers open none
	c.InitialStreamReceiveWindow = 32 << 10
	c.MaxStreamReceiveWindow = 64 << 10
	c.InitialConnectionReceiveWindow = 64 << 10
	c.MaxConnectionReceiveWindow = 128 << 10
	return c
}

// Client is one connection to an upstream, carrying any number of
// subscriptions.
type Client struct {
	cfg  ClientConfig
	conn Conn
	ctl  *control
	peer string // upstream node id
	inc  string // upstream's incarnation ("" if it sent none)

	mu     sync.Mutex
	subs   map[uint32]*Subscription
	nextID uint32
	done   chan struct{}
	err    error
}

// Dial connects to a relay server at addr (host:port, UDP).
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	cfg.defaults()
	tc := cfg.TLS
	if tc == nil {
		var err error
		if tc, err = ClientTLS(TLSFiles{}); err != nil {
			return nil, err
		}
	}
	qc := cfg.QUIC
	if qc == nil {
		qc = QUICConfig()
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	qconn, err := quic.DialAddr(dctx, addr, tc, qc)
	if err != nil {
		return nil, fmt.Errorf("relay: dial %s: %w", addr, err)
	}
	c, err := NewClient(ctx, QUIC(qconn), cfg)
	if err != nil {
		qconn.CloseWithError(0, "")
		return nil, fmt.Errorf("relay: %s: %w", addr, err)
	}
	return c, nil
}

// NewClient runs the protocol on an established connection: it opens the
// control stream and says HELLO.
func NewClient(ctx context.Context, conn Conn, cfg ClientConfig) (*Client, error) {
	cfg.defaults()
	hctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	st, err := conn.OpenStreamSync(hctx)
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	st.SetPriority(0)
	c := &Client{cfg: cfg, conn: conn, ctl: &control{s: st, timeout: cfg.Timeout}, subs: map[uint32]*Subscription{}, done: make(chan struct{})}
	if err := c.ctl.send(&Msg{Type: MsgHello, Token: cfg.Token, Node: cfg.Node, Version: Version}); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	st.SetReadDeadline(time.Now().Add(cfg.Timeout))
	m, err := readMsg(st)
	if err != nil {
		if code, reason, ok := CloseCode(err); ok {
			return nil, &wire.Error{Code: code, Msg: reason, Err: err}
		}
		return nil, fmt.Errorf("hello: %w", err)
	}
	if m.Type == MsgError {
		return nil, &wire.Error{Code: m.Code, Msg: m.Reason}
	}
	if m.Type != MsgHelloOK {
		return nil, fmt.Errorf("hello: got %q", m.Type)
	}
	st.SetReadDeadline(time.Time{})
	c.peer, c.inc = m.Node, m.Incarnation
	go c.readControl()
	go c.acceptGroups()
	return c, nil
}

// Peer returns the upstream's node id.
func (c *Client) Peer() string { return c.peer }

// Incarnation returns the upstream process's incarnation from its
// HELLO_OK, "" if it sent none.
func (c *Client) Incarnation() string { return c.inc }

// Done is closed when the connection is gone; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection and ends its subscriptions.
func (c *Client) Close() error {
	c.fail(errors.New("relay: client closed"))
	return c.conn.CloseWithError(wire.CodeNormal, "")
}

// fail ends the connection's subscriptions with err, once.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	subs := c.subs
	c.subs = map[uint32]*Subscription{}
	close(c.done)
	c.mu.Unlock()
	for _, s := range subs {
		s.finish(err)
	}
}

func (c *Client) sub(id uint32) *Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[id]
}

func (c *Client) readControl() {
	for {
		m, err := readMsg(c.ctl.s)
		if err != nil {
			if code, reason, ok := CloseCode(err); ok {
				err = &wire.Error{Code: code, Msg: reason, Err: err}
			}
			c.fail(fmt.Errorf("relay: upstream %s: %w", c.peer, err))
			return
		}
		switch m.Type {
		case MsgGoAway:
			c.fail(ErrGoAway)
			return
		case MsgError:
			if m.ID == 0 {
				c.fail(&wire.Error{Code: m.Code, Msg: m.Reason})
				return
			}
			if s := c.sub(m.ID); s != nil {
				s.reply(m)
			}
		case MsgSubscribeOK:
			if s := c.sub(m.ID); s != nil {
				s.reply(m)
			}
		case MsgAnnounce:
			if s := c.sub(m.ID); s != nil {
				if err := s.addCatalog(m); err != nil {
					s.finish(err)
				}
			}
		case MsgEnded:
			if s := c.sub(m.ID); s != nil {
				s.finish(ErrEnded)
			}
		}
	}
}

func (c *Client) acceptGroups() {
	ctx := c.conn.Context()
	for {
		rs, err := c.conn.AcceptUniStream(ctx)
		if err != nil {
			c.fail(fmt.Errorf("relay: upstream %s: %w", c.peer, err))
			return
		}
		go c.readGroup(rs)
	}
}

// readGroup appends one group stream's objects to its subscription's
// mirror. A group cut short (reset, idle, malformed) is finished there so
// that readers move on.
func (c *Client) readGroup(rs ReceiveStream) {
	rs.SetReadDeadline(time.Now().Add(c.cfg.GroupIdle))
	h, err := readGroupHeader(rs)
	if err != nil {
		rs.CancelRead(wire.CodeBadRequest)
		return
	}
	s := c.sub(h.Sub)
	if s == nil {
		rs.CancelRead(wire.CodeNotFound) // unsubscribed meanwhile
		return
	}
	cat := s.catalog(h.Epoch, c.cfg.Timeout)
	if cat == nil || int(h.Track) >= len(cat.Tracks) {
		rs.CancelRead(wire.CodeBadRequest)
		return
	}
	s.Groups.Add(1)
	complete := false
	defer func() {
		if !complete {
			s.Cut.Add(1)
			s.into.Finish(h.Track, h.Group, time.Now().UnixNano())
		}
	}()
	for {
		rs.SetReadDeadline(time.Now().Add(c.cfg.GroupIdle))
		fh, err := wire.ReadHeader(rs)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				rs.CancelRead(wire.CodeBadRequest)
			}
			return
		}
		if fh.Kind != wire.KindObject || fh.Track != h.Track || fh.Group != h.Group || int(fh.Length) > c.cfg.MaxPayload {
			rs.CancelRead(wire.CodeBadRequest)
			return
		}
		o, err := media.ReadObject(fh, rs, time.Now().UnixNano())
		if err != nil {
			return
		}
		if err := s.into.AppendIn(o, cat); err != nil {
			if !errors.Is(err, media.ErrClosed) {
				c.cfg.Logger.Debug("relay: object dropped", "broadcast", s.Name, "group", fh.Group, "err", err)
			}
			rs.CancelRead(wire.CodeBadRequest)
			return
		}
		s.Bytes.Add(int64(wire.HeaderLen) + int64(fh.Length))
		if fh.Flags&wire.FlagEndOfGroup != 0 {
			complete = true
			return
		}
		s.Objects.Add(1)
	}
}

// Subscription is one broadcast mirrored from the upstream into a local
// media.Broadcast.
type Subscription struct {
	Name string
	// Counters, for metrics and tests.
	Groups  atomic.Int64 // group streams received
	Cut     atomic.Int64 // group streams that ended without their end marker (reset, lost)
	Objects atomic.Int64 // media objects (end markers not counted)
	Bytes   atomic.Int64 // frame bytes, markers included

	c    *Client
	id   uint32
	into *media.Broadcast

	replied chan *Msg
	mu      sync.Mutex
	cats    map[uint64]*media.Catalog
	catCh   chan struct{} // closed and replaced when a catalog arrives
	done    chan struct{}
	err     error
}

// Subscribe asks the upstream for name from group start on (nil: from
// the newest group) and mirrors it into into, which it gives the catalog.
// It returns once the upstream accepted (SUBSCRIBE_OK) or refused (a
// *wire.Error, 4004 for an unknown broadcast).
func (c *Client) Subscribe(ctx context.Context, name string, start *uint64, into *media.Broadcast) (*Subscription, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	s := &Subscription{Name: name, c: c, id: c.nextID, into: into, replied: make(chan *Msg, 1),
		cats: map[uint64]*media.Catalog{}, catCh: make(chan struct{}), done: make(chan struct{})}
	c.subs[s.id] = s
	c.mu.Unlock()
	if err := c.ctl.send(&Msg{Type: MsgSubscribe, ID: s.id, Broadcast: name, Start: start}); err != nil {
		s.Close()
		return nil, err
	}
	t := time.NewTimer(c.cfg.Timeout)
	defer t.Stop()
	select {
	case m := <-s.replied:
		if m.Type == MsgError {
			s.drop()
			return nil, &wire.Error{Code: m.Code, Msg: m.Reason}
		}
		if err := s.addCatalog(m); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	case <-t.C:
		s.Close()
		return nil, fmt.Errorf("relay: subscribe %q: no answer within %s", name, c.cfg.Timeout)
	}
}

func (s *Subscription) reply(m *Msg) {
	select {
	case s.replied <- m:
	default:
	}
}

// addCatalog takes a SUBSCRIBE_OK or ANNOUNCE: the epoch's catalog becomes
// the mirror's current one.
func (s *Subscription) addCatalog(m *Msg) error {
	if m.Catalog == nil {
		return fmt.Errorf("relay: %s without a catalog", m.Type)
	}
	s.mu.Lock()
	cat, ok := s.cats[m.Catalog.Epoch]
	s.mu.Unlock()
	if !ok {
		var err error
		if cur := s.into.Catalog(); cur != nil && cur.Epoch == m.Catalog.Epoch && sameInits(cur, m.Inits) {
			cat = cur // a resubscription to the same epoch: keep it, so viewers see no change
		} else if cat, err = media.NewCatalog(*m.Catalog, m.Inits); err != nil {
			return fmt.Errorf("relay: %s: %w", m.Type, err)
		}
	}
	if s.into.Catalog() != cat {
		if err := s.into.SetCatalog(cat); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.cats[cat.Epoch] = cat
	close(s.catCh)
	s.catCh = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func sameInits(c *media.Catalog, inits [][]byte) bool {
	if len(c.Inits) != len(inits) {
		return false
	}
	for i, in := range c.Inits {
		if string(in.Payload()) != string(inits[i]) {
			return false
		}
	}
	return true
}

// catalog waits up to d for the catalog of epoch: a group stream can
// overtake the ANNOUNCE that precedes it.
func (s *Subscription) catalog(epoch uint64, d time.Duration) *media.Catalog {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		cat, ch := s.cats[epoch], s.catCh
		s.mu.Unlock()
		if cat != nil {
			return cat
		}
		select {
		case <-ch:
		case <-s.done:
			return nil
		case <-t.C:
			return nil
		}
	}
}

// Done is closed when the subscription ends; Err says why (ErrEnded when
// the broadcast ended).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscription) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	close(s.done)
}

func (s *Subscription) drop() {
	s.c.mu.Lock()
	if s.c.subs[s.id] == s {
		delete(s.c.subs, s.id)
	}
	s.c.mu.Unlock()
	s.finish(errors.New("relay: unsubscribed"))
}

// Close unsubscribes. The mirror is left as it is.
func (s *Subscription) Close() {
	s.drop()
	s.c.ctl.send(&Msg{Type: MsgUnsubscribe, ID: s.id})
}
