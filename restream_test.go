package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/restream"
	"github.com/quiccast/quiccast/shared/testenv"
)

// rtmpAddrOf returns the address a node's RTMP ingest listens on.
func rtmpAddrOf(t *testing.T, p *proc) string {
	t.Helper()
	var addr string
	testenv.WaitFor(t, 10*time.Second, p.name+"'s RTMP listener", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.logs {
			if l["msg"] == "RTMP ingest listening" {
				addr, _ = l["addr"].(string)
			}
		}
		return addr != ""
	})
	return addr
}

// restreamOf returns the status of broadcast's target id on p ("" id:
// its only target), and whether it is listed.
func restreamOf(t *testing.T, p *proc, broadcast, id string) (restream.Status, bool) {
	t.Helper()
	var list []restream.Status
	if st := apiCall(t, p, "GET", "/restreams", "", "", &list); st != 200 {
		t.Fatalf("GET /restreams: %d", st)
	}
	for _, s := range list {
		if s.Broadcast == broadcast && (id == "" || s.ID == id) {
			return s, true
		}
	}
	return restream.Status{}, false
}

// rawGet returns the body of an HTTP GET.
func rawGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// remoteMetric reads one sample of a node's /metrics (text format): the
// series name whose labels include every given label/value pair.
func remoteMetric(t *testing.T, p *proc, name string, labels ...string) float64 {
	t.Helper()
	for _, l := range strings.Split(rawGet(t, "http://"+p.field("addr")+"/metrics"), "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(l, labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
			}
		}
		if ok {
			var v float64
			fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
			return v
		}
	}
	t.Fatalf("%s: no %s%v in /metrics", p.name, name, labels)
	return 0
}

// assertKeysHidden fails if a secret shows in a log line of the nodes, or
// in their restream list and metrics.
func assertKeysHidden(t *testing.T, nodes []*proc, secrets ...string) {
	t.Helper()
	lines := 0
	for _, p := range nodes {
		p.mu.Lock()
		for _, l := range p.logs {
			s := fmt.Sprint(l)
			lines++
			for _, sec := range secrets {
				if strings.Contains(s, sec) {
					t.Errorf("%s logged a stream key: %s", p.name, s)
				}
			}
		}
		p.mu.Unlock()
		if p.cmd.ProcessState != nil {
			continue // not running
		}
		for _, path := range []string{"/api/v1/restreams", "/metrics"} {
			body := rawGet(t, "http://"+p.field("addr")+path)
			for _, sec := range secrets {
				if strings.Contains(body, sec) {
					t.Errorf("%s shows a stream key at %s", p.name, path)
				}
			}
		}
	}
	if lines == 0 {
		t.Fatal("no log lines to check")
	}
}

// TestRestreamToASecondOriginSurvivesItsRestart: origin A pushes cam/a,
// by a -restream rule whose key comes from the environment, to origin B's
// RTMP ingest as "mirror" (B wants the key); a viewer of mirror on an edge
// gets frames. A second target asked for on the edge reaches A through
// the registry and is removed the same way. B is killed: the target goes
// reconnecting; B comes back on the same address: the target goes live
// again and a viewer gets frames.
// No log line, API answer or metric of any node holds the key.
func TestRestreamToASecondOriginSurvivesItsRestart(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const key = "b-key-7f3a9c1e55"
	t.Setenv("QC_TEST_RESTREAM_KEY", key)
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	bRTMP := testenv.FreeAddr(t)
	bArgs := []string{"-rtmp-listen", bRTMP, "-publish-tokens", key}
	b := node("origin", "origin-b", bArgs...)
	a := node("origin", "origin-a", "-rtmp-listen", "127.0.0.1:0",
		"-restream", "cam/*=rtmp://"+bRTMP+"/live/mirror?key=${QC_TEST_RESTREAM_KEY}", "-restream-refused-backoff", "1s")
	e := node("edge", "edge-1")
	publishRTMP(t, rtmpAddrOf(t, a), "cam/a", 90)

	var st restream.Status
	testenv.WaitFor(t, 30*time.Second, "the restream live", func() bool {
		st, _ = restreamOf(t, a, "cam/a", "")
		return st.State == restream.StateLive && st.Bytes > 0
	})
	if st.Source != "config" || st.URL != "rtmp://"+bRTMP+"/live/REDACTED" {
		t.Errorf("status %+v", st)
	}
	// The API target added below stays listed (stopped) after its
	// removal: follow the configured target by its id from here on.
	cfgID := st.ID
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	viewerURL := "ws://" + e.field("addr") + "/ws/mirror"
	w1 := startWatcher(ctx, &wg, "mirror", viewerURL)
	testenv.WaitFor(t, 30*time.Second, "3 keyframes of mirror on the edge", func() bool { return w1.keyframes() >= 3 })

	// Asked on the edge, which holds nothing: the request travels to A as
	// a registry event (202 with A's id and the target's), and back out.
	var act struct{ Action, Broadcast, Node, ID string }
	if code := apiCall(t, e, "POST", "/restreams/{name}", "cam/a", `{"url":"rtmp://`+bRTMP+`/live/mirror2?key=`+key+`"}`, &act); code != 202 || act.Node != "origin-a" || act.ID == "" {
		t.Fatalf("POST on the edge: %d %+v", code, act)
	}
	testenv.WaitFor(t, 20*time.Second, "the second target live on A", func() bool {
		s, ok := restreamOf(t, a, "cam/a", act.ID)
		return ok && s.State == restream.StateLive && s.Source == "api"
	})
	if code := apiCall(t, e, "DELETE", "/restreams/{name}", "cam/a?id="+act.ID, "", &act); code != 202 || act.Action != "restream-stop" {
		t.Fatalf("DELETE on the edge: %d %+v", code, act)
	}
	testenv.WaitFor(t, 20*time.Second, "the second target stopped on A", func() bool {
		s, _ := restreamOf(t, a, "cam/a", act.ID)
		return s.State == restream.StateStopped && !s.Active
	})

	b.cmd.Process.Kill()
	b.cmd.Wait()
	testenv.WaitFor(t, 20*time.Second, "the restream to notice B is gone", func() bool {
		st, _ = restreamOf(t, a, "cam/a", cfgID)
		return st.State == restream.StateReconnecting
	})
	t.Logf("B killed: %s (%s)", st.State, st.LastError)
	time.Sleep(time.Second) // B stays down across a reconnect attempt or two

	b2 := node("origin", "origin-b", bArgs...)
	testenv.WaitFor(t, 60*time.Second, "the restream live again", func() bool {
		st, _ = restreamOf(t, a, "cam/a", cfgID)
		return st.State == restream.StateLive && st.Sessions >= 2
	})
	t.Logf("after B's restart: %s after %d attempts, %d sessions, %d bytes", st.State, st.Attempts, st.Sessions, st.Bytes)
	w2 := startWatcher(ctx, &wg, "mirror", viewerURL)
	testenv.WaitFor(t, 30*time.Second, "3 keyframes of mirror again", func() bool { return w2.keyframes() >= 3 })

	if got := remoteMetric(t, a, "quiccast_origin_restream_reconnects_total", "reason", "network"); got < 1 {
		t.Errorf("reconnects_total{reason=network} = %v after B was killed", got)
	}
	assertKeysHidden(t, []*proc{a, b, b2, e}, key)
}

// TestRestreamBadKeyIsRefusedWithoutARetryStorm: a target added through
// the API with a key origin B does not accept is "refused" with B's
// words; the attempts back off (1 s, 2 s) and stop after
// -restream-max-refusals; B sees no more than those.
func TestRestreamBadKeyIsRefusedWithoutARetryStorm(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const good, bad = "good-key-31d8e0a2", "bad-key-90c4b7f6"
	bin := buildBinary(t)
	origin := func(name string, extra ...string) *proc {
		return startProc(t, bin, name, "origin listening", append([]string{"origin", "-listen", "127.0.0.1:0",
			"-relay-listen", "127.0.0.1:0", "-rtmp-listen", "127.0.0.1:0"}, extra...)...)
	}
	b := origin("origin-b", "-publish-tokens", good)
	a := origin("origin-a", "-restream-refused-backoff", "1s", "-restream-max-refusals", "3")
	publishRTMP(t, rtmpAddrOf(t, a), "cam/a", 60)
	// Ready, not only claimed: the name is listed from the claim on, the
	// restream manager learns of it a moment later; the catalog comes
	// after both.
	testenv.WaitFor(t, 20*time.Second, "cam/a ready on A", func() bool {
		var list []map[string]any
		body := rawGet(t, "http://"+a.field("addr")+"/broadcasts")
		return apiCall(t, a, "GET", "/restreams", "", "", &list) == 200 && strings.Contains(body, `"cam/a"`) && strings.Contains(body, `"catalog"`)
	})

	target := "rtmp://" + rtmpAddrOf(t, b) + "/live/other?key=" + bad
	var added restream.Status
	if st := apiCall(t, a, "POST", "/restreams/{name}", "cam/a", `{"url":"`+target+`"}`, &added); st != 201 {
		t.Fatalf("POST /restreams: %d", st)
	}
	if added.URL != "rtmp://"+rtmpAddrOf(t, b)+"/live/REDACTED" || added.Source != "api" {
		t.Errorf("added %+v", added)
	}
	if st := apiCall(t, a, "POST", "/restreams/{name}", "cam/a", `{"url":"`+target+`"}`, nil); st != 409 {
		t.Errorf("the same target again: %d, want 409", st)
	}
	if st := apiCall(t, a, "POST", "/restreams/{name}", "cam/a", `{"url":"http://x/live/k"}`, nil); st != 400 {
		t.Errorf("an http:// target: %d, want 400", st)
	}
	start := time.Now()
	var st restream.Status
	testenv.WaitFor(t, 10*time.Second, "the target refused", func() bool {
		st, _ = restreamOf(t, a, "cam/a", added.ID)
		return st.State == restream.StateRefused
	})
	if !strings.Contains(st.LastError, "token not accepted") || !strings.Contains(st.LastError, "Unauthorized") {
		t.Errorf("last error %q does not say why", st.LastError)
	}
	t.Logf("refused: %s", st.LastError)
	refusedByB := func() int { return b.count("msg", "publish refused") }
	testenv.WaitFor(t, 20*time.Second, "the target given up", func() bool {
		st, _ = restreamOf(t, a, "cam/a", added.ID)
		return !st.Active
	})
	took := time.Since(start)
	if st.State != restream.StateRefused || st.Attempts != 3 || st.Refusals != 3 || st.Sessions != 0 || !strings.Contains(st.LastError, "gave up after 3 refusals") {
		t.Errorf("given up: %+v", st)
	}
	// 3 attempts, 1 s and 2 s apart: not a storm.
	if took < 2500*time.Millisecond {
		t.Errorf("3 refusals within %s: the backoff did not hold", took)
	}
	time.Sleep(2 * time.Second)
	if n := refusedByB(); n != 3 {
		t.Errorf("B refused %d publishes, want 3", n)
	}
	if got := remoteMetric(t, a, "quiccast_origin_restream_reconnects_total", "reason", "refused"); got != 3 {
		t.Errorf("reconnects_total{reason=refused} = %v, want 3", got)
	}
	if got := remoteMetric(t, a, "quiccast_origin_restream_state", "target_id", added.ID, "state", "refused"); got != 1 {
		t.Errorf("state{refused} = %v", got)
	}
	// Removing a target that ended is a 404; an unknown id too.
	if code := apiCall(t, a, "DELETE", "/restreams/{name}", "cam/a?id="+added.ID, "", nil); code != 404 {
		t.Errorf("DELETE of a target given up: %d, want 404", code)
	}
	assertKeysHidden(t, []*proc{a, b}, bad, good)
}

// TestRestreamToFFmpegAsAForeignRTMPServer: ffmpeg's own RTMP server
// (-listen 1) takes the restream added through the API and writes it to a
// file that has H.264 and AAC and decodes without an error; then the
// target is removed through the API.
func TestRestreamToFFmpegAsAForeignRTMPServer(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.RequireTool(t, "ffprobe")
	const key = "ff-key-5c2e71d0"
	bin := buildBinary(t)
	a := startProc(t, bin, "origin-a", "origin listening", "origin", "-listen", "127.0.0.1:0",
		"-relay-listen", "127.0.0.1:0", "-rtmp-listen", "127.0.0.1:0")
	publishRTMP(t, rtmpAddrOf(t, a), "cam/a", 60)

	ffAddr := testenv.FreeAddr(t)
	out := filepath.Join(t.TempDir(), "got.flv")
	done, stderr := runFFmpeg(t, "-hide_banner", "-nostdin", "-loglevel", "warning", "-listen", "1", "-f", "flv",
		"-i", "rtmp://"+ffAddr+"/live/"+key, "-c", "copy", "-t", "4", "-y", out)
	var added restream.Status
	testenv.WaitFor(t, 20*time.Second, "the target added", func() bool {
		return apiCall(t, a, "POST", "/restreams/{name}", "cam/a", `{"url":"rtmp://`+ffAddr+`/live/`+key+`"}`, &added) == 201
	})
	testenv.WaitFor(t, 20*time.Second, "the restream live", func() bool {
		st, _ := restreamOf(t, a, "cam/a", added.ID)
		return st.State == restream.StateLive
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ffmpeg did not write 4 s")
	}
	probe := exec.Command("ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=codec_name,nb_read_packets", "-of", "csv=p=0", out)
	var perr bytes.Buffer
	probe.Stderr = &perr
	res, err := probe.Output()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, perr.String())
	}
	streams := map[string]int{}
	for _, l := range strings.Fields(string(res)) {
		var codec string
		var n int
		if c, p, ok := strings.Cut(l, ","); ok {
			codec = c
			fmt.Sscan(p, &n)
		}
		streams[codec] = n
	}
	// 4 s: 120 frames at 30 fps, ~187 AAC frames at 48 kHz.
	if streams["h264"] < 100 || streams["aac"] < 150 {
		t.Fatalf("ffmpeg's server got %v, want h264 and aac for 4 s", streams)
	}
	decodeAll(t, out)
	t.Logf("ffmpeg's RTMP server got %v", streams)

	var removed restream.Status
	if code := apiCall(t, a, "DELETE", "/restreams/{name}", "cam/a?id="+added.ID, "", &removed); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if removed.Active || removed.State != restream.StateStopped || removed.Bytes == 0 {
		t.Errorf("removed: %+v", removed)
	}
	assertKeysHidden(t, []*proc{a}, key)
}
