package origin

import (
	"time"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/wire"
)

const (
	// rtmpProbeMax is the most media time the probe reads before it takes
	// the tracks configured so far (gortmplib's own Reader always reads
	// this much, which is what made a publisher wait 2 s to go live).
	rtmpProbeMax = 2 * time.Second
	// rtmpProbeNoMeta is how much media time a publisher without
	// onMetaData gets for its second track once one track is configured.
	rtmpProbeNoMeta = 500 * time.Millisecond
)

// rtmpProbe finds a publisher's tracks in its first RTMP messages: the
// sequence headers (AVC/HEVC decoder configuration, AAC
// AudioSpecificConfig, the Enhanced RTMP sequence starts) configure them,
// and onMetaData's videocodecid/audiocodecid say which ones to wait for.
// It is ready as soon as every announced track is configured; without
// onMetaData, rtmpProbeNoMeta of media after the first track; in any case
// after rtmpProbeMax of media.
type rtmpProbe struct {
	meta                 bool // onMetaData announced the tracks
	wantVideo, wantAudio bool
	video, audio         map[uint8]codecs.Codec // configured, by Enhanced RTMP track ID (0: not multitrack)

	timed       bool // a media timestamp was seen
	first, last time.Duration
}

// ready reports whether the tracks are known (or will not be).
func (p *rtmpProbe) ready() bool {
	have := len(p.video) > 0 || len(p.audio) > 0
	elapsed := p.last - p.first
	switch {
	case p.timed && elapsed >= rtmpProbeMax:
		return true
	case p.meta:
		return have && (!p.wantVideo || len(p.video) > 0) && (!p.wantAudio || len(p.audio) > 0)
	case len(p.video) > 0 && len(p.audio) > 0:
		return true
	}
	return have && p.timed && elapsed >= rtmpProbeNoMeta
}

func (p *rtmpProbe) clock(dts time.Duration) {
	if !p.timed {
		p.timed, p.first = true, dts
	}
	p.last = dts
}

// add looks at one message. An unsupported codec is an error at once.
func (p *rtmpProbe) add(msg message.Message) error {
	if p.video == nil {
		p.video, p.audio = map[uint8]codecs.Codec{}, map[uint8]codecs.Codec{}
	}
	switch msg := msg.(type) {
	case *message.DataAMF0:
		p.metadata(msg.Payload)
	case *message.Video:
		p.clock(msg.DTS)
		if msg.Type != message.VideoTypeConfig || p.video[0] != nil {
			break
		}
		switch {
		case msg.Codec == message.CodecH264 && msg.AVCConfig != nil:
			// SPS and PPS are there (message.Video checks).
			p.video[0] = &codecs.H264{
				SPS: msg.AVCConfig.SequenceParameterSets[0].NALUnit,
				PPS: msg.AVCConfig.PictureParameterSets[0].NALUnit,
			}
		case msg.Codec == message.CodecH265 && msg.HEVCConfig != nil:
			p.video[0] = hevcParams(msg.HEVCConfig.NaluArrays)
		}
	case *message.VideoExSequenceStart:
		return p.videoStart(0, msg)
	case *message.VideoExCodedFrames:
		p.clock(msg.DTS)
	case *message.VideoExFramesX:
		p.clock(msg.DTS)
	case *message.VideoExMultitrack:
		switch w := msg.Wrapped.(type) {
		case *message.VideoExSequenceStart:
			return p.videoStart(msg.TrackID, w)
		case *message.VideoExCodedFrames:
			p.clock(w.DTS)
		case *message.VideoExFramesX:
			p.clock(w.DTS)
		}
	case *message.Audio:
		p.clock(msg.DTS)
		if p.audio[0] != nil {
			break
		}
		switch msg.Codec {
		case message.CodecMPEG4Audio:
			if msg.AACType == message.AudioAACTypeConfig && msg.AACConfig != nil {
				p.audio[0] = &codecs.MPEG4Audio{Config: msg.AACConfig}
			}
		case message.CodecMPEG1Audio:
			return unsupportedAudio(&codecs.MPEG1Audio{})
		case message.CodecPCMA, message.CodecPCMU:
			return unsupportedAudio(&codecs.G711{})
		default:
			return unsupportedAudio(&codecs.LPCM{})
		}
	case *message.AudioExSequenceStart:
		return p.audioStart(0, msg)
	case *message.AudioExCodedFrames:
		return p.audioFrames(0, msg)
	case *message.AudioExMultitrack:
		switch w := msg.Wrapped.(type) {
		case *message.AudioExSequenceStart:
			return p.audioStart(msg.TrackID, w)
		case *message.AudioExCodedFrames:
			return p.audioFrames(msg.TrackID, w)
		}
	}
	return nil
}

func (p *rtmpProbe) videoStart(id uint8, msg *message.VideoExSequenceStart) error {
	if p.video[id] != nil {
		return nil
	}
	switch msg.FourCC {
	case message.FourCCAVC: // SPS and PPS are there (message checks)
		p.video[id] = &codecs.H264{
			SPS: msg.AVCConfig.SequenceParameterSets[0].NALUnit,
			PPS: msg.AVCConfig.PictureParameterSets[0].NALUnit,
		}
	case message.FourCCHEVC:
		p.video[id] = hevcParams(msg.HEVCConfig.NaluArrays)
	case message.FourCCAV1:
		p.video[id] = &codecs.AV1{} // the sequence header comes with the first keyframe
	case message.FourCCVP9:
		return wire.Errorf(wire.CodeInvalidMedia, "%v: video VP9 (supported: H.264, H.265, AV1)", cmaf.ErrUnsupportedCodec)
	}
	return nil
}

func (p *rtmpProbe) audioStart(id uint8, msg *message.AudioExSequenceStart) error {
	if p.audio[id] != nil {
		return nil
	}
	switch msg.FourCC {
	case message.FourCCMP4A:
		if msg.AACConfig != nil {
			p.audio[id] = &codecs.MPEG4Audio{Config: msg.AACConfig}
		}
	case message.FourCCOpus:
		p.audio[id] = &codecs.Opus{IDHeader: msg.OpusConfig}
	case message.FourCCFLAC:
		return unsupportedAudio(&codecs.FLAC{})
	}
	return nil
}

func (p *rtmpProbe) audioFrames(id uint8, msg *message.AudioExCodedFrames) error {
	p.clock(msg.DTS)
	if p.audio[id] != nil {
		return nil
	}
	switch msg.FourCC {
	case message.FourCCMP3: // no sequence start
		return unsupportedAudio(&codecs.MPEG1Audio{})
	case message.FourCCAC3:
		return unsupportedAudio(&codecs.AC3{})
	}
	return nil
}

func unsupportedAudio(c codecs.Codec) error {
	return wire.Errorf(wire.CodeInvalidMedia, "%v: audio %s (supported: AAC, Opus)", cmaf.ErrUnsupportedCodec, codecName(c))
}

// metadata reads onMetaData (["@setDataFrame",] "onMetaData", object or
// ECMA array): a videocodecid or audiocodecid that is not 0 (a number, or
// an Enhanced RTMP FourCC) announces a track.
func (p *rtmpProbe) metadata(payload amf0.Data) {
	if p.meta {
		return
	}
	seen := false
	for _, v := range payload {
		if s, ok := v.(string); ok && s == "onMetaData" {
			seen = true
			continue
		}
		if !seen {
			continue
		}
		var obj amf0.Object
		switch v := v.(type) {
		case amf0.Object:
			obj = v
		case amf0.ECMAArray:
			obj = amf0.Object(v)
		default:
			continue
		}
		vid, _ := obj.Get("videocodecid")
		aud, _ := obj.Get("audiocodecid")
		p.wantVideo, p.wantAudio = declared(vid), declared(aud)
		p.meta = p.wantVideo || p.wantAudio
		return
	}
}

func declared(v any) bool {
	switch v := v.(type) {
	case float64:
		return v != 0
	case string:
		return v != "" && v != "0"
	}
	return false
}

// hevcParams takes the first VPS, SPS and PPS of an HEVC decoder
// configuration (message.Video and VideoExSequenceStart guarantee them).
func hevcParams(arrays []mp4.HEVCNaluArray) *codecs.H265 {
	c := &codecs.H265{}
	for _, a := range arrays {
		if len(a.Nalus) == 0 {
			continue
		}
		switch h265.NALUType(a.NaluType) {
		case h265.NALUType_VPS_NUT:
			c.VPS = a.Nalus[0].NALUnit
		case h265.NALUType_SPS_NUT:
			c.SPS = a.Nalus[0].NALUnit
		case h265.NALUType_PPS_NUT:
			c.PPS = a.Nalus[0].NALUnit
		}
	}
	return c
}
