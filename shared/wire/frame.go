// Package wire holds the byte formats every quiccast hop shares: the object
// frame (header + CMAF payload), the JSON control messages, and the close and
// error codes. The layouts are documented in README.md beside this file and
// implemented a second time in client-js/wire.js.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderLen is the size of a frame header in bytes.
const HeaderLen = 36

// MaxPayload is the largest payload any frame may carry (16 MiB - 1 byte is
// already far above any sane CMAF chunk; the length field allows 4 GiB).
const MaxPayload = 16<<20 - 1

// Kind says what a frame carries.
type Kind uint8

const (
	// KindObject frames carry one CMAF chunk (moof+mdat).
	KindObject Kind = 1
	// KindInit frames carry a track's init segment (ftyp+moov). Only Track
	// and Length are meaningful in their header.
	KindInit Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindObject:
		return "object"
	case KindInit:
		return "init"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Flags are the per-object bits.
type Flags uint8

const (
	// FlagKeyframe marks the first object of a group: it starts with a
	// keyframe, so a decoder can start here.
	FlagKeyframe Flags = 1 << 0
	// FlagEndOfGroup marks the end of a group. It is set on a marker frame
	// with an empty payload whose Index is the number of objects the group
	// held.
	FlagEndOfGroup Flags = 1 << 1
	// FlagDiscontinuity marks the first object after the publisher changed
	// (a new epoch): decode times may restart, and the init segment sent
	// just before it applies.
	FlagDiscontinuity Flags = 1 << 2
)

const knownFlags = FlagKeyframe | FlagEndOfGroup | FlagDiscontinuity

// Header is a decoded frame header. Integer fields are big-endian on the
// wire.
type Header struct {
	Kind       Kind
	Flags      Flags
	Track      uint16
	Index      uint32 // object index within its group, from 0
	Group      uint64 // group sequence number, rising by one per group
	DecodeTime uint64 // in the track's timescale (see the catalog)
	Capture    int64  // capture wall-clock, microseconds since the Unix epoch
	Length     uint32 // payload length in bytes
}

// Put writes h into b[:HeaderLen].
func (h *Header) Put(b []byte) {
	_ = b[HeaderLen-1]
	b[0] = byte(h.Kind)
	b[1] = byte(h.Flags)
	binary.BigEndian.PutUint16(b[2:], h.Track)
	binary.BigEndian.PutUint32(b[4:], h.Index)
	binary.BigEndian.PutUint64(b[8:], h.Group)
	binary.BigEndian.PutUint64(b[16:], h.DecodeTime)
	binary.BigEndian.PutUint64(b[24:], uint64(h.Capture))
	binary.BigEndian.PutUint32(b[32:], h.Length)
}

// Frame errors.
var (
	ErrShortHeader = errors.New("wire: frame shorter than its 36-byte header")
	ErrBadKind     = errors.New("wire: unknown frame kind")
	ErrBadFlags    = errors.New("wire: unknown flag bits")
	ErrTooLarge    = errors.New("wire: payload over the size limit")
	ErrLength      = errors.New("wire: payload length does not match the header")
)

// ParseHeader decodes and checks the header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortHeader
	}
	h := Header{
		Kind:       Kind(b[0]),
		Flags:      Flags(b[1]),
		Track:      binary.BigEndian.Uint16(b[2:]),
		Index:      binary.BigEndian.Uint32(b[4:]),
		Group:      binary.BigEndian.Uint64(b[8:]),
		DecodeTime: binary.BigEndian.Uint64(b[16:]),
		Capture:    int64(binary.BigEndian.Uint64(b[24:])),
		Length:     binary.BigEndian.Uint32(b[32:]),
	}
	if h.Kind != KindObject && h.Kind != KindInit {
		return h, fmt.Errorf("%w %d", ErrBadKind, b[0])
	}
	if h.Flags&^knownFlags != 0 {
		return h, fmt.Errorf("%w 0x%02x", ErrBadFlags, b[1])
	}
	if h.Length > MaxPayload {
		return h, fmt.Errorf("%w: %d bytes", ErrTooLarge, h.Length)
	}
	return h, nil
}

// Parse decodes one whole frame, such as a WebSocket message. The payload
// aliases b.
func Parse(b []byte) (Header, []byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if uint64(len(b)-HeaderLen) != uint64(h.Length) {
		return h, nil, fmt.Errorf("%w: header says %d, frame has %d", ErrLength, h.Length, len(b)-HeaderLen)
	}
	return h, b[HeaderLen:], nil
}

// Append appends the frame for h and payload to dst. h.Length is set from
// the payload.
func Append(dst []byte, h Header, payload []byte) []byte {
	h.Length = uint32(len(payload))
	n := len(dst)
	dst = append(dst, make([]byte, HeaderLen)...)
	h.Put(dst[n:])
	return append(dst, payload...)
}

// ReadHeader reads and checks one frame header from a byte stream; the
// caller reads the Length payload bytes that follow. io.EOF is returned only
// when the stream ends cleanly before the header.
func ReadHeader(r io.Reader) (Header, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: stream ended inside a header", ErrShortHeader)
		}
		return Header{}, err
	}
	return ParseHeader(hb[:])
}

// Read reads one frame from a byte stream (a QUIC stream). The payload is
// read into a new slice; max bounds it (0 means MaxPayload). io.EOF is
// returned only when the stream ends cleanly between frames.
func Read(r io.Reader, max int) (Header, []byte, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return h, nil, err
	}
	if max <= 0 {
		max = MaxPayload
	}
	if int64(h.Length) > int64(max) {
		return h, nil, fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, h.Length, max)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, fmt.Errorf("wire: payload: %w", err)
	}
	return h, p, nil
}
