// Package relay is quiccast's media protocol over QUIC: a control stream
// (HELLO, SUBSCRIBE / SUBSCRIBE_OK with catalog and init segments, ANNOUNCE,
// ENDED, GOAWAY, ERROR) and one unidirectional stream per group, so that a
// lost packet stalls only its own group. Origins serve it to edges, edges
// to lower-tier edges, and edges to browsers inside WebTransport sessions.
// README.md beside this file has the byte layouts.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/wire"
)

// ALPN is the relay's TLS application protocol.
const ALPN = "quiccast-relay/1"

// Conn is what the protocol needs of a QUIC connection or a WebTransport
// session.
type Conn interface {
	OpenStreamSync(ctx context.Context) (Stream, error)
	AcceptStream(ctx context.Context) (Stream, error)
	// OpenUniStreamSync opens a stream, waiting for the peer to allow
	// one more.
	OpenUniStreamSync(ctx context.Context) (SendStream, error)
	AcceptUniStream(ctx context.Context) (ReceiveStream, error)
	CloseWithError(code wire.Code, reason string) error
	Context() context.Context
	RemoteAddr() net.Addr
}

// SendStream is the sending half of a stream.
type SendStream interface {
	io.WriteCloser
	CancelWrite(code wire.Code)
	SetWriteDeadline(time.Time) error
	// SetPriority sets the urgency (0 most urgent .. 7) where the
	// transport supports it.
	SetPriority(urgency int8)
}

// ReceiveStream is the receiving half of a stream.
type ReceiveStream interface {
	io.Reader
	CancelRead(code wire.Code)
	SetReadDeadline(time.Time) error
}

// Stream is a bidirectional stream.
type Stream interface {
	SendStream
	ReceiveStream
}

// QUIC adapts a quic-go connection.
func QUIC(c *quic.Conn) Conn { return quicConn{c} }

type quicConn struct{ c *quic.Conn }

func (q quicConn) OpenStreamSync(ctx context.Context) (Stream, error) {
	s, err := q.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := q.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q quicConn) OpenUniStreamSync(ctx context.Context) (SendStream, error) {
	s, err := q.c.OpenUniStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicSend{s}, nil
}

func (q quicConn) AcceptUniStream(ctx context.Context) (ReceiveStream, error) {
	s, err := q.c.AcceptUniStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicRecv{s}, nil
}

func (q quicConn) CloseWithError(code wire.Code, reason string) error {
	return q.c.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

func (q quicConn) Context() context.Context { return q.c.Context() }
func (q quicConn) RemoteAddr() net.Addr     { return q.c.RemoteAddr() }

type quicStream struct{ s *quic.Stream }

func (q quicStream) Read(p []byte) (int, error)         { return q.s.Read(p) }
func (q quicStream) Write(p []byte) (int, error)        { return q.s.Write(p) }
func (q quicStream) Close() error                       { return q.s.Close() }
func (q quicStream) CancelWrite(c wire.Code)            { q.s.CancelWrite(quic.StreamErrorCode(c)) }
func (q quicStream) CancelRead(c wire.Code)             { q.s.CancelRead(quic.StreamErrorCode(c)) }
func (q quicStream) SetWriteDeadline(t time.Time) error { return q.s.SetWriteDeadline(t) }
func (q quicStream) SetReadDeadline(t time.Time) error  { return q.s.SetReadDeadline(t) }
func (q quicStream) SetPriority(u int8)                 { q.s.SetPriority(u, false) }

type quicSend struct{ s *quic.SendStream }

func (q quicSend) Write(p []byte) (int, error)        { return q.s.Write(p) }
func (q quicSend) Close() error                       { return q.s.Close() }
func (q quicSend) CancelWrite(c wire.Code)            { q.s.CancelWrite(quic.StreamErrorCode(c)) }
func (q quicSend) SetWriteDeadline(t time.Time) error { return q.s.SetWriteDeadline(t) }
func (q quicSend) SetPriority(u int8)                 { q.s.SetPriority(u, false) }

type quicRecv struct{ s *quic.ReceiveStream }

func (q quicRecv) Read(p []byte) (int, error)        { return q.s.Read(p) }
func (q quicRecv) CancelRead(c wire.Code)            { q.s.CancelRead(quic.StreamErrorCode(c)) }
func (q quicRecv) SetReadDeadline(t time.Time) error { return q.s.SetReadDeadline(t) }

// WebTransport adapts a webtransport-go session. Its streams have no
// priorities.
func WebTransport(s *webtransport.Session) Conn { return wtConn{s} }

type wtConn struct{ s *webtransport.Session }

func (w wtConn) OpenStreamSync(ctx context.Context) (Stream, error) {
	s, err := w.s.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return wtStream{s}, nil
}

func (w wtConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := w.s.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return wtStream{s}, nil
}

func (w wtConn) OpenUniStreamSync(ctx context.Context) (SendStream, error) {
	s, err := w.s.OpenUniStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return wtSend{s}, nil
}

func (w wtConn) AcceptUniStream(ctx context.Context) (ReceiveStream, error) {
	s, err := w.s.AcceptUniStream(ctx)
	if err != nil {
		return nil, err
	}
	return wtRecv{s}, nil
}

func (w wtConn) CloseWithError(code wire.Code, reason string) error {
	return w.s.CloseWithError(webtransport.SessionErrorCode(code), reason)
}

func (w wtConn) Context() context.Context { return w.s.Context() }
func (w wtConn) RemoteAddr() net.Addr     { return w.s.RemoteAddr() }

type wtStream struct{ s *webtransport.Stream }

func (w wtStream) Read(p []byte) (int, error)         { return w.s.Read(p) }
func (w wtStream) Write(p []byte) (int, error)        { return w.s.Write(p) }
func (w wtStream) Close() error                       { return w.s.Close() }
func (w wtStream) CancelWrite(c wire.Code)            { w.s.CancelWrite(webtransport.StreamErrorCode(c)) }
func (w wtStream) CancelRead(c wire.Code)             { w.s.CancelRead(webtransport.StreamErrorCode(c)) }
func (w wtStream) SetWriteDeadline(t time.Time) error { return w.s.SetWriteDeadline(t) }
func (w wtStream) SetReadDeadline(t time.Time) error  { return w.s.SetReadDeadline(t) }
func (w wtStream) SetPriority(int8)                   {}

type wtSend struct{ s *webtransport.SendStream }

func (w wtSend) Write(p []byte) (int, error)        { return w.s.Write(p) }
func (w wtSend) Close() error                       { return w.s.Close() }
func (w wtSend) CancelWrite(c wire.Code)            { w.s.CancelWrite(webtransport.StreamErrorCode(c)) }
func (w wtSend) SetWriteDeadline(t time.Time) error { return w.s.SetWriteDeadline(t) }
func (w wtSend) SetPriority(int8)                   {}

type wtRecv struct{ s *webtransport.ReceiveStream }

func (w wtRecv) Read(p []byte) (int, error)        { return w.s.Read(p) }
func (w wtRecv) CancelRead(c wire.Code)            { w.s.CancelRead(webtransport.StreamErrorCode(c)) }
func (w wtRecv) SetReadDeadline(t time.Time) error { return w.s.SetReadDeadline(t) }

// CloseCode extracts the application code a peer closed the connection or
// reset a stream with, if err carries one.
func CloseCode(err error) (wire.Code, string, bool) {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		return wire.Code(ae.ErrorCode), ae.ErrorMessage, true
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return wire.Code(se.ErrorCode), "", true
	}
	var we *webtransport.SessionError
	if errors.As(err, &we) {
		return wire.Code(we.ErrorCode), we.Message, true
	}
	var ws *webtransport.StreamError
	if errors.As(err, &ws) {
		return wire.Code(ws.ErrorCode), "", true
	}
	return 0, "", false
}
