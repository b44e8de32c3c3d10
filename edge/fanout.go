package edge

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/tlsrec"
	"github.com/quiccast/quiccast/shared/wire"
)

// fanout writes one broadcast to its plain-TCP WebSocket viewers from a
// few shard goroutines instead of a goroutine per viewer: when the
// broadcast changes, each shard makes one non-blocking writev per viewer of
// the frames that viewer is due. A viewer whose socket is full gets a
// goroutine of its own until the socket drains (or the write timeout
// drops it); the client's frames (pings, close) are read without blocking
// about once a second. Viewers cost a few hundred bytes each, not two
// goroutine stacks.
type fanout struct {
	n      *Node
	b      *media.Broadcast
	shards []*shard
	next   atomic.Uint32
	cancel context.CancelFunc
}

// shard serves a subset of a broadcast's viewers; its scratch buffers are
// reused for every viewer it pumps.
type shard struct {
	f       *fanout
	mu      sync.Mutex // guards viewers
	viewers []*fastViewer
	wake    chan struct{}
	list    []*fastViewer
	items   []media.Item
	caps    []media.Item // the objects being written, for the delay histogram
	bufs    [][]byte
	sealed  []byte // TLS records of the viewer being pumped
	plain   []byte // application data read from a TLS viewer
	tlsIn   [512]byte
	io      *rawIO // the shard goroutine's syscalls, without allocating
}

func newFanout(n *Node, b *media.Broadcast, shards int) *fanout {
	ctx, cancel := context.WithCancel(n.ctx)
	f := &fanout{n: n, b: b, cancel: cancel}
	for range max(1, shards) {
		s := &shard{f: f, wake: make(chan struct{}, 1), io: newRawIO()}
		f.shards = append(f.shards, s)
		n.bg.Add(1)
		go func() { defer n.bg.Done(); s.run(ctx) }()
	}
	return f
}

// add hands a viewer to the least recently chosen shard.
func (f *fanout) add(v *fastViewer) {
	s := f.shards[int(f.next.Add(1))%len(f.shards)]
	v.sh = s
	s.mu.Lock()
	s.viewers = append(s.viewers, v)
	s.mu.Unlock()
	s.kick()
}

func (s *shard) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// readEvery is how often a viewer's incoming frames are read, and how
// often an idle shard looks at its viewers.
const readEvery = 500 * time.Millisecond

func (s *shard) run(ctx context.Context) {
	tick := time.NewTicker(readEvery)
	defer tick.Stop()
	for {
		ch := s.f.b.Changed()
		s.pumpAll()
		select {
		case <-ch:
		case <-s.wake:
		case <-tick.C:
		case <-ctx.Done():
			s.shutdown()
			return
		}
	}
}

func (s *shard) pumpAll() {
	s.mu.Lock()
	s.list = append(s.list[:0], s.viewers...)
	s.mu.Unlock()
	now := time.Now()
	var sent int64
	for _, v := range s.list {
		sent += s.pump(v, now)
	}
	clear(s.list)
	if sent > 0 {
		s.f.n.metrics.sent.Add(float64(sent))
	}
}

// shutdown drains the edge: every viewer gets a GOAWAY and a 1001 close.
func (s *shard) shutdown() {
	s.mu.Lock()
	vs := append([]*fastViewer(nil), s.viewers...)
	s.mu.Unlock()
	for _, v := range vs {
		if v.blocked.Load() {
			v.nc.SetWriteDeadline(time.Now()) // its drain goroutine finishes it
			continue
		}
		s.finish(v, errDraining)
	}
}

var errDraining = errors.New("edge: draining")

// fastViewer is a WebSocket viewer on a TCP connection, plain or with
// its TLS record layer taken over (tls). Its shard goroutine owns it,
// except while blocked, when its drain goroutine does.
type fastViewer struct {
	n      *Node
	u      *upstream
	sh     *shard
	nc     *net.TCPConn
	rc     syscall.RawConn
	tls    *tlsrec.Session // wss://: nil on plain TCP
	name   string
	remote string
	cur    *media.Cursor
	kick   <-chan struct{} // closed when an operator kicks the broadcast's viewers

	blocked  atomic.Bool
	pend     [][]byte // frames left to write while blocked
	unsealed [][]byte // wss://: frames polled but not yet sealed (shared, not copied)
	ctl      [][]byte // control frames to send (pongs)
	lastRead time.Time
	in       [256]byte // a partial frame from the client
	inLen    int
	done     bool
	req      auth.Request // as admitted
	expires  time.Time    // the grant's end (checked at least every readEvery); zero: never
}

// pump writes what v is due, without blocking; it returns the bytes
// written.
func (s *shard) pump(v *fastViewer, now time.Time) int64 {
	if v.blocked.Load() || v.done {
		return 0
	}
	if kicked(v.kick) {
		s.finish(v, errRemoved)
		return 0
	}
	if !v.expires.IsZero() && !now.Before(v.expires) {
		s.finish(v, auth.ExpiredError(v.req))
		return 0
	}
	if now.Sub(v.lastRead) >= readEvery {
		v.lastRead = now
		if err := v.readControl(s); err != nil {
			s.finish(v, err)
			return 0
		}
	}
	var total int64
	for {
		s.bufs = append(s.bufs[:0], v.ctl...)
		v.ctl = nil
		var err error
		if len(v.unsealed) > 0 { // the rest of the last batch first
			s.bufs = append(s.bufs, v.unsealed...)
			clear(v.unsealed)
			v.unsealed = v.unsealed[:0]
		} else {
			s.items, err = v.cur.Poll(s.items[:0])
			s.bufs = v.n.wsFrames(s.bufs, s.items)
			s.items, s.caps = s.caps, s.items // kept until written
		}
		sealed := false
		if v.tls != nil {
			if v.tls.KernelTX() && v.tls.Pending() {
				s.finish(v, wire.Errorf(wire.CodeBadRequest, "TLS key update asked for on a kernel TLS connection; reconnect"))
				return total
			}
			if !v.tls.KernelTX() && (len(s.bufs) > 0 || v.tls.Pending()) {
				// Seal at most sealChunk: what a full socket leaves
				// over is copied into v.pend, so a viewer that stops
				// reading holds that much, not a whole group.
				now, rest := splitBytes(s.bufs, sealChunk)
				v.unsealed = append(v.unsealed, rest...)
				s.sealed = v.tls.Seal(s.sealed[:0], now...)
				clear(s.bufs)
				s.bufs = append(s.bufs[:0], s.sealed)
				sealed = true
			}
		}
		if len(s.bufs) == 0 {
			clear(s.caps)
			if err != nil {
				s.finish(v, err)
			}
			return total
		}
		n, werr := s.io.writev(v.rc, s.bufs)
		total += int64(n)
		if n > 0 { // handed to the socket (the rest of a partial write soon after)
			observeObjects(v.n.metrics.delayWS, s.caps)
		}
		clear(s.caps)
		rest := consume(s.bufs, n)
		if werr == nil && len(rest) > 0 || errors.Is(werr, unix.EAGAIN) {
			v.pend = append([][]byte(nil), rest...)
			if sealed && len(rest) > 0 {
				v.pend = [][]byte{bytes.Clone(rest[0])} // the shard reuses s.sealed
			}
			clear(s.bufs)
			v.blocked.Store(true)
			go v.drain()
			return total
		}
		clear(s.bufs)
		if werr != nil {
			s.finish(v, errWrite)
			return total
		}
		if err != nil {
			s.finish(v, err)
			return total
		}
	}
}

// sealChunk bounds the plaintext sealed for one write to a wss:// viewer.
const sealChunk = 64 << 10

// splitBytes splits bufs after n bytes (within a buffer if need be); the
// slices share bufs' bytes.
func splitBytes(bufs [][]byte, n int) (head, tail [][]byte) {
	for i, b := range bufs {
		if len(b) > n {
			if n == 0 {
				return bufs[:i], bufs[i:]
			}
			head = append(bufs[:i:i], b[:n])
			return head, append([][]byte{b[n:]}, bufs[i+1:]...)
		}
		n -= len(b)
	}
	return bufs, nil
}

// wsFrames appends the WebSocket frames of cursor items to bufs: the
// shared, prepared frames of objects, catalogs and init segments, and a
// skip message (counted) when the viewer fell behind.
func (n *Node) wsFrames(bufs [][]byte, items []media.Item) [][]byte {
	for _, it := range items {
		switch {
		case it.Object != nil:
			bufs = append(bufs, it.Object.WebSocketMessage())
		case it.Catalog != nil:
			bufs = append(bufs, it.Catalog.WebSocketMessage())
			for _, in := range it.Catalog.Inits {
				bufs = append(bufs, in.WebSocketMessage())
			}
		case it.Skip != nil:
			n.metrics.skips.Inc()
			m := wire.Message{Type: wire.MsgSkip, Track: it.Skip.Track, From: it.Skip.From, To: it.Skip.To}
			bufs = append(bufs, wire.WSMessage(wire.WSText, m.Marshal()))
		}
	}
	return bufs
}

// drain runs while v's socket is full: it waits for room, bounded by the
// write timeout, then gives v back to its shard.
func (v *fastViewer) drain() {
	v.nc.SetWriteDeadline(time.Now().Add(v.n.cfg.WriteTimeout))
	var werr error
	var sent int
	var iov []unix.Iovec
	err := v.rc.Write(func(fd uintptr) bool {
		var n int
		var e error
		iov, n, e = writevFD(fd, v.pend, iov)
		sent += n
		v.pend = consume(v.pend, n)
		switch {
		case errors.Is(e, unix.EAGAIN):
			return false // wait until writable
		case e != nil:
			werr = e
			return true
		}
		return len(v.pend) == 0
	})
	v.nc.SetWriteDeadline(time.Time{})
	v.n.metrics.sent.Add(float64(sent))
	switch {
	case v.n.ctx.Err() != nil:
		v.sh.finish(v, errDraining)
	case err != nil && isTimeout(err):
		v.sh.finish(v, v.n.errSocketFull())
	case err != nil || werr != nil:
		v.sh.finish(v, errWrite)
	default:
		v.pend = nil
		v.blocked.Store(false)
		v.sh.kick()
	}
}

// readControl reads what the client sent, without blocking: pings are
// answered, a close or EOF ends the viewer. Viewers send nothing else of
// any size.
func (v *fastViewer) readControl(s *shard) error {
	p := v.in[v.inLen:]
	if v.tls != nil {
		p = s.tlsIn[:]
	}
	n, rerr := s.io.read(v.rc, p)
	switch {
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	case rerr != nil || n == 0:
		return errWrite // the viewer is gone
	}
	if v.tls == nil {
		v.inLen += n
		return v.frames()
	}
	var err error
	s.plain, err = v.tls.Read(s.plain[:0], p[:n])
	switch {
	case errors.Is(err, tlsrec.ErrClosed):
		return errWrite // the viewer left
	case err != nil:
		return wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	// Several records' worth may have come at once: in pieces that
	// fit v.in, each taken before the next.
	for plain := s.plain; len(plain) > 0; {
		k := copy(v.in[v.inLen:], plain)
		v.inLen += k
		plain = plain[k:]
		if err := v.frames(); err != nil {
			return err
		}
	}
	return nil
}

// frames takes the complete frames in v.in: pings are answered, a close
// ends the viewer. Viewers send nothing else of any size.
func (v *fastViewer) frames() error {
	for v.inLen >= 2 {
		b := v.in[:v.inLen]
		op, plen := b[0]&0x0f, int(b[1]&0x7f)
		masked := b[1]&0x80 != 0
		if plen > 125 || !masked {
			return wire.Errorf(wire.CodeBadRequest, "viewers send only pings and small, masked messages")
		}
		hl := 6
		if v.inLen < hl+plen {
			break
		}
		p := b[hl : hl+plen]
		for i := range p {
			p[i] ^= b[2+i%4]
		}
		switch op {
		case wire.WSPing:
			if len(v.ctl) >= maxPendingPongs {
				return wire.Errorf(wire.CodeBadRequest, "more than %d pings unanswered", maxPendingPongs)
			}
			v.ctl = append(v.ctl, wire.WSMessage(wire.WSPong, p))
		case wire.WSClose:
			return errWrite // the viewer left
		}
		v.inLen = copy(v.in[:], b[hl+plen:])
	}
	if v.inLen == len(v.in) {
		return wire.Errorf(wire.CodeBadRequest, "unreadable frame from the viewer")
	}
	return nil
}

// maxPendingPongs bounds the pongs a viewer's pings queue before the
// next write.
const maxPendingPongs = 16

// wsEnding says how a WebSocket viewer whose run ended with err is told:
// a last text message (ended, goaway; nil for none) before the close, and
// the close's code and reason (nil: the viewer left, nothing to send).
func (n *Node) wsEnding(err error) ([]byte, error) {
	switch {
	case errors.Is(err, media.ErrTooSlow):
		return nil, wire.Errorf(wire.CodeTooSlow, "fell behind the live edge more than %d times in %s; check your bandwidth", n.cfg.MaxSkips, n.cfg.SkipWindow)
	case errors.Is(err, media.ErrClosed):
		return wire.WSMessage(wire.WSText, (&wire.Message{Type: wire.MsgEnded, Reason: "broadcast ended"}).Marshal()),
			wire.Errorf(wire.CodeNormal, "broadcast ended")
	case errors.Is(err, errDraining):
		return wire.WSMessage(wire.WSText, (&wire.Message{Type: wire.MsgGoAway, Reason: "edge draining"}).Marshal()),
			wire.Errorf(wire.CodeGoingAway, "edge draining; reconnect to another edge")
	case errors.Is(err, errWrite):
		return nil, nil // the viewer left
	}
	return nil, err
}

// errSocketFull is the end of a viewer whose socket took nothing for the
// write timeout.
func (n *Node) errSocketFull() error {
	return wire.Errorf(wire.CodeTooSlow, "socket accepted nothing for %s", n.cfg.WriteTimeout)
}

// finish ends a viewer: its last words (ended, goaway, a close code) are
// written if the socket takes them at once, then it is closed and counted
// out.
func (s *shard) finish(v *fastViewer, err error) {
	if v.done {
		return
	}
	v.done = true
	var last [][]byte
	msg, err := v.n.wsEnding(err)
	if msg != nil {
		last = append(last, msg)
	}
	if err != nil {
		code := wire.CodeOf(err)
		last = append(last, wire.WSCloseMessage(code, wire.Reason(err)))
		if code != wire.CodeNormal && code != wire.CodeGoingAway {
			v.n.log.Info("viewer dropped", "broadcast", v.name, "remote", v.remote, "err", err)
		}
		if v.tls != nil && !v.tls.KernelTX() {
			last = [][]byte{v.tls.CloseNotify(v.tls.Seal(nil, last...))}
		}
		// After a write cut short (a blocked viewer's drain timed out,
		// or the edge drains) the stream ends inside a frame, or a TLS
		// record: its rest goes first, or last words would be read as
		// part of it. One attempt: what the socket does not take is
		// not sent. finish may run on a drain goroutine: its own rawIO.
		newRawIO().writev(v.rc, append(v.pend, last...))
	}
	clear(v.unsealed)
	v.unsealed = nil
	v.nc.Close()
	s.mu.Lock()
	for i, x := range s.viewers {
		if x == v {
			s.viewers[i] = s.viewers[len(s.viewers)-1]
			s.viewers[len(s.viewers)-1] = nil
			s.viewers = s.viewers[:len(s.viewers)-1]
			break
		}
	}
	s.mu.Unlock()
	v.n.metrics.disconnect(err)
	v.n.metrics.viewers.WithLabelValues("ws").Dec()
	v.n.parted(v.name, transportWS)
	v.n.detach(v.u)
	v.n.leave(v.req)
}

// rawIO makes one non-blocking writev or read on a raw connection without
// allocating: the callbacks RawConn wants are method values bound once,
// and the call's arguments and results travel in the fields. One
// goroutine uses a rawIO at a time.
type rawIO struct {
	bufs    [][]byte
	buf     []byte
	iov     []unix.Iovec
	n       int
	err     error
	writeFn func(fd uintptr) bool
	readFn  func(fd uintptr) bool
}

func newRawIO() *rawIO {
	r := &rawIO{}
	r.writeFn, r.readFn = r.writeFD, r.readFD
	return r
}

func (r *rawIO) writeFD(fd uintptr) bool {
	r.iov, r.n, r.err = writevFD(fd, r.bufs, r.iov)
	return true // never wait here
}

func (r *rawIO) readFD(fd uintptr) bool {
	r.n, r.err = unix.Read(int(fd), r.buf)
	return true
}

// writev writes bufs with one writev attempt.
func (r *rawIO) writev(rc syscall.RawConn, bufs [][]byte) (int, error) {
	r.bufs = bufs
	err := rc.Write(r.writeFn)
	r.bufs = nil
	if err != nil {
		return 0, err
	}
	return r.n, r.err
}

// read reads into p with one read attempt.
func (r *rawIO) read(rc syscall.RawConn, p []byte) (int, error) {
	r.buf = p
	err := rc.Read(r.readFn)
	r.buf = nil
	if err != nil {
		return 0, err
	}
	return r.n, r.err
}

// writevFD writes bufs to fd with one writev; iov is scratch space.
func writevFD(fd uintptr, bufs [][]byte, iov []unix.Iovec) ([]unix.Iovec, int, error) {
	vec := iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if len(vec) == 1024 { // IOV_MAX
			break
		}
		vec = append(vec, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
	}
	if len(vec) == 0 {
		return vec, 0, nil
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vec[0])), uintptr(len(vec)))
	clear(vec) // keep no pointers to frames the cache may drop
	if e != 0 {
		return vec, 0, e
	}
	return vec, int(r), nil
}

// consume drops the first n bytes from bufs, in place.
func consume(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}
