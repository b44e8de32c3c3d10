package origin

import (
	"encoding/binary"

	"github.com/quiccast/quiccast/shared/wire"
)

// RTMP bytes are read by gortmplib, which allocates each chunk's body as
// soon as it has read the chunk's header (up to the chunk size, at most
// 10 MiB) and keeps the chunks of a message until the message is whole, on
// each of up to 62 chunk streams. Before a publisher is authorised that
// would let a stranger make the origin hold hundreds of MiB with a few
// header bytes. rtmpGuard follows the chunk stream on the raw bytes, ahead
// of gortmplib, and refuses a header before gortmplib sees it.
const (
	// rtmpHandshakeIn is what a client sends before its chunk stream:
	// C0 (1 byte), C1 and C2 (1536 bytes each).
	rtmpHandshakeIn = 1 + 1536 + 1536
	// rtmpPreAuthBytes bounds the declared lengths of all messages being
	// assembled before the publish command: connect, createStream and
	// publish are a few hundred bytes each.
	rtmpPreAuthBytes = 64 << 10
	// rtmpMinChunk is the smallest chunk size accepted (RTMP's default).
	// Smaller chunks cost gortmplib a slice per few bytes; a chunk size
	// of 0 makes it grow a slice list forever.
	rtmpMinChunk = 128
	// rtmpMaxChunk is gortmplib's own limit on the chunk size and on a
	// message.
	rtmpMaxChunk = 10 << 20
	// rtmpMaxOpen bounds the messages being assembled after the publish
	// command: a video frame (at most rtmpMaxChunk) and the small audio
	// and data messages interleaved with it. Without it one publisher
	// could keep 10 MiB open on each of 62 chunk streams.
	rtmpMaxOpen = 2 * rtmpMaxChunk
)

// guardStream is the state of one chunk stream, as gortmplib keeps it.
type guardStream struct {
	started bool   // a header with a length was seen (types 1–3 need one)
	typ     uint8  // message type
	length  uint32 // declared length of the current message
	recv    uint32 // bytes of it received; 0 when no message is open
	ext     bool   // chunks of type 3 carry an extended timestamp
	// The first bytes of the current message, for control messages and
	// commands (they fit in the first chunk: chunks are >= 128 bytes).
	head    [16]byte
	headLen int
	keep    bool
}

// rtmpGuard checks a client's bytes in the order they are read.
type rtmpGuard struct {
	preAuth   bool // until a publish command has been read
	handshake int  // handshake bytes still to come
	chunkSize uint32
	streams   [64]guardStream

	hdr  [16]byte // the chunk header being read
	hlen int      // bytes of hdr read
	need int      // bytes hdr needs; 0 when reading a chunk's body
	cs   *guardStream
	fmt  byte

	body     uint32 // body bytes left in the current chunk
	complete bool   // the current chunk ends its message
}

func newRTMPGuard() *rtmpGuard {
	return &rtmpGuard{preAuth: true, handshake: rtmpHandshakeIn, chunkSize: 128}
}

// scan follows p; an error refuses the connection before gortmplib reads p.
func (g *rtmpGuard) scan(p []byte) error {
	for len(p) > 0 {
		switch {
		case g.handshake > 0:
			if g.handshake == rtmpHandshakeIn && p[0] == 6 {
				return wire.Errorf(wire.CodeBadRequest, "encrypted RTMP (RTMPE) is not supported; use rtmps://")
			}
			k := min(g.handshake, len(p))
			g.handshake -= k
			p = p[k:]
		case g.body > 0:
			k := int(min(g.body, uint32(len(p))))
			if cs := g.cs; cs.keep && cs.headLen < len(cs.head) {
				cs.headLen += copy(cs.head[cs.headLen:], p[:k])
			}
			g.body -= uint32(k)
			p = p[k:]
			if g.body == 0 {
				if err := g.chunkDone(); err != nil {
					return err
				}
			}
		default:
			if g.need == 0 { // a basic header
				b := p[0]
				p = p[1:]
				g.fmt, g.hlen = b>>6, 0
				id := b & 0x3f
				if id < 2 {
					return wire.Errorf(wire.CodeBadRequest, "RTMP: extended chunk stream IDs are not supported")
				}
				g.cs = &g.streams[id]
				g.need = [4]int{11, 7, 3, 0}[g.fmt]
				if g.fmt == 3 {
					g.need = -1 // no message header; maybe an extended timestamp
				}
				if err := g.headerStep(); err != nil {
					return err
				}
				continue
			}
			k := min(g.need-g.hlen, len(p))
			g.hlen += copy(g.hdr[g.hlen:], p[:k])
			p = p[k:]
			if g.hlen == g.need {
				if err := g.headerStep(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// headerStep acts on a header once its bytes are in: it grows the header
// for an extended timestamp, or starts the chunk's body.
func (g *rtmpGuard) headerStep() error {
	cs := g.cs
	if g.hlen < g.need {
		return nil
	}
	u24 := func(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
	extAt := 0 // where an extended timestamp would start in hdr
	var ts uint32
	switch g.fmt {
	case 0:
		extAt, ts = 11, u24(g.hdr[0:3])
	case 1:
		extAt, ts = 7, u24(g.hdr[0:3])
	case 2:
		extAt, ts = 3, u24(g.hdr[0:3])
	case 3:
		extAt = 0
		if g.need == -1 {
			g.need = 0
			if cs.ext {
				g.need = 4
				if g.hlen < 4 {
					return nil
				}
			}
		}
	}
	if g.fmt != 3 && ts >= 0xffffff && g.need == extAt {
		g.need = extAt + 4 // the extended timestamp follows
		return nil
	}
	if g.fmt != 3 && g.need == extAt+4 {
		ts = binary.BigEndian.Uint32(g.hdr[extAt:])
	}
	// The header is whole: what gortmplib does with it.
	g.need = 0
	switch g.fmt {
	case 0, 1:
		if g.fmt == 1 && !cs.started {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk of type 1 without a previous chunk")
		}
		if cs.recv != 0 {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk of type %d in the middle of a message", g.fmt)
		}
		cs.started, cs.typ, cs.length, cs.ext = true, g.hdr[6], u24(g.hdr[3:6]), ts >= 0xffffff
		if cs.length > rtmpMaxChunk {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: message of %d bytes (at most %d)", cs.length, rtmpMaxChunk)
		}
		return g.startChunk(min(cs.length, g.chunkSize), true)
	case 2:
		if !cs.started {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk of type 2 without a previous chunk")
		}
		if cs.recv != 0 {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk of type 2 in the middle of a message")
		}
		cs.ext = ts >= 0xffffff
		return g.startChunk(min(cs.length, g.chunkSize), true)
	default:
		if cs.recv != 0 {
			return g.startChunk(min(cs.length-cs.recv, g.chunkSize), false)
		}
		if !cs.started {
			return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk of type 3 without a previous chunk")
		}
		return g.startChunk(min(cs.length, g.chunkSize), true)
	}
}

// startChunk starts a chunk of n body bytes; first says it opens a message.
func (g *rtmpGuard) startChunk(n uint32, first bool) error {
	cs := g.cs
	if first {
		open := uint64(cs.length)
		for i := range g.streams {
			if s := &g.streams[i]; s != cs && s.recv != 0 {
				open += uint64(s.length)
			}
		}
		switch {
		case g.preAuth && open > rtmpPreAuthBytes:
			return wire.Errorf(wire.CodeBadRequest, "RTMP: %d bytes of messages before publish (at most %d until the publish command)", open, rtmpPreAuthBytes)
		case open > rtmpMaxOpen:
			return wire.Errorf(wire.CodeBadRequest, "RTMP: %d bytes of messages open at once on several chunk streams (at most %d)", open, rtmpMaxOpen)
		}
	}
	if first {
		// Control messages and commands are looked at; media is not.
		cs.headLen, cs.keep = 0, cs.typ == 1 || cs.typ == 2 || cs.typ == 20
	}
	// gortmplib counts a message whole when its first chunk holds it all
	// (a message of 0 bytes included), else sums its chunks.
	if first {
		g.complete = n == cs.length
		cs.recv = n
		if g.complete {
			cs.recv = 0
		}
	} else {
		cs.recv += n
		g.complete = cs.recv == cs.length
		if g.complete {
			cs.recv = 0
		}
	}
	g.body = n
	if n == 0 {
		return g.chunkDone()
	}
	return nil
}

// chunkDone acts on a message once its last chunk is in.
func (g *rtmpGuard) chunkDone() error {
	cs := g.cs
	if !g.complete || !cs.keep {
		return nil
	}
	cs.keep = false
	h := cs.head[:cs.headLen]
	switch cs.typ {
	case 1: // set chunk size
		if len(h) == 4 && cs.length == 4 {
			v := binary.BigEndian.Uint32(h)
			if v < rtmpMinChunk {
				return wire.Errorf(wire.CodeBadRequest, "RTMP: chunk size %d (at least %d)", v, rtmpMinChunk)
			}
			if v <= rtmpMaxChunk {
				g.chunkSize = v
			}
		}
	case 2: // abort
		if len(h) == 4 && cs.length == 4 {
			if v := binary.BigEndian.Uint32(h); v >= 2 && v <= 63 && g.streams[v].recv != 0 {
				g.streams[v].recv, g.streams[v].length = 0, 0
			}
		}
	case 20: // command: AMF0 string "publish" first
		if len(h) >= 10 && h[0] == 2 && string(h[1:10]) == "\x00\x07publish" {
			g.preAuth = false
		}
	}
	return nil
}
