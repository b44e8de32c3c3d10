package bench

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"time"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/cmaf"
)

// Synth makes a synthetic CMAF stream: the built-in clip's init segment
// (H.264 + AAC) and, for its video track, one chunk per object with a real
// moof (mfhd, traf: tfhd, tfdt v1, trun) and a padded mdat, at a chosen
// bitrate, object rate and group length. Keyframe objects are 4 times the
// size of the others, as in real video.
type Synth struct {
	Init      []byte
	Timescale uint32
	rate      int
	perGroup  int
	small     int
	key       int
	pad       []byte
	seq       uint32
	n         uint64 // objects made
}

// NewSynth prepares a stream of bitrate bits/s in rate objects/s, a
// keyframe every group.
func NewSynth(bitrate int64, rate int, group time.Duration) (*Synth, error) {
	c, err := clip.Demo()
	if err != nil {
		return nil, err
	}
	p := c.Init.PrimaryTrak()
	s := &Synth{Init: c.Init.Data, Timescale: p.Timescale, rate: rate}
	s.perGroup = max(1, int(group.Seconds()*float64(rate)+0.5))
	perObject := float64(bitrate) / 8 / float64(rate)
	// key + (perGroup-1)*small = perGroup*perObject, key = 4*small
	s.small = max(16, int(perObject*float64(s.perGroup)/float64(s.perGroup+3)))
	s.key = 4 * s.small
	s.pad = make([]byte, s.key)
	for i := range s.pad {
		s.pad[i] = byte(rand.IntN(256))
	}
	return s, nil
}

// ObjectsPerGroup returns the group length in objects.
func (s *Synth) ObjectsPerGroup() int { return s.perGroup }

const moofLen = 100 // mfhd 16 + traf (8 + tfhd 16 + tfdt 20 + trun 32) + 8

// Next appends the next chunk — a prft with capture, then moof+mdat — to
// dst. The first object and every perGroup-th are keyframes.
func (s *Synth) Next(dst []byte, capture time.Time) []byte {
	key := s.n%uint64(s.perGroup) == 0
	size := s.small
	flags := uint32(0x01010000) // depends on others, non-sync
	if key {
		size, flags = s.key, 0x02000000 // depends on no other: a sync sample
	}
	dur := s.Timescale / uint32(s.rate)
	dt := s.n * uint64(dur)
	s.n++
	s.seq++
	dst = cmaf.AppendPrft(dst, 1, capture.UnixMicro(), dt)
	var b [moofLen + 8]byte
	box := func(off, size int, typ string) {
		binary.BigEndian.PutUint32(b[off:], uint32(size))
		copy(b[off+4:], typ)
	}
	box(0, moofLen, "moof")
	box(8, 16, "mfhd")
	binary.BigEndian.PutUint32(b[20:], s.seq)
	box(24, 76, "traf")
	box(32, 16, "tfhd")
	binary.BigEndian.PutUint32(b[40:], 0x020000) // default-base-is-moof
	binary.BigEndian.PutUint32(b[44:], 1)        // track 1: video
	box(48, 20, "tfdt")
	b[56] = 1 // version 1: 64-bit decode time
	binary.BigEndian.PutUint64(b[60:], dt)
	box(68, 32, "trun")
	binary.BigEndian.PutUint32(b[76:], 0x000701) // data offset, duration, size, flags present
	binary.BigEndian.PutUint32(b[80:], 1)        // one sample
	binary.BigEndian.PutUint32(b[84:], moofLen+8)
	binary.BigEndian.PutUint32(b[88:], dur)
	binary.BigEndian.PutUint32(b[92:], uint32(size))
	binary.BigEndian.PutUint32(b[96:], flags)
	box(moofLen, 8+size, "mdat")
	dst = append(dst, b[:]...)
	return append(dst, s.pad[:size]...)
}

// Reader returns the stream as an io.Reader that releases each object
// when it falls due in real time (the init segment at once), for
// publish.Config.Stream. It ends when ctx is done.
func (s *Synth) Reader(ctx context.Context) io.Reader {
	return &synthReader{s: s, ctx: ctx, buf: append([]byte(nil), s.Init...), next: time.Now()}
}

type synthReader struct {
	s    *Synth
	ctx  context.Context
	buf  []byte
	off  int
	next time.Time
}

func (r *synthReader) Read(p []byte) (int, error) {
	if r.off == len(r.buf) {
		if d := time.Until(r.next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-r.ctx.Done():
				t.Stop()
				return 0, io.EOF
			case <-t.C:
			}
		}
		now := time.Now()
		r.buf, r.off = r.s.Next(r.buf[:0], now), 0
		r.next = r.next.Add(time.Second / time.Duration(r.s.rate))
		if r.next.Before(now.Add(-time.Second)) {
			r.next = now // fell far behind (a stalled process): do not burst
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}
