package remux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	mp4bits "github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/cmaf"
)

// paramSets returns the demo clip's H.264 SPS and PPS: real parameter
// sets, which the init writer parses.
func paramSets(t *testing.T) (sps, pps []byte) {
	t.Helper()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	sr := mp4bits.NewFixedSliceReader(c.Init.Data)
	for sr.NrRemainingBytes() > 0 {
		b, err := mp4.DecodeBoxSR(uint64(sr.GetPos()), sr)
		if err != nil {
			t.Fatal(err)
		}
		if moov, ok := b.(*mp4.MoovBox); ok {
			for _, tr := range moov.Traks {
				if avc := tr.Mdia.Minf.Stbl.Stsd.AvcX; avc != nil {
					return avc.AvcC.SPSnalus[0], avc.AvcC.PPSnalus[0]
				}
			}
		}
	}
	t.Fatal("no avcC in the demo clip")
	return nil, nil
}

// collected is what a Muxer emitted, read back through shared/cmaf.
type collected struct {
	raw      bytes.Buffer
	captures []int64
}

func newMuxer(t *testing.T, cfg Config) (*Muxer, *collected) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := &collected{}
	m.OnInit = func(b []byte) error {
		if out.raw.Len() != 0 {
			t.Fatal("init after chunks")
		}
		out.raw.Write(b)
		return nil
	}
	m.OnChunk = func(b []byte, capture int64) error {
		out.raw.Write(b)
		out.captures = append(out.captures, capture)
		return nil
	}
	return m, out
}

// read parses the output with the same reader every publisher goes through.
func (c *collected) read(t *testing.T) (*cmaf.Init, []*cmaf.Chunk) {
	t.Helper()
	r := cmaf.NewReader(bytes.NewReader(c.raw.Bytes()), cmaf.Limits{})
	var in *cmaf.Init
	var chunks []*cmaf.Chunk
	for {
		seg, err := r.Next()
		if errors.Is(err, io.EOF) {
			return in, chunks
		}
		if err != nil {
			t.Fatalf("output does not pass shared/cmaf: %v", err)
		}
		switch seg := seg.(type) {
		case *cmaf.Init:
			in = seg
		case *cmaf.Chunk:
			chunks = append(chunks, seg)
		}
	}
}

func ms(v int) time.Duration { return time.Duration(v) * time.Millisecond }

func idr(i int) [][]byte    { return [][]byte{{0x65, 0x88, byte(i), 1, 2, 3}} }
func nonIDR(i int) [][]byte { return [][]byte{{0x41, 0x9a, byte(i), 4, 5}} }

func aac() *mp4codecs.MPEG4Audio {
	return &mp4codecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}}
}

func TestH264AndAACBecomeOneMuxedCMAFTrack(t *testing.T) {
	sps, pps := paramSets(t)
	m, out := newMuxer(t, Config{Video: &mp4codecs.H264{SPS: sps, PPS: pps}, Audio: aac()})
	// Audio before the first keyframe is dropped, as is a non-keyframe.
	must(t, m.WriteAudio(ms(0), []byte{0xaa}, 1))
	must(t, m.WriteVideo(ms(0), ms(0), nonIDR(0), 1))
	// The config message's parameter-set-only unit is not a frame.
	must(t, m.WriteVideo(ms(0), ms(0), [][]byte{sps, pps}, 1))
	// 30 fps in RTMP's milliseconds: 33, 34, 33… ; a keyframe every 10 frames.
	// AAC at 48 kHz: 1024 samples (21.33 ms) a frame, interleaved by time.
	var dts []int
	audio := 0
	for i := 0; i < 30; i++ {
		d := 1000 + i*1000/30
		dts = append(dts, d)
		au := nonIDR(i)
		if i%10 == 0 {
			au = idr(i)
		}
		must(t, m.WriteVideo(ms(d), ms(d+66), au, int64(100+i)))
		for ; 1000+audio*1024*1000/48000 < d+1000/30; audio++ {
			must(t, m.WriteAudio(ms(1000+audio*1024*1000/48000), bytes.Repeat([]byte{byte(audio)}, 10), int64(200+audio)))
		}
	}
	must(t, m.Flush())
	in, chunks := out.read(t)
	if in.Kind() != "muxed" || in.Traks[0].Handler != "vide" || in.Traks[1].Codec != "mp4a.40.2" {
		t.Fatalf("init: %s %s", in.Kind(), in.Codec())
	}
	if in.PrimaryTrak().Timescale != VideoTimescale || in.Traks[1].Timescale != 48000 {
		t.Fatalf("timescales %d %d", in.PrimaryTrak().Timescale, in.Traks[1].Timescale)
	}
	// One chunk per frame, each with the audio that came after its frame.
	if len(chunks) != 30 {
		t.Fatalf("%d chunks, want one per frame", len(chunks))
	}
	var audioEnd uint64
	for i, c := range chunks[:30] {
		if c.Keyframe != (i%10 == 0) {
			t.Fatalf("chunk %d keyframe %v", i, c.Keyframe)
		}
		if want := uint64(dts[i] * 90); c.DecodeTime != want {
			t.Fatalf("chunk %d decode time %d, want %d", i, c.DecodeTime, want)
		}
		want := uint64(0)
		if i+1 < len(dts) {
			want = uint64((dts[i+1] - dts[i]) * 90)
		} else {
			want = uint64((dts[i] - dts[i-1]) * 90) // the last keeps the previous duration
		}
		if c.Duration != want {
			t.Fatalf("chunk %d duration %d, want %d", i, c.Duration, want)
		}
		if out.captures[i] != int64(100+i) {
			t.Fatalf("chunk %d capture %d", i, out.captures[i])
		}
		// Audio: 1024-sample frames, contiguous across chunks.
		if len(c.Trafs) != 2 || c.Trafs[1].Duration%1024 != 0 {
			t.Fatalf("chunk %d trafs %+v", i, c.Trafs)
		}
		for _, tr := range c.Trafs {
			if tr.TrackID != AudioTrackID {
				continue
			}
			if audioEnd != 0 && tr.DecodeTime != audioEnd {
				t.Fatalf("chunk %d audio at %d, previous ended at %d", i, tr.DecodeTime, audioEnd)
			}
			audioEnd = tr.DecodeTime + tr.Duration
		}
	}
	// The video sample is the AVCC form of the access unit, byte for byte.
	au := idr(0)[0]
	want := binary.BigEndian.AppendUint32(nil, uint32(len(au)))
	want = append(want, au...)
	if !bytes.Contains(chunks[0].Data, want) {
		t.Fatal("keyframe sample bytes not in the first chunk")
	}
}

func TestBadTimestampsAndChangedParametersAreRefused(t *testing.T) {
	sps, pps := paramSets(t)
	for _, ca := range []struct {
		name string
		feed func(m *Muxer) error
		want error
	}{
		{"video decode time going back", func(m *Muxer) error {
			must(t, m.WriteVideo(ms(100), ms(100), idr(0), 0))
			return m.WriteVideo(ms(50), ms(50), nonIDR(1), 0)
		}, ErrInvalid},
		{"SPS changed", func(m *Muxer) error {
			must(t, m.WriteVideo(ms(100), ms(100), idr(0), 0))
			other := append(bytes.Clone(sps), 0x80)
			return m.WriteVideo(ms(133), ms(133), [][]byte{other, pps, idr(1)[0]}, 0)
		}, ErrParamsChanged},
		{"audio decode time going far back", func(m *Muxer) error {
			must(t, m.WriteVideo(ms(5000), ms(5000), idr(0), 0))
			must(t, m.WriteAudio(ms(5000), []byte{1}, 0))
			return m.WriteAudio(ms(1000), []byte{1}, 0)
		}, ErrInvalid},
		{"empty NAL unit", func(m *Muxer) error {
			return m.WriteVideo(ms(0), ms(0), [][]byte{{}}, 0)
		}, ErrInvalid},
	} {
		t.Run(ca.name, func(t *testing.T) {
			m, _ := newMuxer(t, Config{Video: &mp4codecs.H264{SPS: sps, PPS: pps}, Audio: aac()})
			if err := ca.feed(m); !errors.Is(err, ca.want) {
				t.Fatalf("got %v, want %v", err, ca.want)
			}
			if err := m.Flush(); err == nil {
				t.Fatal("muxer went on after an error")
			}
		})
	}
}

func TestAudioOnlyOpusChunksEvery40ms(t *testing.T) {
	m, out := newMuxer(t, Config{Audio: &mp4codecs.Opus{ChannelCount: 2}})
	pkt := []byte{0xfc, 1, 2, 3} // CELT FB 20 ms, one frame
	for i := 0; i < 50; i++ {
		must(t, m.WriteAudio(ms(i*20), pkt, int64(i)))
	}
	must(t, m.Flush())
	in, chunks := out.read(t)
	if in.Codec() != "opus" || in.PrimaryTrak().Timescale != 48000 {
		t.Fatalf("init %s %d", in.Codec(), in.PrimaryTrak().Timescale)
	}
	if len(chunks) != 25 {
		t.Fatalf("%d chunks for 1 s, want 25", len(chunks))
	}
	for i, c := range chunks {
		if !c.Keyframe || c.DecodeTime != uint64(i*1920) || c.Duration != 1920 {
			t.Fatalf("chunk %d: key %v at %d for %d", i, c.Keyframe, c.DecodeTime, c.Duration)
		}
	}
}

func TestUnsupportedCodecs(t *testing.T) {
	if _, err := New(Config{Video: &mp4codecs.VP9{}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("VP9: %v", err)
	}
	if _, err := New(Config{Audio: &mp4codecs.MPEG1Audio{}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("MP3: %v", err)
	}
	if _, err := New(Config{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nothing: %v", err)
	}
}

func TestRTMPTimestampsWrapAfter49Days(t *testing.T) {
	var u unwrapper
	last := time.Duration(1<<32-10) * time.Millisecond
	if got := u.unwrap(last); got != last {
		t.Fatal(got)
	}
	if got := u.unwrap(5 * time.Millisecond); got != wrap+5*time.Millisecond {
		t.Fatalf("after the wrap: %v", got)
	}
	if got := u.unwrap(40 * time.Millisecond); got != wrap+40*time.Millisecond {
		t.Fatalf("later: %v", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
