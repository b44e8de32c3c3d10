// Package viewer is a Go client of the edge's viewer WebSocket
// (/ws/{broadcast}): it dials, then returns control messages and frames one
// at a time. Tests and the load generator use it to watch like a browser.
package viewer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/wire"
)

// Conn is one viewer connection.
type Conn struct {
	ws *websocket.Conn
}

// Dial connects to a viewer URL (ws://edge/ws/{broadcast}); token, when
// set, is sent as Authorization: Bearer.
func Dial(ctx context.Context, url, token string) (*Conn, error) {
	return DialWith(ctx, nil, url, token)
}

// DialWith is Dial with a TLS configuration for wss:// URLs (nil: the
// system's roots).
func DialWith(ctx context.Context, tc *tls.Config, url, token string) (*Conn, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10, TLSClientConfig: tc}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("viewer: dial %s: %w (HTTP %s)", url, err, resp.Status)
		}
		return nil, fmt.Errorf("viewer: dial %s: %w", url, err)
	}
	ws.SetReadLimit(wire.HeaderLen + wire.MaxPayload)
	return &Conn{ws: ws}, nil
}

// Event is one thing received: a control message or a frame.
type Event struct {
	Control *wire.Message
	Header  wire.Header
	Payload []byte // the frame's payload (Control == nil)
	Size    int    // bytes of the WebSocket message
}

// Closed is the error Next returns when the edge closed the connection.
type Closed struct {
	Code   wire.Code
	Reason string
}

func (c *Closed) Error() string {
	return fmt.Sprintf("viewer: closed by the edge: %d %s", uint16(c.Code), c.Reason)
}

// Next returns the next event, waiting at most timeout (0: no limit). A
// close from the edge is a *Closed.
func (c *Conn) Next(timeout time.Duration) (Event, error) {
	if timeout > 0 {
		c.ws.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.ws.SetReadDeadline(time.Time{})
	}
	typ, b, err := c.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return Event{}, &Closed{Code: wire.Code(ce.Code), Reason: ce.Text}
		}
		return Event{}, err
	}
	ev := Event{Size: len(b)}
	if typ == websocket.TextMessage {
		ev.Control, err = wire.ParseMessage(b)
		return ev, err
	}
	ev.Header, ev.Payload, err = wire.Parse(b)
	return ev, err
}

// Close closes the connection with a normal close frame.
func (c *Conn) Close() error {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return c.ws.Close()
}
