// Package media is quiccast's in-memory model of a live broadcast: a catalog
// per epoch, tracks, groups (GOPs) and objects (CMAF chunks), held in a
// bounded cache that every transport reads from. An object's bytes are framed
// once when it arrives and then shared, unchanged and uncopied, by every
// viewer on every transport.
package media

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/quiccast/quiccast/shared/wire"
)

// headroom is room before the frame for the longest WebSocket header.
const headroom = wire.WSHeaderMax

// Object is one framed object. Its bytes must not be modified.
type Object struct {
	wire.Header
	// Arrival is when this node got the object, in Unix nanoseconds.
	Arrival int64
	buf     []byte // [unused][WebSocket header][frame header][payload]
	wsOff   int
}

// NewObject frames payload under h (h.Length is set from it). The payload
// is copied once, here; every later reader shares the result.
func NewObject(h wire.Header, payload []byte, arrival int64) *Object {
	h.Length = uint32(len(payload))
	n := wire.HeaderLen + len(payload)
	buf := make([]byte, headroom+n)
	h.Put(buf[headroom:])
	copy(buf[headroom+wire.HeaderLen:], payload)
	wl := wire.WSHeaderLen(n)
	wire.PutWSHeader(buf[headroom-wl:], wire.WSBinary, n)
	return &Object{Header: h, Arrival: arrival, buf: buf, wsOff: headroom - wl}
}

// ReadObject reads h.Length payload bytes from r straight into a new
// object's buffer: one copy from the network to the bytes every viewer
// shares.
func ReadObject(h wire.Header, r io.Reader, arrival int64) (*Object, error) {
	n := wire.HeaderLen + int(h.Length)
	buf := make([]byte, headroom+n)
	if _, err := io.ReadFull(r, buf[headroom+wire.HeaderLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("media: object payload: %w", err)
	}
	h.Put(buf[headroom:])
	wl := wire.WSHeaderLen(n)
	wire.PutWSHeader(buf[headroom-wl:], wire.WSBinary, n)
	return &Object{Header: h, Arrival: arrival, buf: buf, wsOff: headroom - wl}, nil
}

// Frame returns the object's frame: header and payload.
func (o *Object) Frame() []byte { return o.buf[headroom:] }

// Payload returns the CMAF chunk (empty for an end-of-group marker).
func (o *Object) Payload() []byte { return o.buf[headroom+wire.HeaderLen:] }

// WebSocketMessage returns the frame as a complete WebSocket binary message
// (server to client, unmasked), ready to write to any viewer's socket.
func (o *Object) WebSocketMessage() []byte { return o.buf[o.wsOff:] }

// Size is the memory the object holds, as counted against budgets.
func (o *Object) Size() int64 { return int64(cap(o.buf)) }

// Catalog is one epoch's catalog with its init segments, framed once.
type Catalog struct {
	wire.Catalog
	// Inits holds a KindInit frame per track, indexed by track ID.
	Inits []*Object
	msg   []byte
	wsMsg []byte
}

// NewCatalog checks that there is one init segment per track, with track
// IDs 0..n-1, and frames everything once.
func NewCatalog(c wire.Catalog, inits [][]byte) (*Catalog, error) {
	if len(c.Tracks) == 0 || len(c.Tracks) != len(inits) {
		return nil, fmt.Errorf("media: catalog has %d tracks and %d init segments", len(c.Tracks), len(inits))
	}
	cat := &Catalog{Catalog: c}
	for i, t := range c.Tracks {
		if int(t.ID) != i {
			return nil, fmt.Errorf("media: catalog track %d has ID %d", i, t.ID)
		}
		cat.Inits = append(cat.Inits, NewObject(wire.Header{Kind: wire.KindInit, Track: t.ID}, inits[i], 0))
	}
	cat.msg = (&wire.Message{Type: wire.MsgCatalog, Catalog: &cat.Catalog}).Marshal()
	cat.wsMsg = wire.WSMessage(wire.WSText, cat.msg)
	return cat, nil
}

// Message returns the catalog control message as JSON.
func (c *Catalog) Message() []byte { return c.msg }

// WebSocketMessage returns the catalog control message as a WebSocket text
// frame.
func (c *Catalog) WebSocketMessage() []byte { return c.wsMsg }

// MarshalJSON encodes the wire catalog (the init frames are sent apart).
func (c *Catalog) MarshalJSON() ([]byte, error) { return json.Marshal(&c.Catalog) }
