package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mp4bits "github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// startRTMPDemo runs origin (with RTMP ingest) + edge on free loopback
// ports; name, when set, also loops the built-in clip under that name.
func startRTMPDemo(t *testing.T, name string) (*demo, *testenv.Logs) {
	t.Helper()
	return runDemoFor(t, demoConfig{RTMPListen: "127.0.0.1:0", Name: name})
}

// ffmpegArgs encodes a test pattern and a tone (H.264 with a keyframe every
// gop frames, AAC) in real time.
func ffmpegArgs(seconds, gop int) []string {
	return []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", fmt.Sprint(gop), "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-flags", "+global_header",
	}
}

// runFFmpeg starts ffmpeg with args and returns a channel with its end.
func runFFmpeg(t *testing.T, args ...string) (chan error, *bytes.Buffer) {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	cmd := exec.Command("ffmpeg", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	return done, &stderr
}

// flvMedia is what an encoder wrote to an FLV file: H.264 access units
// (AVCC) by timestamp and AAC frames in order.
type flvMedia struct {
	video map[uint32][]byte // ms -> AVCC bytes
	audio [][]byte
	aTS   []uint32
}

func readFLV(t *testing.T, path string) *flvMedia {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		t.Fatalf("%s is not FLV", path)
	}
	m := &flvMedia{video: map[uint32][]byte{}}
	off := int(binary.BigEndian.Uint32(b[5:9])) + 4
	for off+11 <= len(b) {
		typ := b[off]
		size := int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
		ts := uint32(b[off+4])<<16 | uint32(b[off+5])<<8 | uint32(b[off+6]) | uint32(b[off+7])<<24
		if off+11+size > len(b) {
			break // ffmpeg was stopped mid-tag
		}
		data := b[off+11 : off+11+size]
		switch {
		case typ == 9 && len(data) > 5 && data[0]&0x0f == 7 && data[1] == 1: // AVC NALUs
			m.video[ts] = data[5:]
		case typ == 8 && len(data) > 2 && data[0]>>4 == 10 && data[1] == 1: // AAC raw
			m.audio = append(m.audio, data[2:])
			m.aTS = append(m.aTS, ts)
		}
		off += 11 + size + 4
	}
	if len(m.video) == 0 || len(m.audio) == 0 {
		t.Fatalf("no media in %s", path)
	}
	return m
}

type cmafSample struct {
	track uint32
	dts   uint64
	data  []byte
}

// chunkSamples returns the samples of one moof+mdat, in mdat order.
func chunkSamples(t *testing.T, chunk []byte) []cmafSample {
	t.Helper()
	box, err := mp4.DecodeBoxSR(0, mp4bits.NewFixedSliceReader(chunk))
	if err != nil {
		t.Fatalf("chunk: %v", err)
	}
	moof, ok := box.(*mp4.MoofBox)
	if !ok {
		t.Fatalf("chunk starts with %s", box.Type())
	}
	var out []cmafSample
	for _, traf := range moof.Trafs {
		dts := traf.Tfdt.BaseMediaDecodeTime()
		for _, trun := range traf.Truns {
			off := int(trun.DataOffset)
			for _, s := range trun.Samples {
				out = append(out, cmafSample{track: traf.Tfhd.TrackID, dts: dts, data: chunk[off : off+int(s.Size)]})
				off += int(s.Size)
				dts += uint64(s.Dur)
			}
		}
	}
	return out
}

// splitChunks cuts a segment into its moof+mdat pairs.
func splitChunks(t *testing.T, seg []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for off := 0; off < len(seg); {
		moof := int(binary.BigEndian.Uint32(seg[off:]))
		mdat := int(binary.BigEndian.Uint32(seg[off+moof:]))
		out = append(out, seg[off:off+moof+mdat])
		off += moof + mdat
	}
	return out
}

// checkAgainstFLV checks that every sample of the chunks is, byte for
// byte, what the encoder wrote: video by timestamp, audio as one run of
// consecutive frames.
func checkAgainstFLV(t *testing.T, who string, flv *flvMedia, chunks [][]byte) (videos int) {
	t.Helper()
	ai := -1
	for _, c := range chunks {
		for _, s := range chunkSamples(t, c) {
			switch s.track {
			case 1: // video, 90 kHz
				want, ok := flv.video[uint32(s.dts/90)]
				if !ok || !bytes.Equal(want, s.data) {
					t.Fatalf("%s: video sample at %d ms is not the encoder's access unit (found %v)", who, s.dts/90, ok)
				}
				videos++
			case 2: // audio, 48 kHz
				if ai < 0 {
					ms := uint32(s.dts * 1000 / 48000)
					ai = sort.Search(len(flv.aTS), func(i int) bool { return flv.aTS[i]+2 >= ms })
				}
				if ai >= len(flv.audio) || !bytes.Equal(flv.audio[ai], s.data) {
					t.Fatalf("%s: audio sample at %d is not the encoder's frame %d", who, s.dts, ai)
				}
				ai++
			}
		}
	}
	return videos
}

func TestRTMPPublishReachesWebSocketAndHLSViewersByteExact(t *testing.T) {
	d, _ := startRTMPDemo(t, "")
	flvPath := filepath.Join(t.TempDir(), "sent.flv")
	url := fmt.Sprintf("rtmp://%s/live/e2e/rtmp", d.origin.RTMPAddr())
	// The encoder's output goes both to the origin and to a file, packet
	// for packet the same.
	args := append(ffmpegArgs(8, 15), "-map", "0:v", "-map", "1:a", "-f", "tee", "[f=flv]"+flvPath+"|[f=flv:onfail=abort]"+url)
	done, stderr := runFFmpeg(t, args...)
	testenv.WaitFor(t, 20*time.Second, "the RTMP broadcast", func() bool {
		b, ok := d.origin.Lookup("e2e/rtmp")
		return ok && len(b.Groups(0)) >= 2
	})

	// A WebSocket viewer for 3 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var evs []viewer.Event
	var wsErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		evs, wsErr = watch(ctx, fmt.Sprintf("ws://%s/ws/e2e/rtmp", d.edge.Addr()), 3*time.Second)
	}()
	// An LL-HLS client at the same time: the preload-hinted part, then
	// the next, each as soon as it exists.
	base := fmt.Sprintf("http://%s/hls/e2e/rtmp/", d.edge.Addr())
	parts := followParts(t, base, 3*time.Second)
	wg.Wait()
	if wsErr != nil {
		t.Fatal(wsErr)
	}
	// LL-HLS segments, while the groups the viewer saw are still cached.
	body := httpGet(t, base+"index.m3u8")
	var m playlist.Media
	if err := m.Unmarshal(body); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	segs := map[uint64][]byte{}
	for i, s := range m.Segments {
		segs[uint64(m.MediaSequence+i)] = httpGet(t, base+s.URI)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ffmpeg did not finish")
	}
	flv := readFLV(t, flvPath)

	// WebSocket: catalog, init, then objects whose samples are the encoder's.
	if len(evs) < 30 || evs[0].Control == nil || evs[0].Control.Type != wire.MsgCatalog || evs[1].Header.Kind != wire.KindInit {
		t.Fatalf("viewer got %d events, first %+v", len(evs), evs[0].Control)
	}
	var wsChunks [][]byte
	byGroup := map[uint64][][]byte{}
	for _, ev := range evs[2:] {
		if ev.Control != nil || len(ev.Payload) == 0 {
			continue
		}
		wsChunks = append(wsChunks, ev.Payload)
		byGroup[ev.Header.Group] = append(byGroup[ev.Header.Group], ev.Payload)
	}
	if n := checkAgainstFLV(t, "WebSocket", flv, wsChunks); n < 60 {
		t.Fatalf("WebSocket viewer saw %d video frames in 3 s", n)
	}

	// LL-HLS parts, read live: the same chunks (a part is several).
	var partChunks [][]byte
	for _, p := range parts {
		partChunks = append(partChunks, splitChunks(t, p)...)
	}
	if n := checkAgainstFLV(t, "LL-HLS parts", flv, partChunks); n < 60 {
		t.Fatalf("LL-HLS client got %d parts in 3 s", n)
	}

	// LL-HLS segments: the encoder's samples, and each one exactly the
	// WebSocket objects of its group.
	compared := 0
	for seq, seg := range segs {
		checkAgainstFLV(t, "LL-HLS segment", flv, splitChunks(t, seg))
		ws, seen := byGroup[seq]
		_, next := byGroup[seq+1]
		if seen && next && ws[0] != nil && evsHaveKey(evs, seq) { // the viewer saw the whole group
			if !bytes.Equal(seg, bytes.Join(ws, nil)) {
				t.Fatalf("segment %d differs from the WebSocket objects of its group", seq)
			}
			compared++
		}
	}
	if compared < 3 {
		t.Fatalf("compared %d segments with the WebSocket viewer's groups", compared)
	}
}

// evsHaveKey reports whether the viewer got group seq from its start.
func evsHaveKey(evs []viewer.Event, seq uint64) bool {
	for _, ev := range evs {
		if ev.Control == nil && ev.Header.Kind == wire.KindObject && ev.Header.Group == seq && ev.Header.Index == 0 {
			return true
		}
	}
	return false
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return b
}

// followParts reads the broadcast over LL-HLS for d the way a low-latency
// player does: from the playlist's preload hint on, always the next part,
// which the edge answers as soon as it exists. A hinted part that never
// comes (its group ended first) is a 404: then the next group's first part
// is next. It returns the parts.
func followParts(t *testing.T, base string, d time.Duration) [][]byte {
	t.Helper()
	var m playlist.Media
	if err := m.Unmarshal(httpGet(t, base+"index.m3u8")); err != nil {
		t.Fatal(err)
	}
	// part-{inst}-{track}-{group}-{index}.m4s
	f := strings.Split(strings.TrimSuffix(m.PreloadHint.URI, ".m4s"), "-")
	var seq, part int
	fmt.Sscan(f[3], &seq)
	fmt.Sscan(f[4], &part)
	var out [][]byte
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		resp, err := http.Get(fmt.Sprintf("%s%s-%s-%s-%d-%d.m4s", base, f[0], f[1], f[2], seq, part))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			t.Fatal(err)
		case resp.StatusCode == 404 && part > 0:
			seq, part = seq+1, 0
		case resp.StatusCode != 200:
			t.Fatalf("part %d.%d: %d %s", seq, part, resp.StatusCode, b)
		default:
			out = append(out, b)
			part++
		}
	}
	return out
}

func TestLLHLSIsReadByFFprobeAndFFmpeg(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	d, _ := startRTMPDemo(t, "")
	runFFmpeg(t, append(ffmpegArgs(30, 30), "-f", "flv", fmt.Sprintf("rtmp://%s/live/probe", d.origin.RTMPAddr()))...)
	testenv.WaitFor(t, 20*time.Second, "three groups", func() bool {
		b, ok := d.origin.Lookup("probe")
		return ok && len(b.Groups(0)) >= 3
	})
	url := fmt.Sprintf("http://%s/hls/probe/index.m3u8", d.edge.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	probe := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height,sample_rate", "-of", "compact", url)
	var perr bytes.Buffer
	probe.Stderr = &perr
	out, err := probe.Output()
	if err != nil || perr.Len() != 0 {
		t.Fatalf("ffprobe: %v\n%s", err, perr.String())
	}
	if !strings.Contains(string(out), "codec_name=h264|width=320|height=180") || !strings.Contains(string(out), "codec_name=aac") {
		t.Fatalf("ffprobe found:\n%s", out)
	}

	start := time.Now()
	read := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", "5", "-f", "null", "-")
	var rerr bytes.Buffer
	read.Stderr = &rerr
	if err := read.Run(); err != nil || rerr.Len() != 0 {
		t.Fatalf("ffmpeg reading LL-HLS: %v\n%s", err, rerr.String())
	}
	t.Logf("ffprobe: %s; ffmpeg read 5 s of LL-HLS in %s without errors", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; "), time.Since(start).Round(time.Millisecond))
}

// topBoxes returns the types of b's top-level ISO BMFF boxes.
func topBoxes(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("%d stray bytes after boxes %v", len(b)-off, out)
		}
		n := int(binary.BigEndian.Uint32(b[off:]))
		if n < 8 || off+n > len(b) {
			t.Fatalf("box %q of %d bytes at %d of %d", b[off+4:off+8], n, off, len(b))
		}
		out = append(out, string(b[off+4:off+8]))
		off += n
	}
	return out
}

// TestFFmpegReadsLLHLSWithNoWarningButItsOwnInitReRead explains ffmpeg's
// "Found duplicated MOOV Atom. Skipped it" when it reads the edge's
// LL-HLS: the media carry no init. Every segment and part the playlist
// lists is moof+mdat pairs only (no ftyp, no moov); the only moov is the
// EXT-X-MAP's. ffmpeg's HLS demuxer (5.1, and master as of 2026) makes a
// new init section for every EXT-X-MAP each time it reloads a live
// playlist and compares init sections by pointer, so after each reload it
// fetches the same init again and feeds its moov to the MP4 demuxer, which
// skips it with that warning. It does the same reading ffmpeg's own fMP4
// HLS output. So the test asserts the warning comes only right after an
// init re-read, and that ffmpeg says nothing else at warning level.
func TestFFmpegReadsLLHLSWithNoWarningButItsOwnInitReRead(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	d, _ := startRTMPDemo(t, "")
	runFFmpeg(t, append(ffmpegArgs(60, 30), "-f", "flv", fmt.Sprintf("rtmp://%s/live/moov", d.origin.RTMPAddr()))...)
	testenv.WaitFor(t, 20*time.Second, "three groups", func() bool {
		b, ok := d.origin.Lookup("moov")
		return ok && len(b.Groups(0)) >= 3
	})
	base := fmt.Sprintf("http://%s/hls/moov/", d.edge.Addr())
	var m playlist.Media
	if err := m.Unmarshal(httpGet(t, base+"index.m3u8")); err != nil {
		t.Fatal(err)
	}
	if got := topBoxes(t, httpGet(t, base+m.Map.URI)); len(got) != 2 || got[0] != "ftyp" || got[1] != "moov" {
		t.Fatalf("init segment %s: boxes %v, want ftyp moov", m.Map.URI, got)
	}
	media := map[string]bool{}
	for _, s := range m.Segments {
		media[s.URI] = true
		for _, p := range s.Parts {
			media[p.URI] = true
		}
	}
	for _, p := range m.Parts {
		media[p.URI] = true
	}
	if len(media) < 8 {
		t.Fatalf("%d segments and parts listed", len(media))
	}
	for uri := range media {
		boxes := topBoxes(t, httpGet(t, base+uri))
		for i, b := range boxes {
			if want := [2]string{"moof", "mdat"}[i%2]; b != want || len(boxes)%2 != 0 {
				t.Fatalf("%s: top-level boxes %v, want moof mdat pairs only", uri, boxes)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	read := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "repeat+level+verbose", "-i", base+"index.m3u8", "-t", "6", "-f", "null", "-")
	var rerr bytes.Buffer
	read.Stderr = &rerr
	if err := read.Run(); err != nil {
		t.Fatalf("ffmpeg reading LL-HLS: %v\n%s", err, rerr.String())
	}
	inits, dups := 0, 0
	for _, l := range strings.Split(rerr.String(), "\n") {
		switch {
		case strings.Contains(l, "Opening") && strings.Contains(l, "/init-"):
			inits++
		case strings.Contains(l, "Found duplicated MOOV Atom"):
			dups++
			if dups > inits-1 {
				t.Fatalf("a duplicated moov without a re-read of the init before it:\n%s", rerr.String())
			}
		case strings.Contains(l, "[warning]") || strings.Contains(l, "[error]") || strings.Contains(l, "[fatal]"):
			t.Fatalf("ffmpeg: %s\n%s", l, rerr.String())
		}
	}
	t.Logf("ffmpeg opened the init segment %d times (%d playlist reloads) and skipped its moov %d times; no other warning", inits, inits-1, dups)
}

// TestLLHLSPlaysInChromiumWithHlsJS plays the watch page's LL-HLS choice
// (?transport=hls) in headless Chromium: hls.js in low-latency mode must
// decode frames and stay within 3 s of the capture wall-clock, and the
// edge counts it as one viewer on its landing list (hls.js keeps the
// session id it was redirected to).
func TestLLHLSPlaysInChromiumWithHlsJS(t *testing.T) {
	requireBrowser(t)
	d, _ := startRTMPDemo(t, "demo")
	url := fmt.Sprintf("http://%s/watch/demo?transport=hls", d.edge.Addr())
	w := startWatch(t, url, "llhls-chromium", 6, 0)
	w.waitState("measuring")
	testenv.WaitFor(t, 20*time.Second, "the LL-HLS viewer counted on the landing list", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://%s/broadcasts.json", d.edge.Addr()))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var l struct{ Broadcasts []api.Listing }
		return json.NewDecoder(resp.Body).Decode(&l) == nil && len(l.Broadcasts) == 1 && l.Broadcasts[0].Viewers == 1
	})
	rep := w.report()
	wall := float64(rep.Last.At-rep.First.At) / 1000
	if rep.Last.CurrentTime-rep.First.CurrentTime < wall*2/3 || float64(rep.Last.Frames-rep.First.Frames) < wall*15 {
		t.Fatalf("playback did not advance in %.1f s: %+v", wall, rep)
	}
	if rep.Last.HLS == nil || !rep.Last.HLS.LowLatencyMode || rep.Last.Stats.Transport != "hls" {
		t.Fatalf("not hls.js in low-latency mode: %+v", rep.Last)
	}
	if l := rep.Last.Stats.LatencyMs; l <= 0 || l >= 3000 {
		t.Fatalf("latency %v ms, want under 3000", l)
	}
	t.Logf("Chromium played LL-HLS with hls.js %s", rep.Last.HLS.Version)
}
