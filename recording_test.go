package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/playback"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/testenv"
)

// recordingOrigin runs `quiccast origin` recording every broadcast into
// dir, and returns it with its RTMP address.
func recordingOrigin(t *testing.T, bin, dir string, extra ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"origin", "-listen", "127.0.0.1:0", "-relay-listen", "127.0.0.1:0", "-rtmp-listen", "127.0.0.1:0",
		"-record", "-record-dir", dir, "-record-min-free", "0", "-grace", "3s"}, extra...)
	p := startProc(t, bin, "origin", "origin listening", args...)
	var rtmp string
	testenv.WaitFor(t, 10*time.Second, "RTMP listening", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.logs {
			if l["msg"] == "RTMP ingest listening" {
				rtmp, _ = l["addr"].(string)
			}
		}
		return rtmp != ""
	})
	return p, rtmp
}

// recordingState returns the origin's recording status of name.
func recordingState(t *testing.T, p *proc, name string) record.Status {
	t.Helper()
	var list []record.Status
	if err := json.Unmarshal(httpGet(t, "http://"+p.field("addr")+"/api/v1/recordings"), &list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Broadcast == name {
			return s
		}
	}
	return record.Status{}
}

// awaitRecordingEnd waits until the recording of name ended with its
// broadcast.
func awaitRecordingEnd(t *testing.T, p *proc, name string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, "the recording of "+name+" to end", func() bool {
		st := recordingState(t, p, name)
		return st.ID != "" && !st.Active && strings.HasPrefix(st.State, "ended")
	})
}

// recordings lists the recordings of name through the playback route.
func recordings(t *testing.T, addr, name string) []playback.Info {
	t.Helper()
	var list []playback.Info
	if err := json.Unmarshal(httpGet(t, "http://"+addr+"/recordings/list?name="+url.QueryEscape(name)), &list); err != nil {
		t.Fatal(err)
	}
	return list
}

// probeDuration returns ffprobe's duration of u (a file or URL).
func probeDuration(t *testing.T, u string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", u)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("ffprobe %s: %v\n%s", u, err, stderr.String())
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q: %v", out, err)
	}
	return d
}

// decodeAll decodes u to the end with ffmpeg and fails on any error it
// prints.
func decodeAll(t *testing.T, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", u, "-f", "null", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() != 0 {
		t.Fatalf("ffmpeg decoding %s: %v\n%s", u, err, stderr.String())
	}
}

// playInChromium plays the playlist u to its end with hls.js in headless
// Chromium (client-js/test/browser/vod.mjs) and checks the video's length.
func playInChromium(t *testing.T, u string, want float64) {
	t.Helper()
	requireBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserDeadline+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test/browser/vod.mjs", u)
	cmd.Dir = "client-js"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep struct {
		Duration, CurrentTime float64
		Ended                 bool
		Frames                int
		HLS                   string
		Errors                []string
	}
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil {
		t.Fatalf("vod.mjs: %v %v\n%s\n%s", err, jerr, out, stderr.String())
	}
	if !rep.Ended || rep.Duration < want-1.1 || rep.Duration > want+1.1 || rep.CurrentTime < want-1.1 || rep.Frames < int(want*30*0.9) {
		t.Fatalf("Chromium: %+v, want %.2f s played to the end (30 fps)", rep, want)
	}
	t.Logf("Chromium played the recording with hls.js %s to its end: %.2f s, %d frames", rep.HLS, rep.Duration, rep.Frames)
}

func publishRTMP(t *testing.T, rtmp, name string, seconds int) chan error {
	done, _ := runFFmpeg(t, append(ffmpegArgs(seconds, 30), "-f", "flv", fmt.Sprintf("rtmp://%s/live/%s", rtmp, name))...)
	return done
}

func waitFFmpeg(t *testing.T, done chan error, d time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
	case <-time.After(d):
		t.Fatal("ffmpeg did not finish")
	}
}

// TestRecordingOfAnRTMPBroadcastPlaysInFFmpeg: ffmpeg publishes 20 s over
// RTMP to the real binary recording everything; the recording's HLS
// playlist and a range query are read by ffprobe and ffmpeg, with the
// right durations and no errors.
func TestRecordingOfAnRTMPBroadcastPlaysInFFmpeg(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	bin := buildBinary(t)
	dir := t.TempDir()
	p, rtmp := recordingOrigin(t, bin, dir)
	addr := p.field("addr")
	waitFFmpeg(t, publishRTMP(t, rtmp, "cams/rec", 20), time.Minute)
	awaitRecordingEnd(t, p, "cams/rec")

	list := recordings(t, addr, "cams/rec")
	if len(list) != 1 || !list[0].Ended || len(list[0].Spans) != 1 {
		t.Fatalf("recordings: %+v", list)
	}
	in := list[0]
	pl := "http://" + addr + in.Playlist
	if d := probeDuration(t, pl); d < 19 || d > 21.1 {
		t.Fatalf("ffprobe: the recording lasts %.2f s, want 20 ± 1 group", d)
	}
	if in.Duration < 19 || in.Duration > 21.1 || in.Segments < 19 || in.Segments > 21 {
		t.Fatalf("listed %+v, want 20 s in about 20 one-second groups", in)
	}
	decodeAll(t, pl)
	playInChromium(t, pl, in.Duration)

	// A range query: 8 s from 5 s in, as one fMP4 that starts at 0.
	from := in.Spans[0].Start.Add(5 * time.Second)
	q := fmt.Sprintf("http://%s/recordings/get?name=cams/rec&start=%s&duration=8", addr, from.UTC().Format(time.RFC3339Nano))
	file := filepath.Join(t.TempDir(), "range.mp4")
	if err := os.WriteFile(file, httpGet(t, q), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := probeDuration(t, file); d < 8 || d > 10.1 {
		t.Fatalf("range of 8 s lasts %.2f s, want 8..10 (whole groups at both ends)", d)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=start_time", "-of", "csv=p=0", file).Output()
	if st, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err != nil || st < 0 || st > 0.1 {
		t.Fatalf("range starts at %q s (%v), want 0", out, err)
	}
	decodeAll(t, file)
	t.Logf("recorded %d segments, %.2f s, %d bytes; range of 8 s from +5 s plays", in.Segments, in.Duration, in.Bytes)
}

// TestRecordingOfAReconnectingPublisherIsOneRecordingWithADiscontinuity:
// ffmpeg publishes 6 s, leaves, and publishes 6 s again (timestamps from 0)
// within the grace period: one recording, one discontinuity, two inits,
// and it decodes without errors.
func TestRecordingOfAReconnectingPublisherIsOneRecordingWithADiscontinuity(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	bin := buildBinary(t)
	dir := t.TempDir()
	p, rtmp := recordingOrigin(t, bin, dir, "-grace", "8s")
	addr := p.field("addr")
	waitFFmpeg(t, publishRTMP(t, rtmp, "again", 6), time.Minute)
	waitFFmpeg(t, publishRTMP(t, rtmp, "again", 6), time.Minute)
	awaitRecordingEnd(t, p, "again")

	list := recordings(t, addr, "again")
	if len(list) != 1 || len(list[0].Spans) != 2 {
		t.Fatalf("recordings: %+v, want one with two spans", list)
	}
	pl := "http://" + addr + list[0].Playlist
	body := string(httpGet(t, pl))
	if strings.Count(body, "#EXT-X-DISCONTINUITY\n") != 1 || strings.Count(body, "#EXT-X-MAP:") != 2 {
		t.Fatalf("playlist:\n%s", body)
	}
	if d := probeDuration(t, pl); d < 11 || d > 13.1 {
		t.Fatalf("ffprobe: %.2f s, want 12 ± 1 group", d)
	}
	decodeAll(t, pl)
}

// TestRecordingSurvivesSIGKILL kills the origin while it records; after a
// restart on the same directory the recording has every segment indexed
// before the kill, the half-written one is gone, and it plays.
func TestRecordingSurvivesSIGKILL(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	bin := buildBinary(t)
	dir := t.TempDir()
	p, rtmp := recordingOrigin(t, bin, dir)
	publishRTMP(t, rtmp, "crash", 60)
	testenv.WaitFor(t, 30*time.Second, "5 segments recorded", func() bool { return recordingState(t, p, "crash").Segments >= 5 })
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	recs, err := record.List(dir)
	if err != nil || len(recs) != 1 || recs[0].Ended {
		t.Fatalf("after the kill: %v, %+v", err, recs)
	}
	indexed := len(recs[0].Segments)
	files, _ := filepath.Glob(filepath.Join(recs[0].Dir, "seg-*.m4s"))
	t.Logf("killed with %d segments indexed and %d segment files", indexed, len(files))

	p2, _ := recordingOrigin(t, bin, dir)
	if p2.count("msg", "recording recovered", "broadcast", "crash") != 1 {
		t.Fatal("no 'recording recovered' log line")
	}
	list := recordings(t, p2.field("addr"), "crash")
	if len(list) != 1 || list[0].Segments != indexed {
		t.Fatalf("after restart: %+v, want %d segments", list, indexed)
	}
	files, _ = filepath.Glob(filepath.Join(recs[0].Dir, "seg-*.m4s"))
	if len(files) != indexed {
		t.Fatalf("%d segment files for %d indexed: the partial one was kept", len(files), indexed)
	}
	pl := "http://" + p2.field("addr") + list[0].Playlist
	if body := httpGet(t, pl); !bytes.Contains(body, []byte("#EXT-X-ENDLIST")) {
		t.Fatalf("recovered playlist not finished:\n%s", body)
	}
	if d := probeDuration(t, pl); d < list[0].Duration-0.1 || d > list[0].Duration+0.1 || d < float64(indexed)-1.1 {
		t.Fatalf("ffprobe: %.2f s, index %.2f s for %d segments", d, list[0].Duration, indexed)
	}
	decodeAll(t, pl)
}

// TestPlayerWatchesARecordingWithStartAndGoesBackToLive: the demo records
// its broadcast; the watch page with ?start= plays the recording from
// then (transport "recording", seconds behind the capture clock, badge
// REC), and "Back to live" switches the same page to the live broadcast.
func TestPlayerWatchesARecordingWithStartAndGoesBackToLive(t *testing.T) {
	requireBrowser(t)
	dir := t.TempDir()
	d, _ := runDemoFor(t, demoConfig{Name: "demo", RecordDir: dir})
	testenv.WaitFor(t, 30*time.Second, "4 recorded segments", func() bool {
		l := d.origin.Recorder().List()
		return len(l) == 1 && l[0].Segments >= 4
	})
	recs, err := record.List(dir)
	if err != nil || len(recs) != 1 {
		t.Fatalf("recordings: %v %d", err, len(recs))
	}
	from := recs[0].Segments[0].Start.Add(1500 * time.Millisecond)
	u := fmt.Sprintf("%s?start=%s", d.watchURL(), url.QueryEscape(from.UTC().Format(time.RFC3339Nano)))
	w := startWatch(t, u, "recording-start", 0, 0)
	w.waitState("playing")
	s := pollSample(t, w, "the recording playing", func(s browserSample) bool { return s.Stats.State == "playing" && s.Stats.LatencyMs > 0 })
	behind := time.Since(from).Milliseconds()
	if s.Badge != "REC" || s.Stats.Transport != "recording" || s.Stats.LatencyMs < float64(behind)-3000 || s.Stats.LatencyMs > float64(behind)+3000 {
		t.Fatalf("playing the recording: badge %q, transport %q, %.0f ms behind the capture clock, want about %d", s.Badge, s.Stats.Transport, s.Stats.LatencyMs, behind)
	}
	w.click("#live")
	s = pollSample(t, w, "live playback", func(s browserSample) bool {
		live := s.Stats.Transport == "webtransport" || s.Stats.Transport == "websocket"
		return live && s.Stats.State == "playing" && s.Badge == "LIVE" && s.Stats.LatencyMs > 0 && s.Stats.LatencyMs < 3000
	})
	t.Logf("recording from %s played %.0f ms behind; back to live over %s at %.0f ms", from.Format(time.RFC3339Nano), float64(behind), s.Stats.Transport, s.Stats.LatencyMs)
}

// pollSample asks the page for samples until ok accepts one.
func pollSample(t *testing.T, w *watchRun, what string, ok func(browserSample) bool) browserSample {
	t.Helper()
	deadline := time.Now().Add(browserDeadline)
	for {
		s := w.sample()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s: last sample %+v", what, s)
		}
		time.Sleep(100 * time.Millisecond) // the poll interval; the deadline above is the only limit
	}
}
