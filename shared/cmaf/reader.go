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

	"github.com/quiccast/quiccast/shared/budget"
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
	ErrTooComplex       = errors.New("boxes nested too deep or too many")
	ErrOverBudget       = errors.New("memory budget for input exhausted")
)

// Limits bound what a Reader accepts. Zero fields take the defaults.
type Limits struct {
	MaxBox  int // largest box (a moof+mdat pair counts as one), default 8 MiB
	MaxInit int // largest init segment, default 1 MiB
	// MaxDepth bounds how deep boxes nest in an init segment or a moof
	// (a top-level box is at depth 1), default 16; real ones reach 10
	// (moov/trak/mdia/minf/stbl/stsd/encv/sinf/schi/tenc).
	MaxDepth int
	// MaxBoxes bounds the boxes in one init segment or one moof, all
	// depths counted, default 4096; ffmpeg writes under 100.
	MaxBoxes int
	// Budget, when set, is charged for the bytes of a box being read,
	// as they arrive, and refunded once Next returns; Next fails with
	// ErrOverBudget when the budget has no room.
	Budget *budget.Budget
}

// Default limits; see Limits.
const (
	DefaultMaxBox   = 8 << 20
	DefaultMaxInit  = 1 << 20
	DefaultMaxDepth = 16
	DefaultMaxBoxes = 4096
)

func (l Limits) withDefaults() Limits {
	if l.MaxBox <= 0 {
		l.MaxBox = DefaultMaxBox
	}
	if l.MaxInit <= 0 {
		l.MaxInit = DefaultMaxInit
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxBoxes <= 0 {
		l.MaxBoxes = DefaultMaxBoxes
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
	held   int64 // bytes charged to lim.Budget for the box being read
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
//
// Next holds the bytes of a box only while reading it, growing its buffer
// as they arrive (never to a size a header merely declares), and charges
// them to Limits.Budget until it returns; the returned segment's bytes
// are then the caller's.
func (r *Reader) Next() (any, error) {
	defer r.refund()
	var capture int64
	for {
		typ, size, hl, err := r.header(r.lim.MaxBox)
		if err != nil {
			return nil, err
		}
		switch typ {
		case "ftyp":
			if size > r.lim.MaxInit {
				return nil, fmt.Errorf("%w: box %q is %d bytes, limit %d", ErrBoxTooLarge, typ, size, r.lim.MaxInit)
			}
			data, err := r.body(nil, size, hl)
			if err != nil {
				return nil, err
			}
			moovT, moovSize, moovHl, err := r.header(r.lim.MaxInit)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("%w: reading moov after ftyp: %w", ErrInvalid, err)
			}
			if moovT != "moov" {
				return nil, fmt.Errorf("%w: ftyp followed by %q, want moov", ErrInvalid, moovT)
			}
			if n := len(data) + moovSize; n > r.lim.MaxInit {
				return nil, fmt.Errorf("%w: init segment is %d bytes, limit %d", ErrBoxTooLarge, n, r.lim.MaxInit)
			}
			if data, err = r.body(data, moovSize, moovHl); err != nil {
				return nil, fmt.Errorf("%w: reading moov after ftyp: %w", ErrInvalid, err)
			}
			if r.init != nil {
				if bytes.Equal(r.init.Data, data) {
					r.refund() // nothing else is held between boxes
					continue   // a repeated identical init is harmless
				}
				return nil, ErrInitChanged
			}
			in, err := parseInit(data, r.lim)
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
			b, err := r.body(r.hdr[:0:0], size, hl)
			if err != nil {
				return nil, err
			}
			capture = parsePrft(b)
			r.refund() // its bytes are dropped: nothing else is held between boxes
		case "moof":
			if r.init == nil {
				return nil, ErrMissingInit
			}
			c, err := r.chunk(size, hl, capture)
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
			if err := r.skip(typ, size, hl); err != nil {
				return nil, err
			}
		}
	}
}

// header reads the next box header into r.hdr and returns the box's type,
// total size and header length. max bounds the size.
func (r *Reader) header(max int) (typ string, size, hl int, err error) {
	start := r.offset
	if _, err := io.ReadFull(r.r, r.hdr[:8]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return "", 0, 0, fmt.Errorf("%w: stream ended inside a box header at byte %d", ErrInvalid, start)
		}
		return "", 0, 0, err
	}
	sz := uint64(binary.BigEndian.Uint32(r.hdr[:4]))
	typ = string(r.hdr[4:8])
	hl = 8
	if !printable(r.hdr[4:8]) {
		return "", 0, 0, fmt.Errorf("%w: bytes %q at offset %d are not a box type", ErrNotMP4, r.hdr[4:8], start)
	}
	switch sz {
	case 0:
		return "", 0, 0, fmt.Errorf("%w: box %q at offset %d has size 0 (to end of file), not allowed in a live stream", ErrInvalid, typ, start)
	case 1:
		if _, err := io.ReadFull(r.r, r.hdr[8:16]); err != nil {
			return "", 0, 0, fmt.Errorf("%w: box %q: %w", ErrInvalid, typ, noEOF(err))
		}
		sz = binary.BigEndian.Uint64(r.hdr[8:16])
		hl = 16
	}
	if sz < uint64(hl) {
		return "", 0, 0, fmt.Errorf("%w: box %q at offset %d has size %d, smaller than its header", ErrInvalid, typ, start, sz)
	}
	if sz > uint64(max) {
		return "", 0, 0, fmt.Errorf("%w: box %q is %d bytes, limit %d", ErrBoxTooLarge, typ, sz, max)
	}
	return typ, int(sz), hl, nil
}

// minGrow is the size of a box's first block of bytes, and the least.
const minGrow = 16 << 10

// body appends the box whose header is in r.hdr[:hl] to buf and reads the
// rest of its size bytes. The bytes go into blocks allocated as they
// arrive, each charged to the budget first and each as large as all before
// it, so that a box declared large but sent slowly holds only what came,
// and growing copies nothing and leaves no garbage; the blocks are joined
// once the box is whole.
func (r *Reader) body(buf []byte, size, hl int) ([]byte, error) {
	start := r.offset
	want := len(buf) + size
	total := len(buf)
	var blocks [][]byte
	if len(buf) > 0 {
		blocks = append(blocks, buf)
	}
	hdr := r.hdr[:hl]
	var cur []byte
	for total < want {
		if len(cur) == cap(cur) {
			if cur != nil {
				blocks = append(blocks, cur)
			}
			var err error
			if cur, err = r.block(min(want-total, max(minGrow, total))); err != nil {
				return nil, err
			}
		}
		if len(hdr) > 0 {
			k := copy(cur[len(cur):cap(cur)], hdr)
			cur, hdr, total = cur[:len(cur)+k], hdr[k:], total+k
			continue
		}
		n, err := r.r.Read(cur[len(cur):cap(cur)])
		cur, total = cur[:len(cur)+n], total+n
		if err != nil && total < want {
			return nil, fmt.Errorf("%w: box %q at offset %d: %w", ErrInvalid, r.hdr[4:8], start, noEOF(err))
		}
	}
	r.offset += int64(size)
	if cur != nil {
		blocks = append(blocks, cur)
	}
	if len(blocks) == 1 {
		return blocks[0], nil
	}
	out := make([]byte, 0, want)
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out, nil
}

// block returns an empty buffer of capacity n, charged to the budget.
func (r *Reader) block(n int) ([]byte, error) {
	if b := r.lim.Budget; b != nil {
		if !b.ReserveInput(int64(n)) {
			return nil, fmt.Errorf("%w: %d more bytes for a box at offset %d do not fit (%d of %d bytes in use)",
				ErrOverBudget, n, r.offset, b.Used(), b.Limit())
		}
		r.held += int64(n)
	}
	return make([]byte, 0, n), nil
}

// refund gives back what the box buffers were charged.
func (r *Reader) refund() {
	if r.held > 0 {
		r.lim.Budget.Release(r.held)
		r.held = 0
	}
}

// skip discards a box nobody reads, holding none of it.
func (r *Reader) skip(typ string, size, hl int) error {
	if size == hl {
		return nil
	}
	if _, err := io.CopyN(io.Discard, r.r, int64(size-hl)); err != nil {
		return fmt.Errorf("%w: box %q at offset %d: %w", ErrInvalid, typ, r.offset, noEOF(err))
	}
	r.offset += int64(size)
	return nil
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

func (r *Reader) chunk(size, hl int, capture int64) (*Chunk, error) {
	moof, err := r.body(nil, size, hl)
	if err != nil {
		return nil, err
	}
	// Refuse a moof too deep or too full before waiting for its mdat.
	if err := scan(moof, "moof", r.lim.MaxDepth, r.lim.MaxBoxes); err != nil {
		return nil, err
	}
	typ, mdatSize, mdatHl, err := r.header(r.lim.MaxBox - len(moof))
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
	data, err := r.body(moof, mdatSize, mdatHl)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %w", ErrMoofWithoutMdat, err)
		}
		return nil, err
	}
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
