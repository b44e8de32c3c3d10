package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

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

// PublishSynth streams a Synth to an origin's WebSocket ingest in real time
// until ctx is done.
func PublishSynth(ctx context.Context, url, token string, s *Synth, dial Dialer) error {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, WriteBufferSize: 64 << 10, NetDialContext: dial}
	conn, _, err := d.DialContext(ctx, url, h)
	if err != nil {
		return fmt.Errorf("bench: publish %s: %w", url, err)
	}
	defer conn.Close()
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	write := func(p []byte) error {
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return conn.WriteMessage(websocket.BinaryMessage, p)
	}
	if err := write(s.Init); err != nil {
		return err
	}
	tick := time.NewTicker(time.Second / time.Duration(s.rate))
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return nil
		case err := <-closed:
			return fmt.Errorf("bench: origin closed the publisher: %w", err)
		case now := <-tick.C:
			buf = s.Next(buf[:0], now)
			if err := write(buf); err != nil {
				return fmt.Errorf("bench: publish: %w", err)
			}
		}
	}
}
