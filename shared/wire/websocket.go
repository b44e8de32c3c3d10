package wire

import (
	"encoding/binary"
	"unicode/utf8"
)

// WebSocket opcodes (RFC 6455 §5.2) used by servers that frame messages
// themselves.
const (
	WSText   = 0x1
	WSBinary = 0x2
	WSClose  = 0x8
	WSPing   = 0x9
	WSPong   = 0xA
)

// WSHeaderMax is the longest server-to-client WebSocket frame header.
const WSHeaderMax = 10

// WSHeaderLen returns the length of an unmasked frame header for a payload of
// n bytes.
func WSHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	}
	return 10
}

// PutWSHeader writes an unmasked, final (FIN) frame header for opcode and a
// payload of n bytes into b, which must hold WSHeaderLen(n) bytes. Server
// frames are never masked (RFC 6455 §5.1), so one framed message can be
// written unchanged to every viewer's socket.
func PutWSHeader(b []byte, opcode byte, n int) {
	b[0] = 0x80 | opcode
	switch {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xFFFF:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
}

// WSMessage returns a complete unmasked WebSocket frame carrying payload.
func WSMessage(opcode byte, payload []byte) []byte {
	h := WSHeaderLen(len(payload))
	b := make([]byte, h+len(payload))
	PutWSHeader(b, opcode, len(payload))
	copy(b[h:], payload)
	return b
}

// WSCloseMessage returns a close frame with code and reason (cut to fit the
// 125-byte control payload limit, at a rune boundary: a close reason must be
// valid UTF-8, RFC 6455 §5.5.1, or clients fail the connection instead).
func WSCloseMessage(code Code, reason string) []byte {
	if len(reason) > 123 {
		cut := 123
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	copy(p[2:], reason)
	return WSMessage(WSClose, p)
}
