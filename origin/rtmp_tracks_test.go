package origin

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/quiccast/quiccast/shared/testenv"
)

// recordConn keeps what a gortmplib.Writer writes, so that a test can send
// the messages in an order of its own.
type recordConn struct{ msgs []message.Message }

func (r *recordConn) BytesReceived() uint64            { return 0 }
func (r *recordConn) BytesSent() uint64                { return 0 }
func (r *recordConn) Read() (message.Message, error)   { return nil, io.EOF }
func (r *recordConn) Write(msg message.Message) error  { r.msgs = append(r.msgs, msg); return nil }
func (r *recordConn) take() (msgs []message.Message)   { msgs, r.msgs = r.msgs, nil; return msgs }
func (r *recordConn) one(t *testing.T) message.Message { return r.take()[0] }

// rtmpTestMedia is three seconds of H.264 (30 fps, a keyframe every 15
// frames) and AAC (48 kHz) from ffmpeg, as RTMP messages.
type rtmpTestMedia struct {
	metaBoth, metaVideo, metaAudio message.Message // onMetaData
	videoConfig, audioConfig       message.Message // the sequence headers
	video, audio                   []message.Message
}

func newRTMPTestMedia(t *testing.T) *rtmpTestMedia {
	t.Helper()
	aus := avcAccessUnits(t, encode(t, "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30", "-t", "3",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-bf", "0", "-pix_fmt", "yuv420p", "-x264-params", "aud=1", "-f", "h264", "-"))
	var adts mpeg4audio.ADTSPackets
	if err := adts.Unmarshal(encode(t, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1",
		"-c:a", "aac", "-b:a", "64k", "-f", "adts", "-")); err != nil {
		t.Fatal(err)
	}
	var sps, pps []byte
	for _, n := range aus[0] {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	if sps == nil || pps == nil || len(aus) < 90 || len(adts) < 40 {
		t.Fatalf("test media: %d H.264 AUs (SPS %v, PPS %v), %d AAC frames", len(aus), sps != nil, pps != nil, len(adts))
	}
	video := &gortmplib.Track{Codec: &codecs.H264{SPS: sps, PPS: pps}}
	audio := &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: &mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: adts[0].SampleRate, ChannelCount: 1, ChannelConfig: 1,
	}}}
	var m rtmpTestMedia
	var rec recordConn
	for _, w := range []struct {
		tracks []*gortmplib.Track
		meta   *message.Message
		config *message.Message
	}{
		{[]*gortmplib.Track{video, audio}, &m.metaBoth, nil},
		{[]*gortmplib.Track{video}, &m.metaVideo, &m.videoConfig},
		{[]*gortmplib.Track{audio}, &m.metaAudio, &m.audioConfig},
	} {
		if err := (&gortmplib.Writer{Conn: &rec, Tracks: w.tracks}).Initialize(); err != nil {
			t.Fatal(err)
		}
		msgs := rec.take()
		*w.meta = msgs[0]
		if w.config != nil {
			*w.config = msgs[1]
		}
	}
	wv := &gortmplib.Writer{Conn: &rec, Tracks: []*gortmplib.Track{video}}
	wa := &gortmplib.Writer{Conn: &rec, Tracks: []*gortmplib.Track{audio}}
	if err := wv.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := wa.Initialize(); err != nil {
		t.Fatal(err)
	}
	rec.take()
	for i, au := range aus {
		ts := time.Duration(i) * time.Second / 30
		if err := wv.WriteH264(video, ts, ts, au); err != nil {
			t.Fatal(err)
		}
		m.video = append(m.video, rec.one(t))
	}
	for i, p := range adts {
		if err := wa.WriteMPEG4Audio(audio, time.Duration(i)*1024*time.Second/time.Duration(p.SampleRate), p.AU); err != nil {
			t.Fatal(err)
		}
		m.audio = append(m.audio, rec.one(t))
	}
	return &m
}

// until returns the messages of msgs (video or audio frames) before d.
func until(msgs []message.Message, d time.Duration) []message.Message {
	for i, msg := range msgs {
		var dts time.Duration
		switch msg := msg.(type) {
		case *message.Video:
			dts = msg.DTS
		case *message.Audio:
			dts = msg.DTS
		}
		if dts >= d {
			return msgs[:i]
		}
	}
	return msgs
}

// TestRTMPPublisherIsLiveOnItsSequenceHeaders checks that an RTMP
// publisher's broadcast is set up from its sequence headers and
// onMetaData, without waiting for seconds of media: each publisher sends a
// little media and then pauses (while staying connected), and its catalog
// must appear with the tracks it declared. gortmplib's Reader alone reads
// 2 s of media before it reports tracks, so none of them would be set up.
func TestRTMPPublisherIsLiveOnItsSequenceHeaders(t *testing.T) {
	tm := newRTMPTestMedia(t)
	n, logs := startRTMPOrigin(t, Config{})
	cat := func(msgs ...[]message.Message) []message.Message {
		var all []message.Message
		for _, m := range msgs {
			all = append(all, m...)
		}
		return all
	}
	one := func(m message.Message) []message.Message { return []message.Message{m} }
	for _, ca := range []struct {
		name  string
		msgs  []message.Message
		codec string // the catalog's codec string starts with it; "" ends it
		audio bool   // the codec string names AAC
	}{
		{"metadata, sequence headers, a keyframe and one more frame, then a pause",
			cat(one(tm.metaBoth), one(tm.videoConfig), one(tm.audioConfig), until(tm.video, 50*time.Millisecond)), "avc1.", true},
		{"announced audio whose sequence header comes after the video",
			cat(one(tm.metaBoth), one(tm.videoConfig), until(tm.video, 300*time.Millisecond), one(tm.audioConfig), until(tm.audio, 100*time.Millisecond), tm.video[9:11]), "avc1.", true},
		{"video only, by metadata",
			cat(one(tm.metaVideo), one(tm.videoConfig), until(tm.video, 50*time.Millisecond)), "avc1.", false},
		{"audio only, by metadata",
			cat(one(tm.metaAudio), one(tm.audioConfig), until(tm.audio, 600*time.Millisecond)), "mp4a.", true},
		{"no metadata, audio soon after the video",
			cat(one(tm.videoConfig), until(tm.video, 200*time.Millisecond), one(tm.audioConfig), until(tm.audio, 300*time.Millisecond), tm.video[6:8]), "avc1.", true},
		{"no metadata, video only",
			cat(one(tm.videoConfig), until(tm.video, 600*time.Millisecond)), "avc1.", false},
		{"announced audio that never comes: video only after 2 s of media",
			cat(one(tm.metaBoth), one(tm.videoConfig), until(tm.video, 2100*time.Millisecond)), "avc1.", false},
	} {
		t.Run(ca.name, func(t *testing.T) {
			name := strings.NewReplacer(" ", "-", ",", "", ":", "").Replace(ca.name)
			c, err := rtmpClient(t, rtmpURL(n, name))
			if err != nil {
				t.Fatal(err)
			}
			c.NetConn().SetWriteDeadline(time.Now().Add(10 * time.Second))
			for _, msg := range ca.msgs {
				if err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			// The publisher now pauses: far less than the 2 s of media gortmplib waits for.
			// With video, the keyframe's chunk goes out too (its duration is
			// known from the next frame).
			video := ca.codec == "avc1."
			testenv.WaitFor(t, 10*time.Second, "the broadcast's catalog (and first group) while the publisher pauses", func() bool {
				b, ok := n.Lookup(name)
				return ok && b.Catalog() != nil && (!video || b.Latest(0) != nil)
			})
			b, _ := n.Lookup(name)
			codec := b.Catalog().Tracks[0].Codec
			if !strings.HasPrefix(codec, ca.codec) || strings.Contains(codec, "mp4a.") != ca.audio {
				t.Fatalf("catalog codec %q, want %s… with AAC %v", codec, ca.codec, ca.audio)
			}
			if len(logs.Lines("RTMP tracks", "broadcast="+name)) != 1 {
				t.Fatalf("tracks not logged once: %q", logs.Lines("RTMP tracks"))
			}
		})
	}
}

// TestRTMPTimeFromConnectToFirstObject measures, with a real encoder, the
// time from the RTMP connection's accept to the first object in the
// broadcast's cache (what an edge forwards to viewers at once). It logs
// the figure; it fails only if no object comes.
//
//	go test -count=1 -v -run TestRTMPTimeFromConnectToFirstObject ./origin/
func TestRTMPTimeFromConnectToFirstObject(t *testing.T) {
	n, _ := startRTMPOrigin(t, Config{})
	startFFmpeg(t, rtmpURL(n, "first"), 0)
	var connected, first time.Time
	deadline := time.Now().Add(15 * time.Second)
	for first.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("no object within 15 s of starting ffmpeg")
		}
		now := time.Now()
		if connected.IsZero() {
			n.rtmp.mu.Lock()
			if len(n.rtmp.open) > 0 {
				connected = now
			}
			n.rtmp.mu.Unlock()
		}
		if b, ok := n.Lookup("first"); ok && b.Latest(0) != nil {
			first = now
		}
		time.Sleep(time.Millisecond) // polling the state, 1 ms resolution
	}
	t.Logf("RTMP connect to first object: %s", first.Sub(connected).Round(time.Millisecond))
	// Each object's ingest delay is counted: for RTMP, from its frame's
	// arrival to the cache, about one frame interval (the chunk's
	// duration is known when the next frame comes).
	testenv.WaitFor(t, 5*time.Second, "the ingest delay histogram", func() bool {
		c, _ := testenv.Histogram(t, n.Registry(), "quiccast_origin_ingest_delay_seconds")
		return c >= 3
	})
	c, sum := testenv.Histogram(t, n.Registry(), "quiccast_origin_ingest_delay_seconds")
	if mean := sum / float64(c); mean <= 0 || mean > 1 {
		t.Errorf("mean ingest delay %.3f s over %d objects, want above 0 and under 1 s", mean, c)
	}
}
