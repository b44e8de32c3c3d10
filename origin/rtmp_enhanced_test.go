package origin

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/testenv"
)

// encode runs ffmpeg and returns what it wrote to stdout.
func encode(t *testing.T, args ...string) []byte {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	return out
}

// hevcAccessUnits splits an H.265 Annex-B stream at its access unit
// delimiters (x265 aud=1) and drops the delimiters.
func hevcAccessUnits(t *testing.T, b []byte) [][][]byte {
	t.Helper()
	return accessUnits(b, func(n []byte) bool { return h265.NALUType((n[0]>>1)&0x3f) == h265.NALUType_AUD_NUT })
}

// avcAccessUnits does the same for H.264 (x264 aud=1).
func avcAccessUnits(t *testing.T, b []byte) [][][]byte {
	t.Helper()
	return accessUnits(b, func(n []byte) bool { return h264.NALUType(n[0]&0x1f) == h264.NALUTypeAccessUnitDelimiter })
}

// accessUnits splits an Annex-B stream into access units at the NAL units
// aud says are delimiters, and drops the delimiters.
func accessUnits(b []byte, aud func([]byte) bool) [][][]byte {
	// NAL units between start codes (00 00 01, or 00 00 00 01).
	var nalus [][]byte
	start := -1
	for i := 0; i+3 <= len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				for end > start && b[end-1] == 0 {
					end--
				}
				nalus = append(nalus, b[start:end])
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 {
		nalus = append(nalus, b[start:])
	}
	var aus [][][]byte
	for _, n := range nalus {
		if len(n) > 0 && aud(n) {
			aus = append(aus, nil)
			continue
		}
		if len(aus) > 0 {
			aus[len(aus)-1] = append(aus[len(aus)-1], n)
		}
	}
	return aus
}

// oggPackets returns the packets of an Ogg stream (headers included).
func oggPackets(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var pkts [][]byte
	var cur []byte
	for off := 0; off+27 <= len(b); {
		if string(b[off:off+4]) != "OggS" {
			t.Fatalf("no Ogg page at %d", off)
		}
		nseg := int(b[off+26])
		lacing := b[off+27 : off+27+nseg]
		data := off + 27 + nseg
		for _, l := range lacing {
			cur = append(cur, b[data:data+int(l)]...)
			data += int(l)
			if l < 255 {
				pkts = append(pkts, cur)
				cur = nil
			}
		}
		off = data
	}
	return pkts
}

// TestRTMPEnhancedHEVCAndOpus publishes H.265 video and Opus audio through
// Enhanced RTMP (gortmplib's client; Debian's ffmpeg 5.1 cannot) and checks
// the broadcast: hvc1 + opus in one muxed CMAF track, a group per keyframe.
func TestRTMPEnhancedHEVCAndOpus(t *testing.T) {
	hevc := hevcAccessUnits(t, encode(t, "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30", "-t", "3",
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "aud=1:keyint=15:min-keyint=15:bframes=0:log-level=error", "-f", "hevc", "-"))
	opusPkts := oggPackets(t, encode(t, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
		"-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20", "-f", "ogg", "-"))
	var vps, sps, pps []byte
	for _, n := range hevc[0] {
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT:
			vps = n
		case h265.NALUType_SPS_NUT:
			sps = n
		case h265.NALUType_PPS_NUT:
			pps = n
		}
	}
	if vps == nil || sps == nil || pps == nil || len(opusPkts) < 100 || !strings.HasPrefix(string(opusPkts[0]), "OpusHead") {
		t.Fatalf("test media: %d HEVC AUs, params %v %v %v, %d Opus packets", len(hevc), vps != nil, sps != nil, pps != nil, len(opusPkts))
	}
	var head opus.IDHeader
	if err := head.Unmarshal(opusPkts[0]); err != nil {
		t.Fatal(err)
	}

	n, _ := startRTMPOrigin(t, Config{})
	c, err := rtmpClient(t, rtmpURL(n, "enhanced"))
	if err != nil {
		t.Fatal(err)
	}
	video := &gortmplib.Track{Codec: &codecs.H265{VPS: vps, SPS: sps, PPS: pps}}
	audio := &gortmplib.Track{Codec: &codecs.Opus{IDHeader: &head}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video, audio}}
	c.NetConn().SetWriteDeadline(time.Now().Add(20 * time.Second))
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	// Interleave by time, as an encoder would: 30 fps video, 20 ms Opus.
	ai := 2 // after OpusHead and OpusTags
	for i, au := range hevc {
		vt := time.Duration(i) * time.Second / 30
		for ai < len(opusPkts) && time.Duration(ai-2)*20*time.Millisecond <= vt {
			if err := w.WriteOpus(audio, time.Duration(ai-2)*20*time.Millisecond, opusPkts[ai]); err != nil {
				t.Fatal(err)
			}
			ai++
		}
		if err := w.WriteH265(video, vt, vt, au); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	testenv.WaitFor(t, 10*time.Second, "the publisher to be done", func() bool {
		bs := n.Broadcasts()
		return len(bs) == 1 && bs[0].Catalog != nil && !bs[0].Publishing
	})
	b, _ := n.Lookup("enhanced")
	cat := b.Catalog()
	if tr := cat.Tracks[0]; !strings.HasPrefix(tr.Codec, "hvc1.") || !strings.HasSuffix(tr.Codec, ",opus") || tr.Width != 160 || tr.Height != 90 {
		t.Fatalf("catalog track %+v", tr)
	}
	in, err := cmaf.ParseInit(cat.Inits[0].Payload())
	if err != nil {
		t.Fatal(err)
	}
	frames, audioSamples := 0, 0
	gs, objs := groupsOf(b)
	for i := range gs {
		for j, o := range objs[i] {
			if len(o.Payload()) == 0 {
				continue
			}
			ch, err := in.ParseChunk(o.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if ch.Keyframe != (j == 0) {
				t.Fatalf("group %d object %d keyframe %v", gs[i].Seq, j, ch.Keyframe)
			}
			for _, tr := range ch.Trafs {
				if tr.TrackID == 1 {
					frames++
				} else {
					audioSamples += int(tr.Duration / 960)
				}
			}
		}
	}
	// The whole stream is cached (8 groups of 15 frames hold 4 s); the
	// last frame goes out when the publisher leaves.
	if frames != len(hevc) || audioSamples < 140 {
		t.Fatalf("%d of %d frames and %d Opus packets cached", frames, len(hevc), audioSamples)
	}
}
