package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// Version is the protocol version a HELLO carries.
const Version = 1

// Control message types.
const (
	MsgHello       = "hello"        // client → server: Token, Node, Version
	MsgHelloOK     = "hello_ok"     // server → client: Node, Incarnation
	MsgSubscribe   = "subscribe"    // client → server: ID, Broadcast, Start (nil: the newest group)
	MsgSubscribeOK = "subscribe_ok" // server → client: ID, Catalog, Inits
	MsgAnnounce    = "announce"     // server → client: ID, Catalog, Inits of a new epoch; groups of that epoch follow
	MsgUnsubscribe = "unsubscribe"  // client → server: ID
	MsgEnded       = "ended"        // server → client: ID; the broadcast ended
	MsgError       = "error"        // either way: ID (0: the connection), Code, Reason
	MsgGoAway      = "goaway"       // server → client: the server is draining; URL, if set, is where to go
)

// Msg is one control message: a 4-byte big-endian length and that many
// bytes of JSON on the control stream.
type Msg struct {
	Type  string `json:"type"`
	ID    uint32 `json:"id,omitempty"`
	Token string `json:"token,omitempty"`
	Node  string `json:"node,omitempty"`
	// Incarnation (HELLO_OK) tells one run of the server's process from
	// the next: a restart on the same address answers with a new one.
	Incarnation string        `json:"incarnation,omitempty"`
	Version     int           `json:"version,omitempty"`
	Broadcast   string        `json:"broadcast,omitempty"`
	Start       *uint64       `json:"start,omitempty"`
	Catalog     *wire.Catalog `json:"catalog,omitempty"`
	Inits       [][]byte      `json:"inits,omitempty"` // base64 in JSON, one per track
	Code        wire.Code     `json:"code,omitempty"`
	Reason      string        `json:"reason,omitempty"`
	URL         string        `json:"url,omitempty"`
}

// maxControl bounds one control message. A SUBSCRIBE_OK carries a
// broadcast's init segments, so it may be large; it comes from the server.
const maxControl = 1 << 20

// MaxHello bounds the HELLO a server reads before the peer is authorised:
// a token, a node id and a version fit in a few hundred bytes (a JWT in a
// few KiB).
const MaxHello = 8 << 10

// ErrControl is wrapped by malformed control messages.
var ErrControl = errors.New("relay: bad control message")

// readMsg reads one control message.
func readMsg(r io.Reader) (*Msg, error) { return readMsgMax(r, maxControl) }

// readMsgMax reads one control message of at most limit bytes; the
// length is checked before anything is allocated.
func readMsgMax(r io.Reader, limit uint32) (*Msg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrControl, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrControl, noEOF(err))
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrControl, err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("%w: no type", ErrControl)
	}
	return &m, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func encodeMsg(m *Msg) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("relay: marshal %s: %v", m.Type, err)) // Msg has only marshalable fields
	}
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	return out
}

// control is a control stream shared by the goroutines of a connection:
// writes are serialised and bounded by a deadline.
type control struct {
	s       Stream
	timeout time.Duration
	mu      sync.Mutex
}

func (c *control) send(m *Msg) error {
	b := encodeMsg(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.s.Write(b)
	return err
}

// catalogMsg builds a SUBSCRIBE_OK or ANNOUNCE for cat.
func catalogMsg(typ string, id uint32, cat *media.Catalog) *Msg {
	m := &Msg{Type: typ, ID: id, Catalog: &cat.Catalog}
	for _, in := range cat.Inits {
		m.Inits = append(m.Inits, in.Payload())
	}
	return m
}

// GroupHeaderLen is the size of the header that opens every group stream.
const GroupHeaderLen = 22

// GroupHeader opens a group stream: which subscription, track, group and
// epoch the frames that follow belong to.
type GroupHeader struct {
	Sub   uint32
	Track uint16
	Group uint64
	Epoch uint64
}

// Put writes h into b, which holds at least GroupHeaderLen bytes.
func (h GroupHeader) Put(b []byte) {
	binary.BigEndian.PutUint32(b, h.Sub)
	binary.BigEndian.PutUint16(b[4:], h.Track)
	binary.BigEndian.PutUint64(b[6:], h.Group)
	binary.BigEndian.PutUint64(b[14:], h.Epoch)
}

func readGroupHeader(r io.Reader) (GroupHeader, error) {
	var b [GroupHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return GroupHeader{}, noEOF(err)
	}
	return GroupHeader{
		Sub:   binary.BigEndian.Uint32(b[:]),
		Track: binary.BigEndian.Uint16(b[4:]),
		Group: binary.BigEndian.Uint64(b[6:]),
		Epoch: binary.BigEndian.Uint64(b[14:]),
	}, nil
}

// ReadMsg reads one control message, for clients that speak the protocol
// without Client (a load generator's viewers).
func ReadMsg(r io.Reader) (*Msg, error) { return readMsg(r) }

// EncodeMsg returns a control message as it goes on the control stream.
func EncodeMsg(m *Msg) []byte { return encodeMsg(m) }

// CatalogMsg is the message that carries cat to subscription id:
// SUBSCRIBE_OK or ANNOUNCE (typ), for servers that speak the protocol
// without Server (the bench's naive server).
func CatalogMsg(typ string, id uint32, cat *media.Catalog) *Msg { return catalogMsg(typ, id, cat) }

// ReadGroupHeader reads the header that opens a group stream.
func ReadGroupHeader(r io.Reader) (GroupHeader, error) { return readGroupHeader(r) }
