package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/Eyevinn/mp4ff/hevc"
	"github.com/Eyevinn/mp4ff/mp4"
)

func TestHEVCCodecString(t *testing.T) {
	for _, ca := range []struct {
		name  string
		entry string
		c     hevc.DecConfRec
		want  string
	}{
		// Examples from ISO/IEC 14496-15 Annex E and what browsers
		// are asked for in practice.
		{"main", "hvc1", hevc.DecConfRec{GeneralProfileIDC: 1, GeneralProfileCompatibilityFlags: 0x60000000,
			GeneralLevelIDC: 93, GeneralConstraintIndicatorFlags: 0xB0 << 40}, "hvc1.1.6.L93.B0"},
		{"main 10 hev1", "hev1", hevc.DecConfRec{GeneralProfileIDC: 2, GeneralProfileCompatibilityFlags: 0x20000000,
			GeneralLevelIDC: 120, GeneralConstraintIndicatorFlags: 0xB0 << 40}, "hev1.2.4.L120.B0"},
		{"high tier, profile space A", "hvc1", hevc.DecConfRec{GeneralProfileSpace: 1, GeneralTierFlag: true, GeneralProfileIDC: 1,
			GeneralProfileCompatibilityFlags: 0x40000000, GeneralLevelIDC: 150, GeneralConstraintIndicatorFlags: 0x90 << 40}, "hvc1.A1.2.H150.90"},
		{"profile space C", "hvc1", hevc.DecConfRec{GeneralProfileSpace: 3, GeneralProfileIDC: 4, GeneralProfileCompatibilityFlags: 0x08000000,
			GeneralLevelIDC: 60}, "hvc1.C4.10.L60"},
		{"no constraint flags", "hvc1", hevc.DecConfRec{GeneralProfileIDC: 1, GeneralProfileCompatibilityFlags: 0x60000000, GeneralLevelIDC: 90}, "hvc1.1.6.L90"},
		{"zero bytes between constraint bytes", "hvc1", hevc.DecConfRec{GeneralProfileIDC: 1, GeneralProfileCompatibilityFlags: 0x60000000,
			GeneralLevelIDC: 93, GeneralConstraintIndicatorFlags: 0xB0_00_00_00_02_00}, "hvc1.1.6.L93.B0.0.0.0.2"},
		{"all six constraint bytes", "hvc1", hevc.DecConfRec{GeneralProfileIDC: 1, GeneralProfileCompatibilityFlags: 0xffffffff,
			GeneralLevelIDC: 186, GeneralConstraintIndicatorFlags: 0x01_02_03_04_05_06}, "hvc1.1.FFFFFFFF.L186.1.2.3.4.5.6"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			got := hevcCodec(ca.entry, &mp4.HvcCBox{DecConfRec: ca.c})
			if got != ca.want {
				t.Errorf("hevcCodec = %q, want %q", got, ca.want)
			}
			// mp4ff derives the same string from an SPS, except that it
			// keeps one ".0" when every constraint byte is zero (Annex E
			// lets trailing zero bytes be omitted, all of them too).
			if ca.c.GeneralConstraintIndicatorFlags == 0 {
				return
			}
			sps := &hevc.SPS{ProfileTierLevel: hevc.ProfileTierLevel{
				GeneralProfileSpace: ca.c.GeneralProfileSpace, GeneralTierFlag: ca.c.GeneralTierFlag,
				GeneralProfileIDC: ca.c.GeneralProfileIDC, GeneralProfileCompatibilityFlags: ca.c.GeneralProfileCompatibilityFlags,
				GeneralConstraintIndicatorFlags: ca.c.GeneralConstraintIndicatorFlags, GeneralLevelIDC: ca.c.GeneralLevelIDC,
			}}
			if ref := hevc.CodecString(ca.entry, sps); ref != got {
				t.Errorf("mp4ff says %q, hevcCodec %q", ref, got)
			}
		})
	}
}

func TestFFmpegCodecs(t *testing.T) {
	ff := requireTool(t, "ffmpeg")
	src := []string{"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-f", "lavfi", "-i", "sine", "-t", "0.5"}
	for _, ca := range []struct {
		name     string
		encoders []string
		args     []string
		kind     string
		mime     string
		check    func(t *testing.T, in *Init)
	}{
		{"h264 baseline video only", []string{"libx264"}, []string{"-c:v", "libx264", "-profile:v", "baseline", "-level", "3.0", "-an"},
			"video", `video/mp4; codecs="avc1.42C01E"`, nil},
		{"h264 high video only", []string{"libx264"}, []string{"-c:v", "libx264", "-profile:v", "high", "-level", "4.1", "-an"},
			"video", `video/mp4; codecs="avc1.640029"`, nil},
		{"aac mono audio only", []string{"aac"}, []string{"-vn", "-c:a", "aac", "-ac", "1", "-ar", "44100"},
			"audio", `audio/mp4; codecs="mp4a.40.2"`, func(t *testing.T, in *Init) {
				if a := in.Traks[0]; a.SampleRate != 44100 || a.Channels != 1 || a.Timescale != 44100 {
					t.Errorf("audio %+v", a)
				}
			}},
		{"aac 5.1", []string{"aac"}, []string{"-vn", "-c:a", "aac", "-ac", "6"},
			"audio", `audio/mp4; codecs="mp4a.40.2"`, func(t *testing.T, in *Init) {
				if a := in.Traks[0]; a.Channels != 6 {
					t.Errorf("audio %+v", a)
				}
			}},
		{"opus mono audio only", []string{"libopus"}, []string{"-vn", "-c:a", "libopus", "-ac", "1"},
			"audio", `audio/mp4; codecs="opus"`, func(t *testing.T, in *Init) {
				if a := in.Traks[0]; a.SampleRate != 48000 || a.Channels != 1 {
					t.Errorf("audio %+v", a)
				}
			}},
		{"hevc hvc1 and opus", []string{"libx265", "libopus"}, []string{"-c:v", "libx265", "-x265-params", "log-level=none", "-tag:v", "hvc1", "-c:a", "libopus"},
			"muxed", "", func(t *testing.T, in *Init) { checkHEVC(t, in, "hvc1") }},
		{"hevc hev1", []string{"libx265"}, []string{"-c:v", "libx265", "-x265-params", "log-level=none", "-tag:v", "hev1", "-an"},
			"video", "", func(t *testing.T, in *Init) { checkHEVC(t, in, "hev1") }},
		{"av1", []string{"libsvtav1"}, []string{"-c:v", "libsvtav1", "-an"}, "video", "", func(t *testing.T, in *Init) {
			if !regexp.MustCompile(`^av01\.0\.\d\d[MH]\.08$`).MatchString(in.Traks[0].Codec) {
				t.Errorf("AV1 codec %q", in.Traks[0].Codec)
			}
		}},
	} {
		t.Run(ca.name, func(t *testing.T) {
			for _, e := range ca.encoders {
				requireEncoder(t, ff, e)
			}
			args := append(append(append([]string(nil), src...), ca.args...), cmafFlags...)
			out := runFFmpeg(t, append(args, "-")...)
			in, chunks, err := readAll(t, bytes.NewReader(out), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) == 0 || !chunks[0].Keyframe {
				t.Fatalf("%d chunks", len(chunks))
			}
			if in.Kind() != ca.kind {
				t.Errorf("Kind %q, want %q", in.Kind(), ca.kind)
			}
			if ca.mime != "" && in.MimeType() != ca.mime {
				t.Errorf("MimeType %q, want %q", in.MimeType(), ca.mime)
			}
			if in.Traks[in.Primary].Handler != "vide" && ca.kind != "audio" {
				t.Errorf("primary trak %+v", in.Traks[in.Primary])
			}
			if ca.check != nil {
				ca.check(t, in)
			}
			t.Log(in.MimeType())
		})
	}
}

// checkHEVC compares the codec string with the one mp4ff derives from the
// SPS inside the hvcC.
func checkHEVC(t *testing.T, in *Init, entry string) {
	t.Helper()
	v := in.Traks[0]
	moov := in.Data[binary.BigEndian.Uint32(in.Data):]
	box, err := mp4.DecodeBox(0, bytes.NewReader(moov))
	if err != nil {
		t.Fatal(err)
	}
	stsd := box.(*mp4.MoovBox).Traks[0].Mdia.Minf.Stbl.Stsd
	spss := stsd.HvcX.HvcC.GetNalusForType(hevc.NALU_SPS)
	if len(spss) == 0 {
		t.Fatal("no SPS in hvcC")
	}
	sps, err := hevc.ParseSPSNALUnit(spss[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := hevc.CodecString(entry, sps); v.Codec != want {
		t.Errorf("codec %q, the SPS says %q", v.Codec, want)
	}
	if !strings.HasPrefix(v.Codec, entry+".1.6.L") || v.Width != 160 || v.Height != 120 {
		t.Errorf("trak %+v", v)
	}
	if len(in.Traks) == 2 && in.Traks[1].Codec != "opus" {
		t.Errorf("audio codec %q", in.Traks[1].Codec)
	}
}

func TestParseInitErrors(t *testing.T) {
	s := demoStream(t)
	init := s.init
	ftyp := int(binary.BigEndian.Uint32(init))
	at := func(typ string, n int) int { // offset of the n-th box of typ
		off := 0
		for i := 0; i <= n; i++ {
			j := bytes.Index(init[off:], []byte(typ))
			if j < 0 {
				t.Fatalf("no %d-th %s", n, typ)
			}
			off += j + 4
		}
		return off - 8
	}
	set32 := func(off int, v uint32) []byte {
		b := bytes.Clone(init)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	mdhd := at("mdhd", 0)
	if init[mdhd+8] != 0 {
		t.Fatal("mdhd is not version 0")
	}
	tkhdA := at("tkhd", 1)
	trexA := at("trex", 1)
	hdlrA := at("hdlr", 1)
	for _, ca := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrInvalid, "without moov"},
		{"ftyp only", init[:ftyp], ErrInvalid, "without moov"},
		{"garbage", []byte("\x00\x00\x00\x10moovGARBAGEGARBAGE"), ErrInvalid, ""},
		{"truncated", init[:len(init)-10], ErrInvalid, ""},
		{"timescale 0", set32(mdhd+20, 0), ErrInvalid, "timescale 0"},
		{"two traks with one ID", set32(tkhdA+20, 1), ErrInvalid, ""},
		{"trak without trex", set32(trexA+12, 7), ErrInvalid, "no trex"},
		{"text handler", patch(t, init, hdlrA, hdlrA+24, "soun", "text"), ErrUnsupportedCodec, "handler"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			in, err := ParseInit(ca.data)
			if !errors.Is(err, ca.want) || in != nil {
				t.Fatalf("ParseInit = %v, %v; want %v", in, err, ca.want)
			}
			if !strings.Contains(err.Error(), ca.msg) {
				t.Errorf("%q does not say %q", err, ca.msg)
			}
			t.Log(err)
		})
	}
}

func TestAACChannelsFromAudioSpecificConfig(t *testing.T) {
	// The demo's AudioSpecificConfig is 0x11 0x90: AAC-LC, 48 kHz,
	// channel configuration 2. Its sample entry says 2 channels whatever
	// the stream has, as ffmpeg writes every ISO file.
	s := demoStream(t)
	esds := bytes.Index(s.init, []byte("esds"))
	for _, ca := range []struct {
		asc      string
		channels int
	}{
		{"\x11\x90", 2},
		{"\x11\x88", 1}, // configuration 1: mono
		{"\x11\xb0", 6}, // configuration 6: 5.1
		{"\x11\xb8", 8}, // configuration 7: 7.1
		{"\x11\x80", 2}, // configuration 0: defined elsewhere, keep the sample entry's
		{"\x11\xc0", 2}, // configuration 8: reserved
	} {
		in, err := ParseInit(patch(t, s.init, esds, len(s.init), "\x11\x90", ca.asc))
		if err != nil {
			t.Fatalf("ASC % x: %v", ca.asc, err)
		}
		if a := in.Traks[1]; a.Channels != ca.channels || a.Codec != "mp4a.40.2" || a.SampleRate != 48000 {
			t.Errorf("ASC % x: %+v, want %d channels", ca.asc, a, ca.channels)
		}
	}
	// Audio object type 0 is not a codec.
	if _, err := ParseInit(patch(t, s.init, esds, len(s.init), "\x11\x90", "\x01\x90")); !errors.Is(err, ErrInvalid) {
		t.Errorf("object type 0: %v", err)
	}
	// Object type 5 (HE-AAC, SBR) is named by its number.
	in, err := ParseInit(patch(t, s.init, esds, len(s.init), "\x11\x90", "\x29\x90"))
	if err != nil || in.Traks[1].Codec != "mp4a.40.5" {
		t.Errorf("object type 5: %v %v", in, err)
	}
}
