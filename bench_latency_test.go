package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// TestBenchRTMPLatency measures, for a real ffmpeg RTMP publisher (720p30,
// x264 zerolatency, a keyframe a second), how long after a frame's RTMP
// message reached the origin (its capture wall-clock) it is in the hands of
// a WebSocket viewer and of an LL-HLS client that follows the preload
// hints. Run with QC_BENCH=1 (go tool task bench-latency); results go to
// bench/RESULTS.md.
func TestBenchRTMPLatency(t *testing.T) {
	if os.Getenv("QC_BENCH") != "1" {
		t.Skip("a benchmark: set QC_BENCH=1")
	}
	d, _ := startRTMPDemo(t, "")
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "40", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-b:v", "2500k", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "96k", "-f", "flv", fmt.Sprintf("rtmp://%s/live/bench", d.origin.RTMPAddr())}
	runFFmpeg(t, args...)
	testenv.WaitFor(t, 20*time.Second, "the broadcast", func() bool {
		b, ok := d.origin.Lookup("bench")
		return ok && len(b.Groups(0)) >= 3
	})
	const dur = 20 * time.Second
	var ws, hls []time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ws = wsLatencies(t, d, dur) }()
	go func() { defer wg.Done(); hls = hlsLatencies(t, d, dur) }()
	wg.Wait()
	t.Logf("RTMP ingest -> WebSocket viewer: %s", summary(ws))
	t.Logf("RTMP ingest -> LL-HLS part received: %s", summary(hls))
}

func wsLatencies(t *testing.T, d *demo, dur time.Duration) []time.Duration {
	c, err := viewer.Dial(context.Background(), fmt.Sprintf("ws://%s/ws/bench", d.edge.Addr()), "")
	if err != nil {
		t.Error(err)
		return nil
	}
	defer c.Close()
	var out []time.Duration
	first := true
	var firstGroup uint64
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		ev, err := c.Next(5 * time.Second)
		if err != nil {
			t.Error(err)
			return out
		}
		now := time.Now()
		if ev.Control != nil || ev.Header.Kind != wire.KindObject || len(ev.Payload) == 0 {
			continue
		}
		if first {
			first, firstGroup = false, ev.Header.Group
		}
		if ev.Header.Group == firstGroup {
			continue // the group the viewer joined in was sent from the cache
		}
		out = append(out, now.Sub(time.UnixMicro(ev.Header.Capture)))
	}
	return out
}

func hlsLatencies(t *testing.T, d *demo, dur time.Duration) []time.Duration {
	base := fmt.Sprintf("http://%s/hls/bench/", d.edge.Addr())
	resp, err := http.Get(base + "index.m3u8")
	if err != nil {
		t.Error(err)
		return nil
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m playlist.Media
	if err := m.Unmarshal(body); err != nil {
		t.Error(err)
		return nil
	}
	f := strings.Split(strings.TrimSuffix(m.PreloadHint.URI, ".m4s"), "-")
	var seq uint64
	var part int
	fmt.Sscan(f[3], &seq)
	fmt.Sscan(f[4], &part)
	b, _ := d.origin.Lookup("bench")
	var out []time.Duration
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		resp, err := http.Get(fmt.Sprintf("%s%s-%s-%s-%d-%d.m4s", base, f[0], f[1], f[2], seq, part))
		if err != nil {
			t.Error(err)
			return out
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		now := time.Now()
		switch {
		case err != nil:
			t.Error(err)
			return out
		case resp.StatusCode == 404 && part > 0:
			seq, part = seq+1, 0
			continue
		case resp.StatusCode != 200:
			t.Errorf("part %d.%d: %d", seq, part, resp.StatusCode)
			return out
		}
		for _, g := range b.Groups(0) {
			if g.Seq == seq {
				objs, _ := b.Objects(g, part, nil)
				if len(objs) > 0 {
					out = append(out, now.Sub(time.UnixMicro(objs[0].Capture)))
				}
			}
		}
		part++
	}
	return out
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))].Round(100 * time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%s p95=%s p99=%s max=%s", len(ds), p(0.5), p(0.95), p(0.99), ds[len(ds)-1].Round(100*time.Microsecond))
}
