package origin

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/remux"
	"github.com/quiccast/quiccast/shared/wire"
)

// rtmpMedia turns an RTMP publisher's messages into the session's init
// segment and chunks:
//
//	gortmplib.ServerConn (messages) --> rtmpProbe (tracks from the sequence headers and onMetaData)
//	  --> remux.Muxer (one muxed CMAF track)
//	  --> cmaf.Reader (the validation every publisher gets) --> Session.Init / Session.Chunk
//
// The capture wall-clock of each chunk is the arrival time of its frame's
// RTMP message. The messages read while the tracks are found are kept
// with their arrival times and handled once the muxer is set up.
type rtmpMedia struct {
	c   *rtmpConn
	mux *remux.Muxer

	feed bytes.Buffer
	cr   *cmaf.Reader

	video, audio     codecs.Codec // the ingested tracks (nil: none)
	videoID, audioID uint8        // their Enhanced RTMP track IDs
	late             bool         // a late track's frames were logged as dropped

	arrival int64 // of the message being handled, µs
	err     error // first error of a frame callback
	chunks  int
}

// timedMessage is a message read while the tracks were being found.
type timedMessage struct {
	msg     message.Message
	arrival int64
}

// maxReadAheadMessages bounds the messages held while the tracks are
// being found (as do 4 × -max-box bytes).
const maxReadAheadMessages = 4000

func newRTMPMedia(c *rtmpConn) *rtmpMedia {
	m := &rtmpMedia{c: c}
	m.cr = cmaf.NewReader(&m.feed, c.n.cmafLimits())
	return m
}

// start finds the tracks, checks their codecs, sets up the muxer and
// hands it the messages read so far.
func (m *rtmpMedia) start() error {
	c := m.c
	if err := c.sc.AcceptAction(); err != nil { // NetStream.Publish.Start
		return err
	}
	began := time.Now()
	maxBytes := c.sc.BytesReceived() + uint64(4*c.n.cfg.MaxBox)
	var probe rtmpProbe
	var held []timedMessage
	for !probe.ready() {
		msg, err := c.sc.Read()
		if err != nil {
			return err
		}
		if len(held) >= maxReadAheadMessages || c.sc.BytesReceived() > maxBytes {
			return wire.Errorf(wire.CodeTooLarge, "no audio or video track found in the first %d messages or %d bytes", len(held), maxBytes)
		}
		held = append(held, timedMessage{msg, time.Now().UnixMicro()})
		if err := probe.add(msg); err != nil {
			return err
		}
	}
	m.video, m.videoID = firstTrack(probe.video)
	m.audio, m.audioID = firstTrack(probe.audio)
	var cfg remux.Config
	if m.video != nil {
		if cfg.Video = mp4Video(m.video); cfg.Video == nil {
			return wire.Errorf(wire.CodeInvalidMedia, "%v: video %s (supported: H.264, H.265, AV1)", cmaf.ErrUnsupportedCodec, codecName(m.video))
		}
	}
	if m.audio != nil {
		if cfg.Audio = mp4Audio(m.audio); cfg.Audio == nil {
			return wire.Errorf(wire.CodeInvalidMedia, "%v: audio %s (supported: AAC, Opus)", cmaf.ErrUnsupportedCodec, codecName(m.audio))
		}
	}
	if m.video == nil && m.audio == nil {
		return wire.Errorf(wire.CodeInvalidMedia, "RTMP stream: no audio or video track configured in the first %s of media", rtmpProbeMax)
	}
	cfg.MaxChunk = c.n.cfg.MaxBox
	mux, err := remux.New(cfg)
	if err != nil {
		return m.mediaError(err)
	}
	mux.OnInit = m.onInit
	mux.OnChunk = m.onChunk
	m.mux = mux
	for id, t := range probe.video {
		if t != m.video || id != m.videoID {
			c.log.Info("RTMP track ignored (only the first video and the first audio track are ingested)", "codec", codecName(t), "track", id)
		}
	}
	for id, t := range probe.audio {
		if t != m.audio || id != m.audioID {
			c.log.Info("RTMP track ignored (only the first video and the first audio track are ingested)", "codec", codecName(t), "track", id)
		}
	}
	c.log.Info("RTMP tracks", "video", codecName(m.video), "audio", codecName(m.audio),
		"metadata", probe.meta, "found_in", time.Since(began).Round(time.Millisecond), "messages", len(held))
	for i, h := range held {
		held[i].msg = nil
		m.arrival = h.arrival
		m.handle(h.msg)
		if m.err != nil {
			return m.err
		}
	}
	return nil
}

// firstTrack returns the track with the lowest ID, nil if there is none.
func firstTrack(ts map[uint8]codecs.Codec) (codecs.Codec, uint8) {
	var first codecs.Codec
	var fid uint8
	for id, t := range ts {
		if first == nil || id < fid {
			first, fid = t, id
		}
	}
	return first, fid
}

// readOne reads and handles one message.
func (m *rtmpMedia) readOne() error {
	msg, err := m.c.sc.Read()
	if err != nil {
		return err
	}
	m.arrival = time.Now().UnixMicro()
	m.handle(msg)
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

// handle passes one message's frames to the muxer. Messages of tracks
// not ingested are dropped.
func (m *rtmpMedia) handle(msg message.Message) {
	if m.err != nil {
		return
	}
	var err error
	switch msg := msg.(type) {
	case *message.Video, *message.VideoExCodedFrames, *message.VideoExFramesX:
		err = m.onVideo(0, msg)
	case *message.Audio, *message.AudioExCodedFrames:
		err = m.onAudio(0, msg)
	case *message.VideoExMultitrack:
		err = m.onVideo(msg.TrackID, msg.Wrapped)
	case *message.AudioExMultitrack:
		err = m.onAudio(msg.TrackID, msg.Wrapped)
	}
	if err != nil && m.err == nil {
		m.err = err
	}
}

func (m *rtmpMedia) onVideo(id uint8, msg message.Message) error {
	if m.video == nil || id != m.videoID {
		m.lateTrack("video", msg)
		return nil
	}
	var dts, pts time.Duration
	var payload []byte
	switch msg := msg.(type) {
	case *message.Video:
		if _, av1 := m.video.(*codecs.AV1); av1 {
			return nil // not an AV1 message
		}
		dts, pts = msg.DTS, msg.DTS+msg.PTSDelta
		switch {
		case msg.Type == message.VideoTypeAU:
			payload = msg.AU
		case msg.Type != message.VideoTypeConfig:
		case msg.AVCConfig != nil: // parameter sets again: the muxer checks they did not change
			return m.writeVideo(dts, pts, [][]byte{msg.AVCConfig.SequenceParameterSets[0].NALUnit, msg.AVCConfig.PictureParameterSets[0].NALUnit})
		case msg.HEVCConfig != nil:
			p := hevcParams(msg.HEVCConfig.NaluArrays)
			return m.writeVideo(dts, pts, [][]byte{p.VPS, p.SPS, p.PPS})
		}
	case *message.VideoExCodedFrames:
		dts, pts, payload = msg.DTS, msg.DTS+msg.PTSDelta, msg.Payload
	case *message.VideoExFramesX:
		dts, pts, payload = msg.DTS, msg.DTS, msg.Payload
	}
	if payload == nil {
		return nil
	}
	if _, ok := m.video.(*codecs.AV1); ok {
		var tu av1.Bitstream
		if err := tu.Unmarshal(payload); err != nil {
			return wire.Errorf(wire.CodeInvalidMedia, "RTMP stream: AV1: %v", err)
		}
		return m.writeVideo(pts, pts, tu)
	}
	var au h264.AVCC // H.264 and H.265 alike
	if err := au.Unmarshal(payload); err != nil {
		if errors.Is(err, h264.ErrAVCCNoNALUs) {
			return nil
		}
		return wire.Errorf(wire.CodeInvalidMedia, "RTMP stream: %s: %v", codecName(m.video), err)
	}
	return m.writeVideo(dts, pts, au)
}

func (m *rtmpMedia) writeVideo(dts, pts time.Duration, au [][]byte) error {
	if err := m.mux.WriteVideo(dts, pts, au, m.arrival); err != nil {
		return m.mediaError(err)
	}
	return nil
}

func (m *rtmpMedia) onAudio(id uint8, msg message.Message) error {
	if m.audio == nil || id != m.audioID {
		m.lateTrack("audio", msg)
		return nil
	}
	var frame []byte
	var dts time.Duration
	switch msg := msg.(type) {
	case *message.Audio:
		if msg.Codec == message.CodecMPEG4Audio && msg.AACType == message.AudioAACTypeAU {
			dts, frame = msg.DTS, msg.AU
		}
	case *message.AudioExCodedFrames:
		dts, frame = msg.DTS, msg.Payload
	}
	if frame == nil {
		return nil
	}
	if err := m.mux.WriteAudio(dts, frame, m.arrival); err != nil {
		return m.mediaError(err)
	}
	return nil
}

// lateTrack logs, once, frames of a kind the broadcast was set up
// without: a track that began after the tracks were found.
func (m *rtmpMedia) lateTrack(kind string, msg message.Message) {
	if m.late || (kind == "video" && m.video != nil) || (kind == "audio" && m.audio != nil) {
		return // another track of a kind that is ingested: already logged
	}
	switch msg.(type) {
	case *message.Video, *message.Audio, *message.VideoExCodedFrames, *message.VideoExFramesX, *message.AudioExCodedFrames:
		m.late = true
		m.c.log.Warn("RTMP "+kind+" began after the tracks were found; its frames are dropped", "waited", rtmpProbeMax)
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
