package playback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/cmaf"
)

// writeRecording lays out, by hand, a recording of the built-in clip as
// shared/record writes one: two epochs (a publisher that reconnected and
// restarted its timestamps), one segment per group.
func writeRecording(t *testing.T, root, name string, start time.Time) (dir string, groups int) {
	t.Helper()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	id := start.UTC().Format("20060102T150405.000000Z")
	dir = filepath.Join(root, filepath.FromSlash(name), id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var idx bytes.Buffer
	add := func(v map[string]any) {
		b, _ := json.Marshal(v)
		idx.Write(append(b, '\n'))
	}
	add(map[string]any{"t": "rec", "name": name, "started": start.UnixMicro()})
	ts := c.Init.PrimaryTrak().Timescale
	n := 0
	wall := start
	for epoch := 1; epoch <= 2; epoch++ {
		init := fmt.Sprintf("init-%d.mp4", epoch)
		if err := os.WriteFile(filepath.Join(dir, init), c.Init.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		add(map[string]any{"t": "init", "n": epoch, "file": init, "epoch": epoch, "bytes": len(c.Init.Data)})
		var seg []byte
		var dts, end uint64
		flush := func(first bool) {
			if seg == nil {
				return
			}
			n++
			file := fmt.Sprintf("seg-%08d.m4s", n)
			if err := os.WriteFile(filepath.Join(dir, file), seg, 0o644); err != nil {
				t.Fatal(err)
			}
			add(map[string]any{"t": "seg", "n": n, "init": epoch, "file": file, "start": wall.UnixMicro(), "dts": dts, "dur": end - dts, "ts": ts, "bytes": len(seg), "disc": first && epoch > 1})
			wall = wall.Add(time.Duration(float64(end-dts) / float64(ts) * float64(time.Second)))
			seg = nil
		}
		first := true
		for _, ch := range c.Chunks {
			if ch.Keyframe && seg != nil {
				flush(first)
				first = false
			}
			if seg == nil {
				dts = ch.DecodeTime
			}
			seg = append(seg, ch.Data...)
			end = ch.DecodeTime + ch.Duration
		}
		flush(first)
		wall = wall.Add(2 * time.Second) // the publisher was away
	}
	add(map[string]any{"t": "end"})
	if err := os.WriteFile(filepath.Join(dir, "index.jsonl"), idx.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, n
}

func get(t *testing.T, h http.Handler, url string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	return rec.Code, rec.Body.Bytes()
}

func TestPlaylistHasOneDiscontinuityAndBothInits(t *testing.T) {
	root := t.TempDir()
	start := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	_, groups := writeRecording(t, root, "cams/door", start)
	h := New(Config{Dir: root})
	code, body := get(t, h, "/recordings/list?name=cams/door")
	if code != 200 {
		t.Fatalf("list: %d %s", code, body)
	}
	var list []Info
	if err := json.Unmarshal(body, &list); err != nil || len(list) != 1 {
		t.Fatalf("list %s: %v", body, err)
	}
	in := list[0]
	if in.Segments != groups || len(in.Spans) != 2 || in.Duration < 12.79 || in.Duration > 12.81 || in.Spans[1].Start.Sub(start.Add(8400*time.Millisecond)).Abs() > time.Millisecond {
		t.Fatalf("list entry %+v", in)
	}
	code, pl := get(t, h, in.Playlist)
	if code != 200 {
		t.Fatalf("playlist: %d %s", code, pl)
	}
	s := string(pl)
	for sub, want := range map[string]int{"#EXT-X-DISCONTINUITY\n": 1, "#EXT-X-MAP:URI=": 2, "#EXTINF:": groups, "#EXT-X-ENDLIST": 1, "#EXT-X-PLAYLIST-TYPE:VOD": 1, "#EXT-X-PROGRAM-DATE-TIME:": 2} {
		if got := strings.Count(s, sub); got != want {
			t.Fatalf("%q %d times, want %d:\n%s", sub, got, want, s)
		}
	}
	if i, j := strings.Index(s, "#EXT-X-DISCONTINUITY"), strings.Index(s, `#EXT-X-MAP:URI="init-2.mp4"`); i < 0 || j < i {
		t.Fatalf("the second init is not after the discontinuity:\n%s", s)
	}
	// Every file the playlist names is served.
	base := strings.TrimSuffix(in.Playlist, "index.m3u8")
	for _, l := range strings.Split(s, "\n") {
		file := l
		if u, ok := strings.CutPrefix(l, `#EXT-X-MAP:URI="`); ok {
			file = strings.TrimSuffix(u, `"`)
		} else if l == "" || l[0] == '#' {
			continue
		}
		if code, b := get(t, h, base+file); code != 200 || len(b) == 0 {
			t.Fatalf("%s: %d", file, code)
		}
	}
	// An active recording is an EVENT playlist without an end.
	h = New(Config{Dir: root, Active: func(name, id string) bool { return name == "cams/door" && id == in.ID }})
	if _, pl := get(t, h, in.Playlist); bytes.Contains(pl, []byte("ENDLIST")) || !bytes.Contains(pl, []byte("TYPE:EVENT")) {
		t.Fatalf("active recording's playlist:\n%s", pl)
	}
}

// chunkTimes reads an fMP4 and returns each chunk's earliest decode time in
// seconds and the end of the last.
func chunkTimes(t *testing.T, data []byte) (starts []float64, end float64) {
	t.Helper()
	r := cmaf.NewReader(bytes.NewReader(data), cmaf.Limits{MaxBox: 64 << 20})
	for {
		seg, err := r.Next()
		if errors.Is(err, io.EOF) {
			return starts, end
		}
		if err != nil {
			t.Fatal(err)
		}
		c, ok := seg.(*cmaf.Chunk)
		if !ok {
			continue
		}
		first := 1e18
		for _, tr := range c.Trafs {
			var ts float64
			for _, k := range r.Init().Traks {
				if k.ID == tr.TrackID {
					ts = float64(k.Timescale)
				}
			}
			first = min(first, float64(tr.DecodeTime)/ts)
			end = max(end, float64(tr.DecodeTime+tr.Duration)/ts)
		}
		starts = append(starts, first)
	}
}

func TestRangeQueryIsOneFMP4FromZero(t *testing.T) {
	root := t.TempDir()
	start := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	writeRecording(t, root, "cams/door", start)
	h := New(Config{Dir: root})
	// 1.5 s into the first epoch, for 3 s: the groups at 1.0667 s
	// (covering 1.5) to the one covering 4.5 (3.2..4.27 and 4.27..5.33).
	code, body := get(t, h, "/recordings/get?name=cams/door&start=2026-12-03T09:00:01.5Z&duration=3")
	if code != 200 {
		t.Fatalf("get: %d %s", code, body)
	}
	starts, end := chunkTimes(t, body)
	if len(starts) == 0 || starts[0] > 0.001 || starts[0] < -0.001 {
		t.Fatalf("first chunk at %v s, want 0", starts)
	}
	if end < 4.26 || end > 4.30 { // groups 2..5 of 1.0667 s (audio may end a frame later)
		t.Fatalf("range ends at %v s, want 4.267", end)
	}
	// Across the gap of the second epoch it stops at the init change;
	// from inside the second epoch it starts at 0 again.
	_, body = get(t, h, "/recordings/get?name=cams/door&start=2026-12-03T09:00:06Z&duration=60")
	if _, end := chunkTimes(t, body); end < 1.0 || end > 1.1 {
		t.Fatalf("range to the end of the first epoch ends at %v s, want 1.067", end)
	}
	_, body = get(t, h, "/recordings/get?name=cams/door&start=2026-12-03T09:00:09Z&duration=60")
	starts, end = chunkTimes(t, body)
	if starts[0] != 0 || end < 6.39 || end > 6.45 { // the group covering 9 s is the epoch's first
		t.Fatalf("second epoch from 9 s: %v..%v", starts[0], end)
	}
	for i := 1; i < len(starts); i++ {
		if starts[i] < starts[i-1] {
			t.Fatalf("decode times fall at chunk %d", i)
		}
	}
	for url, want := range map[string]int{
		"/recordings/get?name=cams/door&start=2027-01-01T00:00:00Z&duration=3":   404,
		"/recordings/get?name=cams/door&start=yesterday&duration=3":              400,
		"/recordings/get?name=cams/door&start=2026-12-03T09:00:00Z&duration=0":   400,
		"/recordings/get?name=cams/door&start=2026-12-03T09:00:00Z&duration=1e9": 400,
		"/recordings/get?start=2026-12-03T09:00:00Z&duration=3":                  400,
	} {
		if code, b := get(t, h, url); code != want {
			t.Fatalf("%s: %d %s, want %d", url, code, b, want)
		}
	}
}

func TestPlaybackNeedsThePlayTokenAndStaysInTheRecording(t *testing.T) {
	root := t.TempDir()
	start := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	dir, _ := writeRecording(t, root, "cams/door", start)
	if err := os.WriteFile(filepath.Join(root, "secret.txt"), []byte("no"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := New(Config{Dir: root, Auth: auth.FromConfig("", "s3cret", "")})
	id := filepath.Base(dir)
	pl := "/recordings/cams/door/" + id + "/index.m3u8"
	for url, want := range map[string]int{
		pl:                                401,
		pl + "?token=wrong":               401,
		"/recordings/list?name=cams/door": 401,
		"/recordings/get?name=cams/door&start=2026-12-03T09:00:00Z&duration=3": 401,
		pl + "?token=s3cret": 200,
		"/recordings/cams/door/" + id + "/../../../secret.txt?token=s3cret": 400,
		"/recordings/cams/door/" + id + "/index.jsonl?token=s3cret":         404,
		"/recordings/cams/door/20261203T090000Z/index.m3u8?token=s3cret":    404,
		"/recordings/cams/door/..%2F..%2Fx/index.m3u8?token=s3cret":         400,
		"/recordings/cams/../cams/door/" + id + "/index.m3u8?token=s3cret":  400,
	} {
		if code, b := get(t, h, url); code != want {
			t.Fatalf("%s: %d %s, want %d", url, code, b, want)
		}
	}
	_, body := get(t, h, pl+"?token=s3cret")
	for _, l := range strings.Split(string(body), "\n") {
		if (strings.HasPrefix(l, "seg-") || strings.HasPrefix(l, "#EXT-X-MAP")) && !strings.Contains(l, "?token=s3cret") {
			t.Fatalf("playlist line %q lacks the token", l)
		}
	}
	// Without a name, the list shows only what the token may play.
	_, body = get(t, h, "/recordings/list")
	if strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list without a token: %s", body)
	}
}
