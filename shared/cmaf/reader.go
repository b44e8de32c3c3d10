// Package cmaf reads a fragmented-MP4 (CMAF) byte stream into its init
// segment and its chunks (moof+mdat), checking that it is something a player
// can decode: an init first, every moof followed by its mdat, boxes under a
// size limit, rising decode times, and codecs browsers play. It finds
// keyframes, decode times and the capture wall-clock (prft) so the rest of
// quiccast never has to look inside the media again.
package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Errors a Reader returns, wrapped with detail. Test with errors.Is.
var (
	ErrNotMP4           = errors.New("not a fragmented MP4 stream")
	ErrMissingInit      = errors.New("media before the init segment (ftyp+moov)")
	ErrMoofWithoutMdat  = errors.New("moof not followed by its mdat")
	ErrBoxTooLarge      = errors.New("box over the size limit")
	ErrNonMonotonic     = errors.New("decode time did not rise")
	ErrUnsupportedCodec = errors.New("unsupported codec")
	ErrInvalid          = errors.New("invalid CMAF")
	ErrInitChanged      = errors.New("init segment changed mid-stream")
)

// Limits bound what a Reader accepts. Zero fields take the defaults.
type Limits struct {
	MaxBox  int // largest box (a moof+mdat pair counts as one), default 8 MiB
	MaxInit int // largest init segment, default 1 MiB
}

func (l Limits) withDefaults() Limits {
	if l.MaxBox <= 0 {
		l.MaxBox = 8 << 20
	}
	if l.MaxInit <= 0 {
		l.MaxInit = 1 << 20
	}
	return l
}

// Chunk is one CMAF chunk: a moof and its mdat.
type Chunk struct {
	// Data is the moof+mdat bytes exactly as received (boxes before the
	// moof such as styp and prft are not included).
	Data []byte
	// Keyframe is true when the chunk's first sample of the primary track
	// (the first video track, else the first track) is a sync sample.
	Keyframe bool
	// DecodeTime and Duration are the primary track's, in its timescale.
	DecodeTime uint64
	Duration   uint64
	// Capture is the capture wall-clock in microseconds since the Unix
	// epoch from a prft box before the moof, or 0 if there was none.
	Capture int64
	// Samples counts the samples of all tracks.
	Samples int
	// Trafs gives the timing of every track in the chunk, in moof order.
	Trafs []TrafTiming
}

// TrafTiming is one track's decode time and duration within a chunk, in
// the track's timescale.
type TrafTiming struct {
	TrackID    uint32
	DecodeTime uint64
	Duration   uint64
}

// Reader splits a byte stream into an Init and then Chunks.
type Reader struct {
	r      io.Reader
	lim    Limits
	init   *Init
	last   map[uint32]uint64
	seen   map[uint32]bool
	hdr    [16]byte
	offset int64 // stream offset of the next box, for error messages
}

// NewReader returns a Reader of r. Reads may split boxes anywhere.
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{r: r, lim: lim.withDefaults(), last: map[uint32]uint64{}, seen: map[uint32]bool{}}
}

// Init returns the init segment once it has been read, else nil.
func (r *Reader) Init() *Init { return r.init }

// Next returns the next *Init or *Chunk. The init segment is returned once,
// before any chunk. At a clean end of the stream between boxes it returns
// io.EOF; any other error means the stream is invalid or broken.
func (r *Reader) Next() (any, error) {
	var capture int64
	for {
		typ, body, err := r.box(r.lim.MaxBox)
		if err != nil {
			return nil, err
		}
		switch typ {
		case "ftyp":
			moovT, moov, err := r.box(r.lim.MaxInit)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("%w: reading moov after ftyp: %w", ErrInvalid, err)
			}
			if moovT != "moov" {
				return nil, fmt.Errorf("%w: ftyp followed by %q, want moov", ErrInvalid, moovT)
			}
			data := make([]byte, 0, len(body)+len(moov))
			data = append(append(data, body...), moov...)
			if len(data) > r.lim.MaxInit {
				return nil, fmt.Errorf("%w: init segment is %d bytes, limit %d", ErrBoxTooLarge, len(data), r.lim.MaxInit)
			}
			if r.init != nil {
				if bytes.Equal(r.init.Data, data) {
					continue // a repeated identical init is harmless
				}
				return nil, ErrInitChanged
			}
			in, err := ParseInit(data)
			if err != nil {
				return nil, err
			}
			r.init = in
			return in, nil
		case "moov":
			return nil, fmt.Errorf("%w: moov without ftyp", ErrInvalid)
		case "prft":
			if r.init == nil {
				return nil, ErrMissingInit
			}
			capture = parsePrft(body)
		case "moof":
			if r.init == nil {
				return nil, ErrMissingInit
			}
			c, err := r.chunk(body, capture)
			if err != nil {
				return nil, err // not a nil *Chunk in a non-nil any
			}
			return c, nil
		case "mdat":
			if r.init == nil {
				return nil, ErrMissingInit
			}
			return nil, fmt.Errorf("%w: mdat without a moof before it", ErrInvalid)
		default:
			// styp, sidx, emsg, free, skip and the like carry nothing
			// a viewer needs.
		}
	}
}

// box reads one box, returning its type and all of its bytes (header
// included). max bounds the box size.
func (r *Reader) box(max int) (string, []byte, error) {
	start := r.offset
	if _, err := io.ReadFull(r.r, r.hdr[:8]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return "", nil, fmt.Errorf("%w: stream ended inside a box header at byte %d", ErrInvalid, start)
		}
		return "", nil, err
	}
	size := uint64(binary.BigEndian.Uint32(r.hdr[:4]))
	typ := string(r.hdr[4:8])
	hl := 8
	if !printable(r.hdr[4:8]) {
		return "", nil, fmt.Errorf("%w: bytes %q at offset %d are not a box type", ErrNotMP4, r.hdr[4:8], start)
	}
	switch size {
	case 0:
		return "", nil, fmt.Errorf("%w: box %q at offset %d has size 0 (to end of file), not allowed in a live stream", ErrInvalid, typ, start)
	case 1:
		if _, err := io.ReadFull(r.r, r.hdr[8:16]); err != nil {
			return "", nil, fmt.Errorf("%w: box %q: %w", ErrInvalid, typ, noEOF(err))
		}
		size = binary.BigEndian.Uint64(r.hdr[8:16])
		hl = 16
	}
	if size < uint64(hl) {
		return "", nil, fmt.Errorf("%w: box %q at offset %d has size %d, smaller than its header", ErrInvalid, typ, start, size)
	}
	if size > uint64(max) {
		return "", nil, fmt.Errorf("%w: box %q is %d bytes, limit %d", ErrBoxTooLarge, typ, size, max)
	}
	b := make([]byte, size)
	copy(b, r.hdr[:hl])
	if _, err := io.ReadFull(r.r, b[hl:]); err != nil {
		return "", nil, fmt.Errorf("%w: box %q at offset %d: %w", ErrInvalid, typ, start, noEOF(err))
	}
	r.offset += int64(size)
	return typ, b, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			if c == 0xa9 { // © in QuickTime metadata boxes
				continue
			}
			return false
		}
	}
	return true
}

func (r *Reader) chunk(moof []byte, capture int64) (*Chunk, error) {
	typ, mdat, err := r.box(r.lim.MaxBox - len(moof))
	if err != nil {
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended after a moof", ErrMoofWithoutMdat)
		}
		if errors.Is(err, ErrBoxTooLarge) {
			return nil, fmt.Errorf("%w (moof+mdat together)", err)
		}
		return nil, err
	}
	if typ != "mdat" {
		return nil, fmt.Errorf("%w: found %q after the moof", ErrMoofWithoutMdat, typ)
	}
	data := make([]byte, len(moof)+len(mdat))
	copy(data, moof)
	copy(data[len(moof):], mdat)
	c, err := r.init.parseChunk(data, len(moof))
	if err != nil {
		return nil, err
	}
	// In moof order, so that the error names the same track every time.
	for _, tr := range c.Trafs {
		if id, t := tr.TrackID, tr.DecodeTime; r.seen[id] && t <= r.last[id] {
			return nil, fmt.Errorf("%w: track %d went from %d to %d", ErrNonMonotonic, id, r.last[id], t)
		}
	}
	for _, tr := range c.Trafs {
		r.seen[tr.TrackID] = true
		r.last[tr.TrackID] = tr.DecodeTime
	}
	c.Capture = capture
	return &c.Chunk, nil
}
