// Package remux turns timestamped encoded frames (H.264, H.265 or AV1
// video; AAC or Opus audio), as RTMP or any other frame-based ingest
// delivers them, into one muxed CMAF track: an fMP4 init segment (ftyp+moov
// with a video trak and an audio trak) and one chunk (moof+mdat) per video
// frame, carrying the audio received since the previous chunk.
//
// A video frame's duration is only known when the next one arrives, so each
// chunk leaves one frame interval after its frame. Decode times are 64-bit
// (tfdt version 1), keyframes are sync samples and every other video sample
// is flagged non-sync, and every traf is default-base-is-moof: the chunks
// pass shared/cmaf's validation unchanged.
package remux

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
)

// Errors, wrapped with detail. Test with errors.Is.
var (
	// ErrInvalid: a frame or a timestamp the muxer cannot turn into CMAF.
	ErrInvalid = errors.New("remux: invalid input")
	// ErrUnsupported: a codec CMAF delivery here does not carry.
	ErrUnsupported = errors.New("remux: unsupported codec")
	// ErrParamsChanged: the video parameter sets changed mid-stream,
	// which would need a new init segment.
	ErrParamsChanged = errors.New("remux: codec parameters changed mid-stream")
)

// Track IDs and timescales of the init segment.
const (
	VideoTrackID   = 1
	AudioTrackID   = 2
	VideoTimescale = 90000
)

const (
	// maxFrameGap: a gap between two video frames larger than this is a
	// jump in the timeline, not a long frame; the frame before it keeps
	// the previous frame's duration.
	maxFrameGap = VideoTimescale // 1 s
	// defaultFrameDuration is the duration of a frame whose successor
	// never came (30 fps).
	defaultFrameDuration = VideoTimescale / 30
	// maxPendingAudio bounds the audio frames held while waiting for a
	// video frame, and maxPendingAudioTime their duration; past either
	// the audio goes out in a chunk of its own (a short part, not one that
	// would stretch LL-HLS's part target).
	maxPendingAudio     = 256
	maxPendingAudioTime = 500 * time.Millisecond
	// audioJitter is how far (in ms) an audio timestamp may stray from
	// the running sample count before the decode time follows it.
	audioJitter = 40 * time.Millisecond
)

// Config says what the stream carries. At least one of Video and Audio is
// set; their concrete types are mediacommon's mp4 codecs: *H264, *H265 or
// *AV1 for video, *MPEG4Audio or *Opus for audio. An *AV1 without a
// sequence header takes it from the first keyframe.
type Config struct {
	Video mp4codecs.Codec
	Audio mp4codecs.Codec
	// MaxChunk bounds the bytes of one chunk (default 8 MiB).
	MaxChunk int
}

// Muxer builds the init segment and the chunks. Init is passed to OnInit
// once, before the first chunk; each chunk to OnChunk with the capture time
// of its first frame. An error from a callback stops the muxer and is
// returned. Use from one goroutine.
type Muxer struct {
	cfg     Config
	OnInit  func(init []byte) error
	OnChunk func(chunk []byte, capture int64) error

	audioRate  uint32 // audio timescale
	aacFrame   uint32 // samples per AAC access unit
	init       []byte
	started    bool // the first keyframe (or, audio only, frame) went out
	seq        uint32
	buf        []byte // the chunk being written
	video      [1]sample
	err        error
	videoClock unwrapper
	audioClock unwrapper

	pend      *videoFrame // the newest video frame, waiting for its duration
	lastDur   uint32
	lastDTS   int64 // of the newest video frame, 90 kHz
	haveVideo bool

	audio      []sample // audio since the last chunk
	audioBase  uint64   // decode time of audio[0]
	audioNext  int64    // decode time of the next audio frame
	audioStart bool     // audioNext is set
	audioDur   uint64   // of the samples in audio
	audioCapt  int64    // capture of audio[0]
}

type videoFrame struct {
	dts     int64
	ptsOff  int32
	key     bool
	payload []byte
	capture int64
}

// New checks cfg and returns a Muxer.
func New(cfg Config) (*Muxer, error) {
	if cfg.MaxChunk <= 0 {
		cfg.MaxChunk = 8 << 20
	}
	m := &Muxer{cfg: cfg}
	switch v := cfg.Video.(type) {
	case nil:
	case *mp4codecs.H264:
		if len(v.SPS) == 0 || len(v.PPS) == 0 {
			return nil, fmt.Errorf("%w: H.264 without SPS or PPS", ErrInvalid)
		}
	case *mp4codecs.H265:
		if len(v.VPS) == 0 || len(v.SPS) == 0 || len(v.PPS) == 0 {
			return nil, fmt.Errorf("%w: H.265 without VPS, SPS or PPS", ErrInvalid)
		}
	case *mp4codecs.AV1:
	default:
		return nil, fmt.Errorf("%w: video %T (supported: H.264, H.265, AV1)", ErrUnsupported, cfg.Video)
	}
	switch a := cfg.Audio.(type) {
	case nil:
	case *mp4codecs.MPEG4Audio:
		if a.Config.SampleRate <= 0 || a.Config.SampleRate > 192000 || a.Config.ChannelCount <= 0 {
			return nil, fmt.Errorf("%w: AAC with %d Hz, %d channels", ErrInvalid, a.Config.SampleRate, a.Config.ChannelCount)
		}
		m.audioRate = uint32(a.Config.SampleRate)
		m.aacFrame = 1024
		if a.Config.FrameLengthFlag {
			m.aacFrame = 960
		}
	case *mp4codecs.Opus:
		if a.ChannelCount <= 0 || a.ChannelCount > 8 {
			return nil, fmt.Errorf("%w: Opus with %d channels", ErrInvalid, a.ChannelCount)
		}
		m.audioRate = 48000
	default:
		return nil, fmt.Errorf("%w: audio %T (supported: AAC, Opus)", ErrUnsupported, cfg.Audio)
	}
	if cfg.Video == nil && cfg.Audio == nil {
		return nil, fmt.Errorf("%w: neither video nor audio", ErrInvalid)
	}
	return m, nil
}

// AudioTimescale returns the audio trak's timescale (its sample rate).
func (m *Muxer) AudioTimescale() uint32 { return m.audioRate }

// Init returns the init segment once it was built (after the first
// keyframe), else nil.
func (m *Muxer) Init() []byte { return m.init }

func (m *Muxer) fail(err error) error {
	if m.err == nil {
		m.err = err
	}
	return err
}

// buildInit makes the init segment; an AV1 track takes its sequence header
// from tu.
func (m *Muxer) buildInit(tu [][]byte) error {
	var in fmp4.Init
	if v := m.cfg.Video; v != nil {
		if a, ok := v.(*mp4codecs.AV1); ok && len(a.SequenceHeader) == 0 {
			for _, obu := range tu {
				if len(obu) > 0 && av1.OBUType((obu[0]>>3)&0xf) == av1.OBUTypeSequenceHeader {
					a.SequenceHeader = obu
				}
			}
			if len(a.SequenceHeader) == 0 {
				return fmt.Errorf("%w: AV1 keyframe without a sequence header", ErrInvalid)
			}
		}
		in.Tracks = append(in.Tracks, &fmp4.InitTrack{ID: VideoTrackID, TimeScale: VideoTimescale, Codec: v})
	}
	if a := m.cfg.Audio; a != nil {
		in.Tracks = append(in.Tracks, &fmp4.InitTrack{ID: AudioTrackID, TimeScale: m.audioRate, Codec: a})
	}
	var b seekablebuffer.Buffer
	if err := safeMarshal(func() error { return in.Marshal(&b) }); err != nil {
		return fmt.Errorf("%w: init segment: %w", ErrInvalid, err)
	}
	m.init = b.Bytes()
	if m.OnInit != nil {
		return m.OnInit(m.init)
	}
	return nil
}

// safeMarshal runs a mediacommon marshaller, which parses parameter sets
// that came from the network, turning a panic into an error.
func safeMarshal(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed codec data (%v)", r)
		}
	}()
	return f()
}

// WriteVideo takes one access unit (H.264/H.265: NAL units without start
// codes; AV1: the OBUs of a temporal unit) with its decode and presentation
// times and the wall-clock capture time (µs since the Unix epoch). Units
// that carry only parameter sets are checked against the init segment and
// dropped.
func (m *Muxer) WriteVideo(dts, pts time.Duration, au [][]byte, capture int64) error {
	if m.err != nil {
		return m.err
	}
	if m.cfg.Video == nil {
		return m.fail(fmt.Errorf("%w: video frame in an audio-only stream", ErrInvalid))
	}
	key, vcl, err := m.inspect(au)
	if err != nil {
		return m.fail(err)
	}
	if !vcl {
		return nil
	}
	if !m.started && !key {
		return nil // a group starts with a keyframe
	}
	d := m.videoClock.unwrap(dts)
	dts90 := d.Nanoseconds() * VideoTimescale / int64(time.Second)
	off := (pts - dts).Nanoseconds() * VideoTimescale / int64(time.Second)
	if off < -(1<<31) || off >= 1<<31 {
		return m.fail(fmt.Errorf("%w: presentation time %v is %v from the decode time", ErrInvalid, pts, pts-dts))
	}
	if m.haveVideo && dts90 <= m.lastDTS {
		return m.fail(fmt.Errorf("%w: video decode time went from %v to %v", ErrInvalid,
			time.Duration(m.lastDTS)*time.Second/VideoTimescale, time.Duration(dts90)*time.Second/VideoTimescale))
	}
	payload, err := m.payload(au)
	if err != nil {
		return m.fail(err)
	}
	if !m.started {
		if err := m.buildInit(au); err != nil {
			return m.fail(err)
		}
		m.started = true
		m.audio, m.audioDur = m.audio[:0], 0 // audio before the first keyframe has no group
	}
	if m.pend != nil {
		dur := dts90 - m.pend.dts
		if dur > maxFrameGap {
			dur = int64(m.lastDur)
		}
		if err := m.flush(uint32(dur)); err != nil {
			return m.fail(err)
		}
		m.lastDur = uint32(dur)
	}
	m.pend = &videoFrame{dts: dts90, ptsOff: int32(off), key: key, payload: payload, capture: capture}
	m.lastDTS, m.haveVideo = dts90, true
	return nil
}

// inspect reports whether au is a keyframe and whether it holds a picture
// at all; parameter sets in it must match the init's.
func (m *Muxer) inspect(au [][]byte) (key, vcl bool, err error) {
	if len(au) == 0 {
		return false, false, nil
	}
	for _, n := range au {
		if len(n) == 0 {
			return false, false, fmt.Errorf("%w: empty NAL unit", ErrInvalid)
		}
	}
	switch v := m.cfg.Video.(type) {
	case *mp4codecs.H264:
		for _, n := range au {
			switch typ := h264.NALUType(n[0] & 0x1f); {
			case typ == h264.NALUTypeSPS && !bytes.Equal(n, v.SPS), typ == h264.NALUTypePPS && !bytes.Equal(n, v.PPS):
				return false, false, fmt.Errorf("%w: H.264 %v differs from the one the stream started with", ErrParamsChanged, typ)
			case typ >= h264.NALUTypeNonIDR && typ <= h264.NALUTypeIDR:
				vcl = true
			}
		}
		return h264.IsRandomAccess(au), vcl, nil
	case *mp4codecs.H265:
		for _, n := range au {
			switch typ := h265.NALUType((n[0] >> 1) & 0x3f); {
			case typ == h265.NALUType_VPS_NUT && !bytes.Equal(n, v.VPS), typ == h265.NALUType_SPS_NUT && !bytes.Equal(n, v.SPS),
				typ == h265.NALUType_PPS_NUT && !bytes.Equal(n, v.PPS):
				return false, false, fmt.Errorf("%w: H.265 %v differs from the one the stream started with", ErrParamsChanged, typ)
			case typ < 32:
				vcl = true
			}
		}
		return h265.IsRandomAccess(au), vcl, nil
	case *mp4codecs.AV1:
		for _, obu := range au {
			switch typ := av1.OBUType((obu[0] >> 3) & 0xf); typ {
			case av1.OBUTypeSequenceHeader:
				if len(v.SequenceHeader) > 0 && !bytes.Equal(obu, v.SequenceHeader) {
					return false, false, fmt.Errorf("%w: AV1 sequence header differs from the one the stream started with", ErrParamsChanged)
				}
			case 3, 4, 6: // frame header, tile group, frame
				vcl = true
			}
		}
		return av1.IsRandomAccess2(au), vcl, nil
	}
	return false, false, nil
}

// payload is the sample's bytes: 4-byte NAL unit lengths (H.264, H.265) or
// OBUs with sizes (AV1).
func (m *Muxer) payload(au [][]byte) ([]byte, error) {
	var b []byte
	var err error
	if _, ok := m.cfg.Video.(*mp4codecs.AV1); ok {
		b, err = av1.Bitstream(au).Marshal()
	} else {
		b, err = h264.AVCC(au).Marshal()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(b) > m.cfg.MaxChunk {
		return nil, fmt.Errorf("%w: a frame of %d bytes, limit %d", ErrInvalid, len(b), m.cfg.MaxChunk)
	}
	return b, nil
}

// WriteAudio takes one audio frame (an AAC access unit without ADTS header,
// or an Opus packet) with its decode time and capture time.
func (m *Muxer) WriteAudio(dts time.Duration, frame []byte, capture int64) error {
	if m.err != nil {
		return m.err
	}
	if m.cfg.Audio == nil {
		return m.fail(fmt.Errorf("%w: audio frame in a video-only stream", ErrInvalid))
	}
	if len(frame) == 0 {
		return nil
	}
	var dur uint32
	switch m.cfg.Audio.(type) {
	case *mp4codecs.MPEG4Audio:
		dur = m.aacFrame
	case *mp4codecs.Opus:
		d := opus.PacketDuration2(frame)
		if d <= 0 || d > 48000*120/1000 {
			return m.fail(fmt.Errorf("%w: Opus packet of %d samples", ErrInvalid, d))
		}
		dur = uint32(d)
	}
	if m.cfg.Video != nil && !m.started {
		return nil // wait for the first video keyframe
	}
	d := m.audioClock.unwrap(dts)
	at := d.Nanoseconds() * int64(m.audioRate) / int64(time.Second)
	jitter := audioJitter.Nanoseconds() * int64(m.audioRate) / int64(time.Second)
	switch {
	case !m.audioStart:
		m.audioNext, m.audioStart = at, true
	case at > m.audioNext+jitter:
		m.audioNext = at // a gap: follow the timestamps
	case at < m.audioNext-int64(m.audioRate):
		return m.fail(fmt.Errorf("%w: audio decode time went back by %v", ErrInvalid,
			time.Duration(m.audioNext-at)*time.Second/time.Duration(m.audioRate)))
	}
	if len(m.audio) == 0 {
		m.audioBase, m.audioCapt = uint64(m.audioNext), capture
	} else if uint64(m.audioNext) != m.audioBase+m.audioDur {
		// A gap inside the pending audio: send what is pending first,
		// so that each traf's samples are contiguous.
		if err := m.flushAudio(); err != nil {
			return m.fail(err)
		}
		m.audioBase, m.audioCapt = uint64(m.audioNext), capture
	}
	m.audio = append(m.audio, sample{dur: dur, flags: syncFlags, data: frame})
	m.audioDur += uint64(dur)
	m.audioNext += int64(dur)
	if !m.started {
		m.started = true // audio only
		if err := m.buildInit(nil); err != nil {
			return m.fail(err)
		}
	}
	switch {
	case m.cfg.Video == nil && m.audioDur*25 >= uint64(m.audioRate):
		// Audio only: a chunk per 40 ms or so.
		return m.failIf(m.flushAudio())
	case len(m.audio) >= maxPendingAudio || m.audioDur >= uint64(maxPendingAudioTime.Seconds()*float64(m.audioRate)):
		// Video stalled: do not hold audio without bound.
		return m.failIf(m.flushAudio())
	}
	return nil
}

func (m *Muxer) failIf(err error) error {
	if err != nil {
		return m.fail(err)
	}
	return nil
}

// flush sends the pending video frame, with duration dur, and the pending
// audio as one chunk.
func (m *Muxer) flush(dur uint32) error {
	f := m.pend
	m.pend = nil
	flags := uint32(nonSyncFlags)
	if f.key {
		flags = syncFlags
	}
	m.video[0] = sample{dur: dur, cto: f.ptsOff, flags: flags, data: f.payload}
	runs := []run{{id: VideoTrackID, base: uint64(f.dts), samples: m.video[:]}}
	if len(m.audio) > 0 {
		runs = append(runs, run{id: AudioTrackID, base: m.audioBase, samples: m.audio})
	}
	err := m.write(runs, f.capture)
	m.audio, m.audioDur = m.audio[:0], 0
	return err
}

// flushAudio sends the pending audio as a chunk of its own.
func (m *Muxer) flushAudio() error {
	if len(m.audio) == 0 {
		return nil
	}
	err := m.write([]run{{id: AudioTrackID, base: m.audioBase, samples: m.audio}}, m.audioCapt)
	m.audio, m.audioDur = m.audio[:0], 0
	return err
}

func (m *Muxer) write(runs []run, capture int64) error {
	size := 0
	for _, r := range runs {
		for _, x := range r.samples {
			size += len(x.data)
		}
	}
	if size > m.cfg.MaxChunk {
		return fmt.Errorf("%w: a chunk of %d bytes, limit %d", ErrInvalid, size, m.cfg.MaxChunk)
	}
	m.seq++
	m.buf = appendChunk(m.buf[:0], m.seq, runs)
	if m.OnChunk != nil {
		return m.OnChunk(m.buf, capture)
	}
	return nil
}

// Flush sends what is pending: the last video frame (with the previous
// frame's duration) and the audio after it. Call it when the stream ends.
func (m *Muxer) Flush() error {
	if m.err != nil {
		return m.err
	}
	if m.pend != nil {
		dur := m.lastDur
		if dur == 0 {
			dur = defaultFrameDuration
		}
		if err := m.flush(dur); err != nil {
			return m.fail(err)
		}
	}
	return m.failIf(m.flushAudio())
}

// unwrapper turns RTMP's 32-bit millisecond timestamps, which wrap after
// 49.7 days, into a rising 64-bit timeline.
type unwrapper struct {
	last   time.Duration
	offset time.Duration
	seen   bool
}

const wrap = time.Duration(1<<32) * time.Millisecond

func (u *unwrapper) unwrap(t time.Duration) time.Duration {
	if u.seen && t < u.last && u.last-t > wrap/2 {
		u.offset += wrap
	}
	u.last, u.seen = t, true
	return t + u.offset
}
