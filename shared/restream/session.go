package restream

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/bluenviron/gortmplib"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
)

// Errors of a session, wrapped with detail.
var (
	// errRefused: the server said no to the publish, or closed the
	// connection instead of accepting it (a bad stream key, mostly).
	errRefused = errors.New("refused")
	// errNetwork: the server could not be reached or the connection
	// broke.
	errNetwork = errors.New("network")
	// errParams: the broadcast's codecs changed (a publisher came back
	// with other settings); the session starts again with new headers.
	errParams = errors.New("codec parameters changed")
	// errMedia: a codec RTMP cannot carry here, or a chunk that does not
	// parse.
	errMedia = errors.New("media")
)

// tracks is what a catalog's init segment says the RTMP session sends.
type tracks struct {
	videoID, audioID int // CMAF track IDs, 0 when absent
	videoTS, audioTS uint32
	video, audio     *gortmplib.Track
	h264             bool
	key              string // codec parameters: a change needs new headers
}

// parseTracks reads an init segment: the first H.264/H.265 video track
// and the first AAC audio track.
func parseTracks(init []byte) (*tracks, error) {
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(init)); err != nil {
		return nil, classify(errMedia, "init segment: %v", err)
	}
	tr := &tracks{}
	var skipped []string
	for _, it := range in.Tracks {
		switch c := it.Codec.(type) {
		case *mp4codecs.H264:
			if tr.video == nil {
				tr.videoID, tr.videoTS, tr.h264 = it.ID, it.TimeScale, true
				tr.video = &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: c.SPS, PPS: c.PPS}}
				tr.key += fmt.Sprintf("h264 %x %x;", c.SPS, c.PPS)
			}
		case *mp4codecs.H265:
			if tr.video == nil {
				tr.videoID, tr.videoTS = it.ID, it.TimeScale
				tr.video = &gortmplib.Track{Codec: &rtmpcodecs.H265{VPS: c.VPS, SPS: c.SPS, PPS: c.PPS}}
				tr.key += fmt.Sprintf("h265 %x %x %x;", c.VPS, c.SPS, c.PPS)
			}
		case *mp4codecs.MPEG4Audio:
			if tr.audio == nil {
				cfg := c.Config
				tr.audioID, tr.audioTS = it.ID, it.TimeScale
				tr.audio = &gortmplib.Track{Codec: &rtmpcodecs.MPEG4Audio{Config: &cfg}}
				tr.key += fmt.Sprintf("aac %+v;", cfg)
			}
		default:
			skipped = append(skipped, fmt.Sprintf("%T", it.Codec))
		}
	}
	if tr.video == nil && tr.audio == nil {
		return nil, classify(errMedia, "no H.264, H.265 or AAC track to restream (found %v)", skipped)
	}
	if tr.videoTS == 0 && tr.video != nil || tr.audioTS == 0 && tr.audio != nil {
		return nil, classify(errMedia, "init segment: a track has timescale 0")
	}
	return tr, nil
}

func (tr *tracks) list() []*gortmplib.Track {
	var out []*gortmplib.Track
	if tr.video != nil {
		out = append(out, tr.video)
	}
	if tr.audio != nil {
		out = append(out, tr.audio)
	}
	return out
}

// session is one RTMP connection publishing a broadcast.
type session struct {
	c       *rtmpConn
	tap     *tapConn
	w       *gortmplib.Writer
	tr      *tracks
	timeout time.Duration

	// Timestamps: out = in + offset, kept rising across epochs.
	based   bool
	rebase  bool
	offset  time.Duration
	last    time.Duration
	raw     []chunkSample
	samples []sample
}

// classed is an error of a class (errRefused, errNetwork…) whose text is
// its own.
type classed struct {
	class error
	err   error
}

func (e *classed) Error() string   { return e.err.Error() }
func (e *classed) Unwrap() []error { return []error{e.class, e.err} }

func classify(class error, format string, args ...any) error {
	return &classed{class, fmt.Errorf(format, args...)}
}

// dial connects and publishes; the error is of class errNetwork or
// errRefused.
func dial(ctx context.Context, t *Target, tlsConf *tls.Config, tr *tracks, timeout time.Duration) (*session, error) {
	d := &net.Dialer{Timeout: timeout}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", t.dialAddr())
	if err != nil {
		return nil, classify(errNetwork, "%v", err)
	}
	if t.Scheme() == "rtmps" {
		conf := &tls.Config{}
		if tlsConf != nil {
			conf = tlsConf.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = t.u.Hostname()
		}
		tc := tls.Client(nc, conf)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			var cv *tls.CertificateVerificationError
			if errors.As(err, &cv) {
				// Not a network failure: the target stays wrong until
				// the configuration changes (-restream-ca).
				return nil, classify(errRefused, "TLS: %v", err)
			}
			return nil, classify(errNetwork, "TLS: %v", err)
		}
		nc = tc
	}
	s := &session{tr: tr, timeout: timeout, tap: &tapConn{Conn: nc}}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	s.c, err = publish(s.tap, t, timeout)
	if err != nil {
		nc.Close()
		var r *refusal
		var ne net.Error
		switch {
		case errors.As(err, &r):
			return nil, classify(errRefused, "%v", err)
		case errors.As(err, &ne) && ne.Timeout():
			return nil, classify(errNetwork, "no answer within %s: %v", timeout, err)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			return nil, classify(errRefused, "the server closed the connection before accepting the publish (%v)", err)
		}
		return nil, classify(errRefused, "%v", err)
	}
	s.w = &gortmplib.Writer{Conn: s.c, Tracks: tr.list()}
	s.c.setWriteDeadline(timeout)
	if err := s.w.Initialize(); err != nil {
		nc.Close()
		return nil, classify(errNetwork, "writing the stream headers: %v", err)
	}
	return s, nil
}

// watch reads what the server sends while the session publishes (acks,
// pings, an onStatus error before it hangs up) and calls done with why
// the connection ended.
func (s *session) watch(done func(error)) {
	buf := make([]byte, 4096)
	for {
		if _, err := s.tap.Read(buf); err != nil {
			if st := s.tap.status(); st != "" {
				done(fmt.Errorf("the server ended the publish: %s", st))
				return
			}
			done(fmt.Errorf("the server closed the connection: %v", err))
			return
		}
	}
}

func (s *session) close() { s.c.close() }

// bytesSent is what went on the wire (before TLS).
func (s *session) bytesSent() uint64 { return s.c.BytesSent() }

// catalog checks a new epoch's init segment against the session's.
func (s *session) catalog(init []byte) error {
	tr, err := parseTracks(init)
	if err != nil {
		return err
	}
	if tr.key != s.tr.key || tr.videoID != s.tr.videoID || tr.audioID != s.tr.audioID {
		return errParams
	}
	s.tr.videoTS, s.tr.audioTS = tr.videoTS, tr.audioTS
	s.rebase = true // a new epoch's decode times start anew
	return nil
}

type sample struct {
	dts, pts time.Duration
	video    bool
	key      bool
	data     []byte
}

// chunk writes one CMAF chunk's samples, in decode order.
func (s *session) chunk(payload []byte) error {
	var err error
	s.raw, err = chunkSamples(s.raw[:0], payload)
	if err != nil {
		return classify(errMedia, "chunk: %v", err)
	}
	s.samples = s.samples[:0]
	for _, cs := range s.raw {
		var ts uint32
		video := false
		switch cs.track {
		case uint32(s.tr.videoID):
			ts, video = s.tr.videoTS, true
		case uint32(s.tr.audioID):
			ts = s.tr.audioTS
		default:
			continue
		}
		d := toDuration(cs.dts, ts)
		key := cs.sync
		if video && s.tr.h264 {
			key = h264IDR(cs.data)
		}
		s.samples = append(s.samples, sample{dts: d, pts: d + toDurationSigned(cs.ptsOff, ts), video: video, key: key, data: cs.data})
	}
	if len(s.samples) == 0 {
		return nil
	}
	sort.SliceStable(s.samples, func(i, j int) bool { return s.samples[i].dts < s.samples[j].dts })
	first := s.samples[0].dts
	switch {
	case !s.based:
		s.offset, s.based = -first, true
	case s.rebase:
		s.offset = s.last + 20*time.Millisecond - first
	}
	s.rebase = false
	s.c.setWriteDeadline(s.timeout)
	s.c.bw.batch()
	for _, sm := range s.samples {
		dts, pts := sm.dts+s.offset, sm.pts+s.offset
		if dts < 0 {
			continue
		}
		var err error
		switch {
		case sm.video && s.tr.h264:
			// The sample is AVCC already: no copy, no re-framing.
			err = s.c.Write(&message.Video{
				ChunkStreamID: message.VideoChunkStreamID, MessageStreamID: 0x1000000,
				Codec: message.CodecH264, IsKeyFrame: sm.key, Type: message.VideoTypeAU,
				AU: sm.data, DTS: dts, PTSDelta: pts - dts,
			})
		case sm.video:
			au, uerr := fmp4.Sample{Payload: sm.data}.GetH265()
			if uerr != nil {
				return classify(errMedia, "H.265 sample: %v", uerr)
			}
			err = s.w.WriteH265(s.tr.video, pts, dts, au)
		default:
			err = s.w.WriteMPEG4Audio(s.tr.audio, dts, sm.data)
		}
		if err != nil {
			return classify(errNetwork, "write: %v", err)
		}
		s.last = max(s.last, dts)
	}
	if err := s.c.bw.flush(); err != nil {
		return classify(errNetwork, "write: %v", err)
	}
	return nil
}

// h264IDR reports whether an AVCC access unit (4-byte lengths) holds an
// IDR slice: RTMP's keyframe flag, whatever the CMAF sample flags say.
func h264IDR(au []byte) bool {
	for len(au) > 4 {
		n := int(binary.BigEndian.Uint32(au))
		if n <= 0 || n > len(au)-4 {
			return false
		}
		if au[4]&0x1f == 5 {
			return true
		}
		au = au[4+n:]
	}
	return false
}

// toDuration converts v units of 1/ts s without overflowing.
func toDuration(v uint64, ts uint32) time.Duration {
	t := uint64(ts)
	return time.Duration(v/t)*time.Second + time.Duration((v%t)*uint64(time.Second)/t)
}

func toDurationSigned(v int64, ts uint32) time.Duration {
	if v < 0 {
		return -toDuration(uint64(-v), ts)
	}
	return toDuration(uint64(v), ts)
}

// tapConn keeps the last bytes the server sent, to find the onStatus
// description of a refusal in them.
type tapConn struct {
	net.Conn
	mu   sync.Mutex
	tail []byte
}

const tapKeep = 4096

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.tail = append(c.tail, p[:n]...)
		if len(c.tail) > tapKeep {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-tapKeep:]...)
		}
		c.mu.Unlock()
	}
	return n, err
}

// status returns the code and description of the last onStatus or
// _error the server sent with level "error", or "".
func (c *tapConn) status() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return amfStatus(c.tail)
}

// amfStatus finds, in raw RTMP bytes, the last AMF0 object with level
// "error" and returns its "code: description". It reads the strings
// by their AMF0 encoding (key length, key, 0x02, value length, value),
// so a status split across chunks is missed, never misread.
func amfStatus(b []byte) string {
	i := bytes.LastIndex(b, []byte("\x00\x05level\x02"))
	if i < 0 || amfString(b[i:], "level") != "error" {
		return ""
	}
	// code and description follow or precede level in the same object:
	// take the ones nearest to it.
	code, desc := amfString(b[i:], "code"), amfString(b[i:], "description")
	if code == "" {
		code = amfString(b[:i], "code")
	}
	if desc == "" {
		desc = amfString(b[:i], "description")
	}
	switch {
	case desc == "":
		return code
	case code == "":
		return desc
	}
	return code + ": " + desc
}

// amfString returns the value of the first AMF0 string property key in
// b, "" if none.
func amfString(b []byte, key string) string {
	pat := append(binary.BigEndian.AppendUint16(nil, uint16(len(key))), key...)
	pat = append(pat, 0x02)
	i := bytes.Index(b, pat)
	if i < 0 {
		return ""
	}
	b = b[i+len(pat):]
	if len(b) < 2 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return ""
	}
	v := b[2 : 2+n]
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return "" // binary, not text: split across chunks
		}
	}
	if len(v) > 300 {
		v = v[:300]
	}
	return string(v)
}
