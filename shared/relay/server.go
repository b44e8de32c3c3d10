package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// Lookup returns a live broadcast and a function to call when done with
// it, or an error carrying a wire code (4004 for an unknown broadcast).
type Lookup func(ctx context.Context, name string) (*media.Broadcast, func(), error)

// ServerConfig configures the serving side. Zero fields take defaults.
type ServerConfig struct {
	// Node is this node's id, sent in HELLO_OK.
	Node string
	// Incarnation is this run of the node's process (random per start),
	// sent in HELLO_OK and announced in the registry, so that a peer
	// knows a restart on the same address for what it is.
	Incarnation string
	// Action is what a subscriber is authorised for: auth.Relay for relay
	// peers (checked once per connection, on HELLO), auth.Play for
	// viewers (checked per SUBSCRIBE, with the HELLO's token).
	Action auth.Action
	Auth   auth.Authorizer
	Lookup Lookup
	// MaxGroupsBehind: a group still being sent when this many newer
	// groups exist is reset instead of queued. Default 2.
	MaxGroupsBehind int
	// MaxLag, when set, resets a group still being sent as soon as a
	// newer group exists and its next object arrived here more than
	// MaxLag ago: the subscriber is behind, and the newest group goes
	// first. It is how a connection whose streams have no priorities
	// (WebTransport: webtransport-go has no SetPriority) sheds old groups
	// instead of letting them compete with the newest; 0: off (relay
	// peers, whose streams have priorities).
	MaxLag time.Duration
	// WriteTimeout bounds control-stream writes and how long a group
	// stream may accept nothing before it is reset. Default 10 s.
	WriteTimeout time.Duration
	// HelloTimeout bounds the wait for the control stream and HELLO, the
	// time an unauthenticated peer may hold a connection. Default 3 s.
	HelloTimeout time.Duration
	// MaxSubscriptions bounds subscriptions per connection. Default 1024.
	MaxSubscriptions int
	// OnePerBroadcast refuses (4009) a SUBSCRIBE to a broadcast this
	// connection already receives: a viewer's session holds one viewer
	// slot and must not take several times its egress.
	OnePerBroadcast bool
	// Sent, when set, is called with each object (end-of-group markers
	// included) once it is written to its group stream, for the delay
	// histograms. It must be cheap: it runs once per object per
	// subscriber.
	Sent   func(o *media.Object)
	Logger *slog.Logger
}

func (c *ServerConfig) defaults() {
	if c.MaxGroupsBehind <= 0 {
		c.MaxGroupsBehind = 2
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = 3 * time.Second
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 1024
	}
	if c.Auth == nil {
		c.Auth = auth.AllowAll{}
	}
	if c.Action == "" {
		c.Action = auth.Relay
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Stats counts what a Server did. Read with the atomics' Load.
type Stats struct {
	Conns         atomic.Int64 // connections open
	Subscriptions atomic.Int64 // subscriptions open
	Subscribes    atomic.Int64 // subscriptions ever started
	Groups        atomic.Int64 // group streams opened
	Resets        atomic.Int64 // group streams reset because they fell behind
	LagResets     atomic.Int64 // of those, reset by MaxLag with a newer group waiting
	Bytes         atomic.Int64 // frame bytes written to group streams
	Refused       atomic.Int64 // connections or subscriptions refused
}

// Server serves broadcasts to subscribers.
type Server struct {
	cfg   ServerConfig
	Stats Stats

	mu      sync.Mutex
	conns   map[*serverConn]struct{}
	goaway  bool
	goawayU string

	wmu      sync.Mutex
	writers  map[*writer]struct{} // sending goroutines, watched while they write
	watching bool                 // the watchdog runs
}

// NewServer returns a Server.
func NewServer(cfg ServerConfig) *Server {
	cfg.defaults()
	return &Server{cfg: cfg, conns: map[*serverConn]struct{}{}, writers: map[*writer]struct{}{}}
}

// Serve accepts QUIC connections from ln until ctx is done or ln fails.
func (s *Server) Serve(ctx context.Context, ln *quic.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeConn(ctx, QUIC(c))
		}()
	}
}

// GoAway tells every connected subscriber, now and later, to move
// elsewhere (to url, if set). A draining node calls it.
func (s *Server) GoAway(url string) {
	s.mu.Lock()
	s.goaway, s.goawayU = true, url
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.ctl.send(&Msg{Type: MsgGoAway, URL: url})
	}
}

type serverConn struct {
	s     *Server
	conn  Conn
	ctl   *control
	hello *Msg
	log   *slog.Logger

	mu    sync.Mutex
	subs  map[uint32]context.CancelFunc
	names map[string]uint32 // broadcast → subscription id
	wg    sync.WaitGroup
}

// ServeConn runs the protocol on one connection until it closes or ctx is
// done. The peer opens the control stream and says HELLO first.
//
// When ctx is cancelled with a *wire.Error as its cause
// (context.WithCancelCause), the peer gets that code and reason: an ERROR
// message on the control stream, then the connection's close. Otherwise a
// cancelled ctx closes the connection with 1001 (node shutting down).
func (s *Server) ServeConn(ctx context.Context, conn Conn) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ctl atomic.Pointer[control] // once HELLO_OK is sent
	// No goroutine waits for the ends (a viewer's session would pay one):
	// the connection's end cancels ctx, and ctx's end runs the close.
	defer context.AfterFunc(conn.Context(), cancel)()
	context.AfterFunc(ctx, func() {
		// A read on the control stream does not see ctx: when the
		// server stops, closing the connection ends it (and tells the
		// peer to go elsewhere), so Serve's callers do not wait for
		// peers that never hang up.
		if parent.Err() == nil {
			return
		}
		var we *wire.Error
		if errors.As(context.Cause(parent), &we) {
			// The ERROR message first: a peer reading the control
			// stream sees it before the close resets the stream.
			// Closing at once would reset the stream before the
			// message arrives: give the peer a moment to read it and
			// hang up.
			if c := ctl.Load(); c != nil && c.send(&Msg{Type: MsgError, Code: we.Code, Reason: wire.Reason(we)}) == nil {
				select {
				case <-conn.Context().Done():
				case <-time.After(time.Second):
				}
			}
			conn.CloseWithError(we.Code, wire.Reason(we))
			return
		}
		conn.CloseWithError(wire.CodeGoingAway, "node shutting down")
	})
	log := s.cfg.Logger.With("peer", conn.RemoteAddr().String())
	refuse := func(err error) error {
		s.Stats.Refused.Add(1)
		log.Warn("relay: connection refused", "err", err)
		conn.CloseWithError(wire.CodeOf(err), wire.Reason(err))
		return err
	}
	actx, acancel := context.WithTimeout(ctx, s.cfg.HelloTimeout)
	st, err := conn.AcceptStream(actx)
	acancel()
	if err != nil {
		return refuse(wire.Errorf(wire.CodeBadRequest, "no control stream within %s", s.cfg.HelloTimeout))
	}
	st.SetPriority(0)
	st.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	hello, err := readMsgMax(st, MaxHello)
	switch {
	case errors.Is(err, ErrControl):
		return refuse(wire.Errorf(wire.CodeBadRequest, "HELLO: %v", err))
	case err != nil:
		return refuse(wire.Errorf(wire.CodeBadRequest, "no HELLO within %s: %v", s.cfg.HelloTimeout, err))
	case hello.Type != MsgHello:
		return refuse(wire.Errorf(wire.CodeBadRequest, "want HELLO first on the control stream, got %q", hello.Type))
	}
	if hello.Version != Version {
		return refuse(wire.Errorf(wire.CodeBadRequest, "protocol version %d, this node speaks %d", hello.Version, Version))
	}
	st.SetReadDeadline(time.Time{})
	if s.cfg.Action == auth.Relay {
		if err := s.cfg.Auth.Authorize(ctx, auth.Request{Action: auth.Relay, Token: hello.Token, Remote: conn.RemoteAddr().String()}); err != nil {
			return refuse(err)
		}
	}
	c := &serverConn{s: s, conn: conn, ctl: &control{s: st, timeout: s.cfg.WriteTimeout}, hello: hello,
		log: log.With("node", hello.Node), subs: map[uint32]context.CancelFunc{}, names: map[string]uint32{}}
	if err := c.ctl.send(&Msg{Type: MsgHelloOK, Node: s.cfg.Node, Incarnation: s.cfg.Incarnation}); err != nil {
		return err
	}
	ctl.Store(c.ctl)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	goaway, url := s.goaway, s.goawayU
	s.mu.Unlock()
	s.Stats.Conns.Add(1)
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.Stats.Conns.Add(-1)
		cancel()
		c.wg.Wait()
	}()
	if goaway {
		c.ctl.send(&Msg{Type: MsgGoAway, URL: url})
	}
	for {
		m, err := readMsg(st)
		if err != nil {
			if errors.Is(err, ErrControl) {
				conn.CloseWithError(wire.CodeBadRequest, err.Error())
			}
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch m.Type {
		case MsgSubscribe:
			c.subscribe(ctx, m)
		case MsgUnsubscribe:
			c.mu.Lock()
			if stop, ok := c.subs[m.ID]; ok {
				stop()
				delete(c.subs, m.ID)
			}
			for name, id := range c.names {
				if id == m.ID {
					delete(c.names, name)
				}
			}
			c.mu.Unlock()
		default:
			// Unknown messages are ignored, so that newer peers can
			// add some.
		}
	}
}

func (c *serverConn) subscribe(ctx context.Context, m *Msg) {
	fail := func(err error) {
		c.s.Stats.Refused.Add(1)
		c.log.Info("relay: subscribe refused", "broadcast", m.Broadcast, "err", err)
		c.ctl.send(&Msg{Type: MsgError, ID: m.ID, Code: wire.CodeOf(err), Reason: wire.Reason(err)})
	}
	if err := media.ValidName(m.Broadcast); err != nil {
		fail(wire.Errorf(wire.CodeBadRequest, "%v", err))
		return
	}
	if c.s.cfg.Action != auth.Relay {
		if err := c.s.cfg.Auth.Authorize(ctx, auth.Request{Action: c.s.cfg.Action, Broadcast: m.Broadcast, Token: c.hello.Token, Remote: c.conn.RemoteAddr().String()}); err != nil {
			fail(err)
			return
		}
	}
	c.mu.Lock()
	_, dup := c.subs[m.ID]
	full := len(c.subs) >= c.s.cfg.MaxSubscriptions
	prev, again := c.names[m.Broadcast]
	again = again && c.s.cfg.OnePerBroadcast
	var sctx context.Context
	if !dup && !full && !again {
		var stop context.CancelFunc
		sctx, stop = context.WithCancel(ctx)
		c.subs[m.ID] = stop
		c.names[m.Broadcast] = m.ID
	}
	c.mu.Unlock()
	switch {
	case dup:
		fail(wire.Errorf(wire.CodeBadRequest, "subscription id %d already in use", m.ID))
		return
	case again:
		fail(wire.Errorf(wire.CodeConflict, "broadcast %q is already subscribed on this connection (id %d); one subscription per broadcast", m.Broadcast, prev))
		return
	case full:
		fail(wire.Errorf(wire.CodeOverCapacity, "more than %d subscriptions on one connection", c.s.cfg.MaxSubscriptions))
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		(&sender{c: c, id: m.ID, name: m.Broadcast, start: m.Start}).run(sctx)
		c.mu.Lock()
		if stop, ok := c.subs[m.ID]; ok {
			stop()
			delete(c.subs, m.ID)
		}
		if c.names[m.Broadcast] == m.ID {
			delete(c.names, m.Broadcast)
		}
		c.mu.Unlock()
	}()
}

// sender sends one subscription: its catalogs on the control stream and
// each group on a stream of its own.
//
// One goroutine follows each track: it sends the track's groups one after
// the other, waking once per object. Only when the group it sends cannot
// be finished while a newer one waits (its writes block, or its end has
// not arrived yet) does it hand following over to a new goroutine and
// finish, or reset, its own group alone, so that a slow group never holds
// the newer one back. The first track is followed on the subscription's
// own goroutine.
type sender struct {
	c     *serverConn
	id    uint32
	name  string
	start *uint64
	b     *media.Broadcast
	ended sync.Once // ENDED sent

	mu        sync.Mutex
	announced map[*media.Catalog]bool
	active    map[uint16][]*groupStream // per track, oldest first
}

type groupStream struct {
	seq uint64
	s   SendStream
}

// follower is the state of one track's following: the next group to
// send. Only the goroutine that follows touches it; a hand-over passes it
// on.
type follower struct {
	ti      uint16
	next    uint64
	started bool
	wg      *sync.WaitGroup // the track's goroutines beyond the first
}

func (s *sender) run(ctx context.Context) {
	srv := s.c.s
	b, release, err := srv.cfg.Lookup(ctx, s.name)
	if err != nil {
		srv.Stats.Refused.Add(1)
		s.c.log.Info("relay: subscribe refused", "broadcast", s.name, "err", err)
		s.c.ctl.send(&Msg{Type: MsgError, ID: s.id, Code: wire.CodeOf(err), Reason: wire.Reason(err)})
		return
	}
	defer release()
	s.b = b
	s.announced = map[*media.Catalog]bool{}
	s.active = map[uint16][]*groupStream{}
	// SUBSCRIBE_OK carries the current catalog; groups of other epochs
	// are announced before their streams open.
	var cat *media.Catalog
	for cat == nil {
		ch := b.Changed()
		if cat = b.Catalog(); cat != nil {
			break
		}
		select {
		case <-ch:
		case <-b.Done():
			s.end()
			return
		case <-ctx.Done():
			return
		}
	}
	s.announced[cat] = true
	if err := s.c.ctl.send(catalogMsg(MsgSubscribeOK, s.id, cat)); err != nil {
		return
	}
	srv.Stats.Subscriptions.Add(1)
	srv.Stats.Subscribes.Add(1)
	defer srv.Stats.Subscriptions.Add(-1)
	lvl := slog.LevelInfo
	if srv.cfg.Action != auth.Relay {
		lvl = slog.LevelDebug // a viewer: there may be thousands
	}
	s.c.log.Log(ctx, lvl, "relay: subscribed", "broadcast", s.name, "sub", s.id)
	var wg sync.WaitGroup
	tctx, stop := context.WithCancel(ctx)
	follow := func(ti uint16) {
		f := &follower{ti: ti, wg: &wg}
		if s.start != nil {
			f.started, f.next = true, *s.start
		}
		s.follow(tctx, f)
	}
	for ti := 1; ti < len(cat.Tracks); ti++ {
		wg.Go(func() { follow(uint16(ti)) })
	}
	if len(cat.Tracks) > 0 {
		follow(0) // returns when the broadcast ends, or early: handed over, or the connection failed
	}
	select {
	case <-b.Done():
		s.end()
	case <-ctx.Done():
	}
	stop()
	wg.Wait()
}

// end sends ENDED, once.
func (s *sender) end() {
	s.ended.Do(func() { s.c.ctl.send(&Msg{Type: MsgEnded, ID: s.id}) })
}

// follow sends f's track's groups in order until ctx is done or the
// broadcast ends, or until it hands following over (see sender).
func (s *sender) follow(ctx context.Context, f *follower) {
	w := s.c.s.watch(s, ctx)
	defer s.c.s.unwatch(w)
	for {
		g := s.nextGroup(ctx, f)
		if g == nil {
			return
		}
		if err := s.announce(g.Catalog); err != nil {
			return
		}
		// Waits while the peer allows no more streams (it has that
		// many groups open).
		str, err := s.c.conn.OpenUniStreamSync(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.c.log.Warn("relay: cannot open a group stream; ending the subscription", "broadcast", s.name, "err", err)
				s.c.conn.CloseWithError(wire.CodeInternal, "cannot open group streams")
			}
			return
		}
		var hb [GroupHeaderLen]byte
		GroupHeader{Sub: s.id, Track: f.ti, Group: g.Seq, Epoch: g.Catalog.Epoch}.Put(hb[:])
		gs := &groupStream{seq: g.Seq, s: str}
		s.prioritise(f.ti, gs)
		s.c.s.Stats.Groups.Add(1)
		var leading atomic.Bool
		leading.Store(true)
		// Called by this goroutine, or by the watchdog while a write of
		// this goroutine's blocks (then under w.mu, so that the write
		// has not returned).
		w.handOver = func() {
			if leading.CompareAndSwap(true, false) {
				f.wg.Go(func() { s.follow(ctx, f) })
			}
		}
		s.group(ctx, g, gs, hb[:], w)
		s.retire(f.ti, gs)
		if !leading.Load() {
			return
		}
	}
}

// nextGroup waits for the next group of f's track to send: the newest
// when following starts without a start group, then each in turn. nil:
// ctx is done or the broadcast ended.
func (s *sender) nextGroup(ctx context.Context, f *follower) *media.Group {
	for {
		ch := s.b.Changed()
		var g *media.Group
		if f.started {
			g = s.b.GroupAtOrAfter(f.ti, f.next)
		} else if g = s.b.Latest(f.ti); g != nil {
			f.started = true
		}
		if g != nil {
			f.next = g.Seq + 1
			return g
		}
		select {
		case <-ch:
		case <-s.b.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *sender) announce(cat *media.Catalog) error {
	s.mu.Lock()
	done := s.announced[cat]
	s.announced[cat] = true
	s.mu.Unlock()
	if done {
		return nil
	}
	return s.c.ctl.send(catalogMsg(MsgAnnounce, s.id, cat))
}

// prioritise makes the newest group the most urgent media: urgency 2,
// older groups 3..7 by age. The control stream has 0, and a group whose end
// marker is all that is left gets 1.
func (s *sender) prioritise(ti uint16, gs *groupStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[ti] = append(s.active[ti], gs)
	for _, o := range s.active[ti] {
		o.s.SetPriority(int8(min(7, 2+gs.seq-o.seq)))
	}
}

func (s *sender) retire(ti uint16, gs *groupStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.active[ti]
	for i, o := range a {
		if o == gs {
			s.active[ti] = append(a[:i], a[i+1:]...)
			return
		}
	}
}

// group writes one group's objects to its stream as they arrive and closes
// the stream after the last. A group that falls MaxGroupsBehind the newest
// is reset with CodeTooSlow. While a newer group waits and this one is not
// finished (more than 64 KiB of it is still to be written, a write blocks, or its
// end has not arrived), w.handOver starts following the newer ones.
func (s *sender) group(ctx context.Context, g *media.Group, gs *groupStream, header []byte, w *writer) {
	srv := s.c.s
	str := gs.s
	if err := s.write(ctx, g, str, header, g.Created, w); err != nil {
		return
	}
	var objs []*media.Object
	next := 0
	for {
		ch := s.b.Changed()
		var done bool
		objs, done = s.b.Objects(g, next, objs[:0])
		rest := 0 // bytes of objs not written yet
		for _, o := range objs {
			rest += len(o.Frame())
		}
		for _, o := range objs {
			if o.Flags&wire.FlagEndOfGroup != 0 {
				// Only the end marker is left: let it through ahead
				// of the newest group's data, or readers waiting for
				// the group's end would wait behind it.
				str.SetPriority(1)
			} else if l := s.b.Latest(g.Track); rest > writeChunk && l != nil && l.Seq > g.Seq {
				// A newer group waits behind a backlog of this one: it
				// need not wait for it (with priorities it goes
				// first). A subscriber that keeps up has at most a few
				// objects left here when the next group begins, which
				// it writes on.
				w.handOver()
			}
			rest -= len(o.Frame())
			if err := s.write(ctx, g, str, o.Frame(), o.Arrival, w); err != nil {
				return
			}
			srv.Stats.Bytes.Add(int64(len(o.Frame())))
			if srv.cfg.Sent != nil {
				srv.cfg.Sent(o)
			}
			next++
		}
		clear(objs)
		if done && len(objs) == 0 {
			str.Close()
			return
		}
		if len(objs) > 0 {
			continue
		}
		// The rest of this group has not arrived: if a newer group
		// has, it need not wait for it.
		if l := s.b.Latest(g.Track); l != nil && l.Seq > g.Seq {
			w.handOver()
		}
		select {
		case <-ch:
		case <-s.b.Done():
			s.end()
			str.CancelWrite(wire.CodeGoingAway)
			return
		case <-ctx.Done():
			str.CancelWrite(wire.CodeGoingAway)
			return
		}
	}
}

// write writes p (what arrived here at arrival, Unix ns) unless the group
// is already too far behind to be worth finishing. The write has no
// deadline (quic-go makes a timer for every Write on a stream with one):
// the server's watchdog looks at it every writeSlice while it blocks.
func (s *sender) write(ctx context.Context, g *media.Group, str SendStream, p []byte, arrival int64, w *writer) error {
	if err := s.worthWriting(ctx, g, str, arrival); err != nil {
		if err == errBroadcastEnded {
			s.end()
		}
		return err
	}
	// quic-go's Write returns once all of p but about a packet is sent:
	// pieces of at most writeChunk keep "blocked since" meaning "nothing
	// accepted since" for a large object on a slow link.
	for len(p) > 0 {
		n := min(len(p), writeChunk)
		w.mu.Lock()
		w.since, w.g, w.str, w.arrival, w.why = time.Now(), g, str, arrival, nil
		w.mu.Unlock()
		_, err := str.Write(p[:n])
		w.mu.Lock()
		why := w.why
		w.since, w.g, w.str = time.Time{}, nil, nil
		w.mu.Unlock()
		if why != nil {
			return why
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// writeChunk is the most one Write of a group stream hands quic-go.
const writeChunk = 64 << 10

// worthWriting resets g's stream, and says why, when writing to it (what
// arrived here at arrival) is no longer worth it: the subscription ended
// (ctx) or the broadcast did (errBroadcastEnded), both 1001; or g is
// MaxGroupsBehind the newest group, or a newer one exists while what is
// being written arrived MaxLag ago (4008). The sending goroutine asks before
// each write, the watchdog while a write blocks.
func (s *sender) worthWriting(ctx context.Context, g *media.Group, str SendStream, arrival int64) error {
	var err error
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case s.b.Closed():
		err = errBroadcastEnded
	default:
		return s.behind(g, str, arrival)
	}
	str.CancelWrite(wire.CodeGoingAway)
	return err
}

// behind resets g's stream, and says why, when g is too far behind:
// MaxGroupsBehind newer groups exist, or a newer one does while what is
// being written arrived MaxLag ago.
func (s *sender) behind(g *media.Group, str SendStream, arrival int64) error {
	srv := s.c.s
	l := s.b.Latest(g.Track)
	switch {
	case l == nil || l.Seq <= g.Seq:
		return nil
	case l.Seq-g.Seq > uint64(srv.cfg.MaxGroupsBehind):
		srv.Stats.Resets.Add(1)
		str.CancelWrite(wire.CodeTooSlow)
		return fmt.Errorf("group %d reset: %d groups behind", g.Seq, l.Seq-g.Seq)
	case srv.cfg.MaxLag > 0 && time.Now().UnixNano()-arrival > int64(srv.cfg.MaxLag):
		srv.Stats.Resets.Add(1)
		srv.Stats.LagResets.Add(1)
		str.CancelWrite(wire.CodeTooSlow)
		return fmt.Errorf("group %d reset: %s behind with group %d waiting", g.Seq, time.Duration(time.Now().UnixNano()-arrival), l.Seq)
	}
	return nil
}

// writeSlice is how often the watchdog looks at writes that block:
// whether their group is still worth sending, and whether a newer group
// waits for them.
const writeSlice = 50 * time.Millisecond

var errBroadcastEnded = errors.New("relay: the broadcast ended")

// writer is a sending goroutine as the watchdog sees it: the write it is
// in, if any.
type writer struct {
	s        *sender
	ctx      context.Context
	handOver func() // of the group being sent

	mu      sync.Mutex
	since   time.Time // when the write began; zero: not writing
	g       *media.Group
	str     SendStream
	arrival int64
	why     error // the watchdog reset the write: why
}

// watch registers a sending goroutine with the watchdog, starting it if
// it is not running.
func (srv *Server) watch(s *sender, ctx context.Context) *writer {
	w := &writer{s: s, ctx: ctx, handOver: func() {}}
	srv.wmu.Lock()
	srv.writers[w] = struct{}{}
	if !srv.watching {
		srv.watching = true
		go srv.watchdog()
	}
	srv.wmu.Unlock()
	return w
}

func (srv *Server) unwatch(w *writer) {
	srv.wmu.Lock()
	delete(srv.writers, w)
	srv.wmu.Unlock()
}

// watchdog looks at every sending goroutine each writeSlice, and stops
// when there is none.
func (srv *Server) watchdog() {
	t := time.NewTicker(writeSlice)
	defer t.Stop()
	var ws []*writer
	for now := range t.C {
		srv.wmu.Lock()
		if len(srv.writers) == 0 {
			srv.watching = false
			srv.wmu.Unlock()
			return
		}
		ws = ws[:0]
		for w := range srv.writers {
			ws = append(ws, w)
		}
		srv.wmu.Unlock()
		for _, w := range ws {
			w.check(now)
		}
		clear(ws)
	}
}

// check ends a write that has blocked for writeSlice if its group is no
// longer worth sending, its subscription ended, or it accepted nothing for
// WriteTimeout; else, if a newer group waits, it hands following over.
func (w *writer) check(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since.IsZero() || w.why != nil || now.Sub(w.since) < writeSlice {
		return
	}
	srv := w.s.c.s
	// A broadcast's end resets the write here; the sending goroutine
	// then finds no next group and its subscription sends ENDED (not the
	// watchdog: a control-stream write may block).
	if w.why = w.s.worthWriting(w.ctx, w.g, w.str, w.arrival); w.why != nil {
		return
	}
	if now.Sub(w.since) > srv.cfg.WriteTimeout {
		srv.Stats.Resets.Add(1)
		w.why = fmt.Errorf("group %d reset: nothing accepted for %s", w.g.Seq, srv.cfg.WriteTimeout)
		w.str.CancelWrite(wire.CodeTooSlow)
		return
	}
	if l := w.s.b.Latest(w.g.Track); l != nil && l.Seq > w.g.Seq {
		w.handOver()
	}
}
