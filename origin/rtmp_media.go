package origin

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/remux"
	"github.com/quiccast/quiccast/shared/wire"
)

// rtmpMedia turns an RTMP publisher's messages into the session's init
// segment and chunks:
//
//	gortmplib.Reader (tracks, frames) --> remux.Muxer (one muxed CMAF track)
//	  --> cmaf.Reader (the validation every publisher gets) --> Session.Init / Session.Chunk
//
// The capture wall-clock of each chunk is the arrival time of its frame's
// RTMP message. gortmplib reads the first seconds of the stream to find the
// tracks and then replays them; arrival times are kept for the replay.
type rtmpMedia struct {
	c   *rtmpConn
	rd  *gortmplib.Reader
	mux *remux.Muxer

	feed bytes.Buffer
	cr   *cmaf.Reader

	recording bool    // Reader.Initialize is reading ahead
	arrivals  []int64 // arrival times of the messages read ahead, in order
	arrival   int64   // of the message being handled, µs
	err       error   // first error of a frame callback
	chunks    int
}

// maxReadAhead bounds what gortmplib may read (and hold) while it looks for
// the stream's tracks.
const maxReadAheadMessages = 4000

func newRTMPMedia(c *rtmpConn) *rtmpMedia {
	m := &rtmpMedia{c: c}
	m.cr = cmaf.NewReader(&m.feed, c.n.cmafLimits())
	return m
}

// timedConn records when each message arrived.
type timedConn struct {
	*gortmplib.ServerConn
	m   *rtmpMedia
	max uint64 // bytes that may be read ahead
}

func (t *timedConn) Read() (message.Message, error) {
	msg, err := t.ServerConn.Read()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMicro()
	if t.m.recording {
		if len(t.m.arrivals) >= maxReadAheadMessages || t.ServerConn.BytesReceived() > t.max {
			return nil, wire.Errorf(wire.CodeTooLarge, "no audio or video track found in the first %d messages or %d bytes", len(t.m.arrivals), t.max)
		}
		t.m.arrivals = append(t.m.arrivals, now)
	} else {
		t.m.arrival = now
	}
	return msg, nil
}

// start finds the tracks, checks their codecs and sets up the muxer.
func (m *rtmpMedia) start() error {
	c := m.c
	// Publish.Start (gortmplib sends it only when given the ServerConn
	// itself, which would lose the arrival times).
	if err := c.sc.AcceptAction(); err != nil {
		return err
	}
	m.recording = true
	m.rd = &gortmplib.Reader{Conn: &timedConn{ServerConn: c.sc, m: m, max: uint64(4 * c.n.cfg.MaxBox)}}
	if err := m.rd.Initialize(); err != nil {
		return err
	}
	m.recording = false
	var video, audio *gortmplib.Track
	var cfg remux.Config
	for _, t := range m.rd.Tracks() {
		switch {
		case t.Codec.IsVideo() && video == nil:
			video = t
			cfg.Video = mp4Video(t.Codec)
			if cfg.Video == nil {
				return wire.Errorf(wire.CodeInvalidMedia, "%v: video %s (supported: H.264, H.265, AV1)", cmaf.ErrUnsupportedCodec, codecName(t.Codec))
			}
		case !t.Codec.IsVideo() && audio == nil:
			audio = t
			cfg.Audio = mp4Audio(t.Codec)
			if cfg.Audio == nil {
				return wire.Errorf(wire.CodeInvalidMedia, "%v: audio %s (supported: AAC, Opus)", cmaf.ErrUnsupportedCodec, codecName(t.Codec))
			}
		}
	}
	cfg.MaxChunk = c.n.cfg.MaxBox
	mux, err := remux.New(cfg)
	if err != nil {
		return m.mediaError(err)
	}
	mux.OnInit = m.onInit
	mux.OnChunk = m.onChunk
	m.mux = mux
	for _, t := range m.rd.Tracks() {
		switch {
		case t == video:
			m.onVideo(t)
		case t == audio:
			m.onAudio(t)
		default:
			c.log.Info("RTMP track ignored (only the first video and the first audio track are ingested)", "codec", codecName(t.Codec))
			ignoreTrack(m.rd, t)
		}
	}
	c.log.Info("RTMP tracks", "video", codecName(trackCodec(video)), "audio", codecName(trackCodec(audio)))
	return nil
}

// readOne reads and handles one message.
func (m *rtmpMedia) readOne() error {
	if len(m.arrivals) > 0 {
		m.arrival = m.arrivals[0] // a message gortmplib read ahead
		m.arrivals = m.arrivals[1:]
		if len(m.arrivals) == 0 {
			m.arrivals = nil
		}
	}
	if err := m.rd.Read(); err != nil {
		return err
	}
	return m.err
}

// flush sends the last frame at the end of the stream.
func (m *rtmpMedia) flush() error {
	if m.mux == nil || m.err != nil {
		return m.err
	}
	if err := m.mux.Flush(); err != nil {
		return m.mediaError(err)
	}
	return nil
}

func (m *rtmpMedia) onVideo(t *gortmplib.Track) {
	h26x := func(pts, dts time.Duration, au [][]byte) {
		if m.err == nil {
			if err := m.mux.WriteVideo(dts, pts, au, m.arrival); err != nil {
				m.err = m.mediaError(err)
			}
		}
	}
	switch t.Codec.(type) {
	case *codecs.H264:
		m.rd.OnDataH264(t, h26x)
	case *codecs.H265:
		m.rd.OnDataH265(t, h26x)
	case *codecs.AV1:
		m.rd.OnDataAV1(t, func(pts time.Duration, tu [][]byte) { h26x(pts, pts, tu) })
	}
}

func (m *rtmpMedia) onAudio(t *gortmplib.Track) {
	write := func(pts time.Duration, frame []byte) {
		if m.err == nil {
			if err := m.mux.WriteAudio(pts, frame, m.arrival); err != nil {
				m.err = m.mediaError(err)
			}
		}
	}
	switch t.Codec.(type) {
	case *codecs.MPEG4Audio:
		m.rd.OnDataMPEG4Audio(t, write)
	case *codecs.Opus:
		m.rd.OnDataOpus(t, write)
	}
}

// onInit validates the init segment like any publisher's and starts the
// session's epoch.
func (m *rtmpMedia) onInit(init []byte) error {
	m.feed.Write(init)
	seg, err := m.cr.Next()
	if err != nil {
		return mediaError(err)
	}
	in, ok := seg.(*cmaf.Init)
	if !ok {
		return wire.Errorf(wire.CodeInternal, "remuxed init segment read back as %T", seg)
	}
	return m.c.sess.Init(in)
}

// onChunk validates one remuxed chunk and hands it to the session.
func (m *rtmpMedia) onChunk(chunk []byte, capture int64) error {
	m.feed.Write(chunk)
	seg, err := m.cr.Next()
	if err != nil {
		return mediaError(err)
	}
	ch, ok := seg.(*cmaf.Chunk)
	if !ok {
		return wire.Errorf(wire.CodeInternal, "remuxed chunk read back as %T", seg)
	}
	if m.feed.Len() == 0 {
		m.feed.Reset()
	}
	ch.Capture = capture
	m.chunks++
	return m.c.sess.Chunk(ch)
}

// mediaError gives a remux error its wire code.
func (m *rtmpMedia) mediaError(err error) error {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return err
	case errors.Is(err, remux.ErrUnsupported), errors.Is(err, remux.ErrInvalid), errors.Is(err, remux.ErrParamsChanged):
		return &wire.Error{Code: wire.CodeInvalidMedia, Msg: err.Error(), Err: err}
	}
	return mediaError(err)
}

func trackCodec(t *gortmplib.Track) codecs.Codec {
	if t == nil {
		return nil
	}
	return t.Codec
}

// mp4Video maps an RTMP video codec to the fMP4 one, nil if unsupported.
func mp4Video(c codecs.Codec) mp4codecs.Codec {
	switch c := c.(type) {
	case *codecs.H264:
		return &mp4codecs.H264{SPS: c.SPS, PPS: c.PPS}
	case *codecs.H265:
		return &mp4codecs.H265{VPS: c.VPS, SPS: c.SPS, PPS: c.PPS}
	case *codecs.AV1:
		return &mp4codecs.AV1{} // the sequence header comes with the first keyframe
	}
	return nil
}

// mp4Audio maps an RTMP audio codec to the fMP4 one, nil if unsupported.
func mp4Audio(c codecs.Codec) mp4codecs.Codec {
	switch c := c.(type) {
	case *codecs.MPEG4Audio:
		if c.Config == nil {
			return nil
		}
		return &mp4codecs.MPEG4Audio{Config: *c.Config}
	case *codecs.Opus:
		ch := 2
		if c.IDHeader != nil && c.IDHeader.ChannelCount > 0 {
			ch = int(c.IDHeader.ChannelCount)
		}
		return &mp4codecs.Opus{ChannelCount: ch}
	}
	return nil
}

func codecName(c codecs.Codec) string {
	switch c.(type) {
	case nil:
		return "none"
	case *codecs.H264:
		return "H.264"
	case *codecs.H265:
		return "H.265"
	case *codecs.AV1:
		return "AV1"
	case *codecs.VP9:
		return "VP9"
	case *codecs.MPEG4Audio:
		return "AAC"
	case *codecs.Opus:
		return "Opus"
	case *codecs.MPEG1Audio:
		return "MP3"
	case *codecs.AC3:
		return "AC-3"
	case *codecs.G711:
		return "G.711"
	case *codecs.LPCM:
		return "LPCM"
	case *codecs.FLAC:
		return "FLAC"
	}
	return fmt.Sprintf("%T", c)
}

// ignoreTrack gives a track nobody ingests a callback that drops its
// frames (gortmplib calls the callback of every track it found).
func ignoreTrack(r *gortmplib.Reader, t *gortmplib.Track) {
	drop := func(time.Duration, []byte) {}
	switch t.Codec.(type) {
	case *codecs.H264:
		r.OnDataH264(t, func(time.Duration, time.Duration, [][]byte) {})
	case *codecs.H265:
		r.OnDataH265(t, func(time.Duration, time.Duration, [][]byte) {})
	case *codecs.AV1:
		r.OnDataAV1(t, func(time.Duration, [][]byte) {})
	case *codecs.VP9:
		r.OnDataVP9(t, drop)
	case *codecs.MPEG4Audio:
		r.OnDataMPEG4Audio(t, drop)
	case *codecs.Opus:
		r.OnDataOpus(t, drop)
	case *codecs.MPEG1Audio:
		r.OnDataMPEG1Audio(t, drop)
	case *codecs.AC3:
		r.OnDataAC3(t, drop)
	case *codecs.G711:
		r.OnDataG711(t, drop)
	case *codecs.LPCM:
		r.OnDataLPCM(t, drop)
	case *codecs.FLAC:
		r.OnDataFLAC(t, drop)
	}
}
