// Package memconn is an in-memory relay.Conn, to drive a relay server
// (the origin's relay, an edge's WebTransport viewers) with bytes a test
// or a fuzzer chose, without sockets.
//
// The peer opens one control stream, which reads the given bytes and
// records what the server writes to it. Streams the server opens swallow
// what is written. Nothing ever blocks but AcceptStream and
// AcceptUniStream, which wait for the context or the connection's end.
package memconn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// ErrClosed is returned once the connection is closed.
var ErrClosed = errors.New("memconn: closed")

// Conn is an in-memory relay.Conn.
type Conn struct {
	ctx    context.Context
	cancel context.CancelFunc
	ctl    *stream

	mu       sync.Mutex
	accepted bool
	code     wire.Code
	reason   string
	closed   bool
	opened   int // streams the server opened
}

// New returns a Conn whose control stream reads control.
func New(control []byte) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &Conn{ctx: ctx, cancel: cancel, ctl: &stream{r: bytes.NewReader(control)}}
}

// Written returns what the server wrote to the control stream.
func (c *Conn) Written() []byte { return c.ctl.written() }

// Closed returns the code and reason the server closed the connection
// with, and whether it did.
func (c *Conn) Closed() (wire.Code, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.reason, c.closed
}

// Opened returns how many streams the server opened.
func (c *Conn) Opened() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened
}

func (c *Conn) open() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.opened++
	return nil
}

func (c *Conn) OpenStreamSync(ctx context.Context) (relay.Stream, error) {
	if err := c.open(); err != nil {
		return nil, err
	}
	return &stream{r: bytes.NewReader(nil), discard: true}, nil
}

func (c *Conn) AcceptStream(ctx context.Context) (relay.Stream, error) {
	c.mu.Lock()
	first := !c.accepted && !c.closed
	c.accepted = true
	c.mu.Unlock()
	if first {
		return c.ctl, nil
	}
	return nil, c.wait(ctx)
}

func (c *Conn) OpenUniStreamSync(ctx context.Context) (relay.SendStream, error) {
	if err := c.open(); err != nil {
		return nil, err
	}
	return &stream{r: bytes.NewReader(nil), discard: true}, nil
}

func (c *Conn) AcceptUniStream(ctx context.Context) (relay.ReceiveStream, error) {
	return nil, c.wait(ctx)
}

func (c *Conn) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

func (c *Conn) CloseWithError(code wire.Code, reason string) error {
	c.mu.Lock()
	if !c.closed {
		c.closed, c.code, c.reason = true, code, reason
	}
	c.mu.Unlock()
	c.cancel()
	return nil
}

func (c *Conn) Context() context.Context { return c.ctx }

func (c *Conn) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}

// stream reads from r and records (or discards) what is written.
type stream struct {
	r       *bytes.Reader
	discard bool

	mu  sync.Mutex
	out bytes.Buffer
}

func (s *stream) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *stream) Write(p []byte) (int, error) {
	if !s.discard {
		s.mu.Lock()
		s.out.Write(p)
		s.mu.Unlock()
	}
	return len(p), nil
}

func (s *stream) written() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.out.Bytes())
}

func (s *stream) Close() error                     { return nil }
func (s *stream) CancelWrite(wire.Code)            {}
func (s *stream) CancelRead(wire.Code)             {}
func (s *stream) SetWriteDeadline(time.Time) error { return nil }
func (s *stream) SetReadDeadline(time.Time) error  { return nil }
func (s *stream) SetPriority(int8)                 {}
