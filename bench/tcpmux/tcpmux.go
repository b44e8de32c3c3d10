// Package tcpmux carries the relay protocol (shared/relay's Conn) over one
// TCP connection: streams are frames interleaved on one byte stream, as
// HTTP/2 or a WebSocket multiplexer would. It exists as the control of the
// relay's head-of-line measurement (bench/relayhol_test.go): what QUIC's
// per-group streams are compared with. It is not used by the nodes.
//
// A frame is a 9-byte header (type, stream id, payload length, big-endian)
// and its payload. Streams opened by the dialling side have odd ids, the
// other side's even. There is no per-stream flow control: a stream's
// unread bytes are bounded (MaxBuffered) and the connection fails past it.
package tcpmux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

const (
	frameOpenBidi = 1 + iota
	frameOpenUni
	frameData
	frameFin
	frameReset // payload: 4-byte code
	frameClose // payload: 4-byte code, reason
)

const (
	headerLen = 9
	// MaxFrame is the largest payload of one data frame: a stream's
	// bytes take turns with the others' at this granularity.
	MaxFrame = 16 << 10
	// MaxBuffered bounds the unread bytes of one stream.
	MaxBuffered = 8 << 20
	// writeTimeout bounds one frame's write once started (a frame is
	// never left half-written: that would break every stream).
	writeTimeout = 10 * time.Second
)

// ErrClosed is returned once the connection is closed.
var ErrClosed = errors.New("tcpmux: connection closed")

// ResetError is what a read returns after the peer reset the stream.
type ResetError struct{ Code wire.Code }

func (e *ResetError) Error() string { return fmt.Sprintf("tcpmux: stream reset (%d)", e.Code) }

// Conn is a relay.Conn over one net.Conn.
type Conn struct {
	nc     net.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc
	wmu    sync.Mutex // frames are written whole, one at a time

	mu      sync.Mutex
	streams map[uint32]*stream
	next    uint32
	bidi    chan *stream
	uni     chan *stream
}

// Client runs the dialling side on nc; Server the accepting side.
func Client(nc net.Conn) *Conn { return newConn(nc, 1) }

// Server runs the accepting side on nc.
func Server(nc net.Conn) *Conn { return newConn(nc, 2) }

func newConn(nc net.Conn, first uint32) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Conn{nc: nc, ctx: ctx, cancel: cancel, streams: map[uint32]*stream{}, next: first,
		bidi: make(chan *stream, 64), uni: make(chan *stream, 1024)}
	go c.read()
	return c
}

var _ relay.Conn = (*Conn)(nil)

func (c *Conn) fail(err error) {
	c.cancel(err)
	c.nc.Close()
	c.mu.Lock()
	for _, s := range c.streams {
		s.failRead(ErrClosed)
	}
	c.mu.Unlock()
}

func (c *Conn) writeFrame(typ byte, id uint32, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	var h [headerLen]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], id)
	binary.BigEndian.PutUint32(h[5:], uint32(len(p)))
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	bufs := net.Buffers{h[:], p}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

func (c *Conn) open(typ byte) (*stream, error) {
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	s := newStream(c, c.next)
	c.next += 2
	if typ == frameOpenBidi {
		c.streams[s.id] = s // a uni stream this side opened gets no frames
	}
	c.mu.Unlock()
	if err := c.writeFrame(typ, s.id, nil); err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Conn) OpenStreamSync(ctx context.Context) (relay.Stream, error) {
	return c.open(frameOpenBidi)
}

func (c *Conn) OpenUniStreamSync(ctx context.Context) (relay.SendStream, error) {
	return c.open(frameOpenUni)
}

func (c *Conn) accept(ctx context.Context, ch chan *stream) (*stream, error) {
	select {
	case s := <-ch:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}

func (c *Conn) AcceptStream(ctx context.Context) (relay.Stream, error) {
	s, err := c.accept(ctx, c.bidi)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Conn) AcceptUniStream(ctx context.Context) (relay.ReceiveStream, error) {
	s, err := c.accept(ctx, c.uni)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Conn) CloseWithError(code wire.Code, reason string) error {
	p := binary.BigEndian.AppendUint32(nil, uint32(code))
	c.writeFrame(frameClose, 0, append(p, reason...))
	c.fail(ErrClosed)
	return nil
}

func (c *Conn) Context() context.Context { return c.ctx }
func (c *Conn) RemoteAddr() net.Addr     { return c.nc.RemoteAddr() }

// read demultiplexes frames into their streams until the connection ends.
func (c *Conn) read() {
	var h [headerLen]byte
	for {
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			c.fail(err)
			return
		}
		typ, id, n := h[0], binary.BigEndian.Uint32(h[1:]), binary.BigEndian.Uint32(h[5:])
		if n > MaxFrame+64 {
			c.fail(fmt.Errorf("tcpmux: frame of %d bytes", n))
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.nc, p); err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		s := c.streams[id]
		c.mu.Unlock()
		switch typ {
		case frameOpenBidi, frameOpenUni:
			s = newStream(c, id)
			c.mu.Lock()
			c.streams[id] = s
			c.mu.Unlock()
			ch := c.uni
			if typ == frameOpenBidi {
				ch = c.bidi
			}
			select {
			case ch <- s:
			default:
				c.fail(errors.New("tcpmux: too many streams waiting to be accepted"))
				return
			}
		case frameData:
			if s != nil && !s.push(p) {
				c.fail(fmt.Errorf("tcpmux: stream %d has more than %d unread bytes", id, MaxBuffered))
				return
			}
		case frameFin, frameReset:
			if s == nil {
				break
			}
			var err error = io.EOF
			if typ == frameReset && len(p) >= 4 {
				err = &ResetError{Code: wire.Code(binary.BigEndian.Uint32(p))}
			}
			s.failRead(err)
			c.mu.Lock()
			delete(c.streams, id) // the peer sends nothing more on it
			c.mu.Unlock()
		case frameClose:
			c.fail(ErrClosed)
			return
		}
	}
}

// stream is both halves of a stream (a uni stream uses one).
type stream struct {
	c  *Conn
	id uint32

	mu        sync.Mutex
	buf       []byte
	rerr      error // after buf is drained: io.EOF, a reset, ErrClosed
	rdeadline time.Time
	wdeadline time.Time
	wdone     bool
	wake      chan struct{}
}

func newStream(c *Conn, id uint32) *stream {
	return &stream{c: c, id: id, wake: make(chan struct{}, 1)}
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) push(p []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf)+len(p) > MaxBuffered {
		return false
	}
	if s.rerr == nil {
		s.buf = append(s.buf, p...)
	}
	s.signal()
	return true
}

func (s *stream) failRead(err error) {
	s.mu.Lock()
	if s.rerr == nil {
		s.rerr = err
	}
	s.mu.Unlock()
	s.signal()
}

func (s *stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			n := copy(p, s.buf)
			s.buf = s.buf[n:]
			if len(s.buf) == 0 {
				s.buf = nil
			}
			s.mu.Unlock()
			return n, nil
		}
		if s.rerr != nil {
			err := s.rerr
			s.mu.Unlock()
			return 0, err
		}
		dl := s.rdeadline
		s.mu.Unlock()
		if dl.IsZero() {
			<-s.wake
			continue
		}
		d := time.Until(dl)
		if d <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		select {
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *stream) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		s.mu.Lock()
		done, dl := s.wdone, s.wdeadline
		s.mu.Unlock()
		if done {
			return n, ErrClosed
		}
		if !dl.IsZero() && time.Now().After(dl) {
			return n, os.ErrDeadlineExceeded
		}
		k := min(len(p), MaxFrame)
		if err := s.c.writeFrame(frameData, s.id, p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (s *stream) endWrite() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.wdone
	s.wdone = true
	return !done
}

func (s *stream) Close() error {
	if !s.endWrite() {
		return nil
	}
	return s.c.writeFrame(frameFin, s.id, nil)
}

func (s *stream) CancelWrite(code wire.Code) {
	if s.endWrite() {
		s.c.writeFrame(frameReset, s.id, binary.BigEndian.AppendUint32(nil, uint32(code)))
	}
}

// CancelRead stops reading; what the peer still sends is dropped.
func (s *stream) CancelRead(wire.Code) { s.failRead(ErrClosed) }

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.wdeadline = t
	s.mu.Unlock()
	return nil
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdeadline = t
	s.mu.Unlock()
	s.signal()
	return nil
}

// SetPriority does nothing: one byte stream has one order.
func (s *stream) SetPriority(int8) {}
