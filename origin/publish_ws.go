package origin

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

// writeWait bounds every write to a publisher's socket.
const writeWait = 5 * time.Second

var publishUpgrader = websocket.Upgrader{
	HandshakeTimeout: 10 * time.Second,
	ReadBufferSize:   64 << 10,
	WriteBufferSize:  1024,
	// Publishers authenticate with a token, not with cookies, so a page
	// from any origin may publish.
	CheckOrigin: func(*http.Request) bool { return true },
}

// servePublish is GET /publish/{name}: a WebSocket whose binary messages
// carry a fragmented-MP4 byte stream, split anywhere. The server sends a
// "ready" text message once the broadcast is accepted and closes with a
// wire code and a reason when it refuses or stops the stream.
func (n *Node) servePublish(w http.ResponseWriter, r *http.Request) {
	conn, err := publishUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	defer conn.Close()
	name := r.PathValue("name")
	log := n.log.With("broadcast", name, "remote", r.RemoteAddr)
	s, err := n.PublishRequest(r.Context(), auth.Request{Broadcast: name, Token: auth.TokenFromRequest(r), Remote: r.RemoteAddr,
		App: "ws", URL: auth.RedactURL(r.URL), Args: r.URL.Query()})
	if err != nil {
		log.Warn("publish refused", "err", err)
		n.metrics.refuse(err)
		closeWith(conn, err)
		return
	}
	ready := wire.Message{Type: wire.MsgReady}
	conn.SetWriteDeadline(time.Now().Add(writeWait))
	if err := conn.WriteMessage(websocket.TextMessage, ready.Marshal()); err != nil {
		s.Close(nil)
		return
	}
	rd := &wsReader{conn: conn, n: n, bytes: newBucket(float64(n.cfg.MaxRate)), msgs: newBucket(float64(n.cfg.MaxMessages))}
	go func() { // the origin ended the session (drop, shutdown): unblock the reader
		<-s.Done()
		rd.stop()
	}()
	conn.SetReadLimit(int64(n.cfg.MaxMessage) * 2) // our own limit below speaks first, with a clearer message
	// Answer a publisher's close only once the session is closed, so a
	// publisher that reconnects at once finds the name free.
	conn.SetCloseHandler(func(int, string) error { return nil })
	err = s.Feed(rd)
	if s.ctx.Err() != nil { // the origin ended the session
		err = s.EndErr()
	}
	s.Close(err)
	if err != nil {
		log.Warn("publisher dropped", "code", uint16(wire.CodeOf(err)), "err", err)
		closeWith(conn, err)
		return
	}
	log.Info("publisher left")
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(writeWait))
}

// closeWith sends err's code and reason as a close frame.
func closeWith(conn *websocket.Conn, err error) {
	msg := websocket.FormatCloseMessage(int(wire.CodeOf(err)), wire.Reason(err))
	_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
}

// wsReader presents a publisher's binary messages as one byte stream,
// enforcing the message size, byte rate, message rate and idle limits.
type wsReader struct {
	conn  *websocket.Conn
	n     *Node
	cur   io.Reader
	left  int // bytes the current message may still have
	bytes *bucket
	msgs  *bucket

	mu      sync.Mutex
	stopped bool // set by stop: every later read fails
}

// stop makes a blocked or later read fail at once. Safe from any
// goroutine. Read renews the deadline under mu, so a stop between two
// reads is not undone by the next one (a drop took the idle timeout,
// 10 s, to act when it was).
func (r *wsReader) stop() {
	r.mu.Lock()
	r.stopped = true
	r.conn.SetReadDeadline(time.Now())
	r.mu.Unlock()
}

func (r *wsReader) Read(p []byte) (int, error) {
	for {
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return 0, net.ErrClosed
		}
		r.conn.SetReadDeadline(time.Now().Add(r.n.cfg.IdleTimeout))
		r.mu.Unlock()
		if r.cur == nil {
			typ, cur, err := r.conn.NextReader()
			if err != nil {
				return 0, r.readErr(err)
			}
			if typ != websocket.BinaryMessage {
				return 0, wire.Errorf(wire.CodeBadRequest, "text message received: send the fragmented MP4 as binary messages")
			}
			if !r.msgs.take(1, time.Now()) {
				return 0, wire.Errorf(wire.CodeRateLimited, "more than %d messages per second", r.n.cfg.MaxMessages)
			}
			r.cur, r.left = cur, r.n.cfg.MaxMessage
		}
		if len(p) > r.left+1 {
			p = p[:r.left+1]
		}
		k, err := r.cur.Read(p)
		r.left -= k
		if r.left < 0 {
			return 0, wire.Errorf(wire.CodeTooLarge, "message over %d bytes", r.n.cfg.MaxMessage)
		}
		if !r.bytes.take(float64(k), time.Now()) {
			return 0, wire.Errorf(wire.CodeRateLimited, "more than %d bytes per second", r.n.cfg.MaxRate)
		}
		if err == io.EOF {
			r.cur = nil
			if k > 0 {
				return k, nil
			}
			continue
		}
		if err != nil {
			return k, r.readErr(err)
		}
		return k, nil
	}
}

func (r *wsReader) readErr(err error) error {
	var ne net.Error
	switch {
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		return io.EOF
	case errors.Is(err, websocket.ErrReadLimit):
		return wire.Errorf(wire.CodeTooLarge, "message over %d bytes", r.n.cfg.MaxMessage)
	case errors.As(err, &ne) && ne.Timeout():
		return wire.Errorf(wire.CodeTimeout, "no data for %s", r.n.cfg.IdleTimeout)
	}
	return &wire.Error{Code: wire.CodeGoingAway, Msg: "publisher connection lost", Err: err}
}

// bucket is a token bucket refilled at rate per second, holding at most
// one second's worth.
type bucket struct {
	rate, tokens float64
	last         time.Time
}

func newBucket(rate float64) *bucket { return &bucket{rate: rate, tokens: rate} }

func (b *bucket) take(n float64, now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.rate {
			b.tokens = b.rate
		}
	}
	b.last = now
	b.tokens -= n
	return b.tokens >= 0
}
