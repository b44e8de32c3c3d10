package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/api/apitest"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/publish"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

const adminToken = "adm1n"

// apiCall calls a node's API with the admin token and checks the answer
// against openapi.yaml (path is the document's template, name fills it).
func apiCall(t *testing.T, node *proc, method, path, name, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://"+node.field("addr")+api.Prefix+strings.ReplaceAll(path, "{name}", name), rd)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	apitest.Check(t, method, path, resp.StatusCode, resp.Header, b)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func apiBroadcast(t *testing.T, node *proc, name string) (api.Broadcast, int) {
	var b api.Broadcast
	st := apiCall(t, node, "GET", "/broadcasts/{name}", name, "", &b)
	return b, st
}

// TestClusterAPI runs the real binary as 2 origins and 2 edges on a real
// Redis, publishes with ffmpeg to origin A and watches on both edges. The
// API of every node sees the same broadcast with its publisher and its
// viewers per edge; a dead edge's viewers vanish; a kick asked of origin
// B closes the viewers on the edges with 4410; a drop with a bar asked of
// edge 1 closes the publisher on origin A with 4423, and origin B refuses
// the name while the bar lasts.
func TestClusterAPI(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	oa := node("origin", "origin-a", "-rtmp-listen", "", "-admin-token", adminToken)
	ob := node("origin", "origin-b", "-rtmp-listen", "127.0.0.1:0", "-admin-token", adminToken)
	e1, e2 := node("edge", "edge-1", "-admin-token", adminToken), node("edge", "edge-2", "-admin-token", adminToken)

	// The admin token guards the API.
	if resp, err := http.Get("http://" + e1.field("addr") + api.Prefix + "/nodes"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("API without the token: %v %v", resp, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	pub := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/a", oa.field("addr")), sent, 500*time.Millisecond)
	testenv.WaitFor(t, 15*time.Second, "cam/a in the API", func() bool {
		_, st := apiBroadcast(t, ob, "cam/a")
		return st == 200
	})
	var wg sync.WaitGroup
	var ws []*watcher
	for i := range 5 {
		e := []*proc{e1, e1, e1, e2, e2}[i]
		ws = append(ws, startWatcher(ctx, &wg, "cam/a", fmt.Sprintf("ws://%s/ws/cam/a", e.field("addr"))))
	}
	testenv.WaitFor(t, 30*time.Second, "2 groups at every viewer", func() bool {
		for _, w := range ws {
			if w.keyframes() < 2 {
				return false
			}
		}
		return true
	})
	// Every node answers the same, from the reports.
	var b api.Broadcast
	for _, n := range []*proc{oa, ob, e1, e2} {
		testenv.WaitFor(t, 10*time.Second, "viewers and publisher reported, asked of "+n.name, func() bool {
			b, _ = apiBroadcast(t, n, "cam/a")
			return b.Viewers.Total == 5 && b.Publisher != nil && b.Publisher.Bitrate > 0 && b.Publisher.Groups > 0
		})
	}
	if b.Origin != "origin-a" || !b.Publishing || b.Viewers.ByNode["edge-1"]["ws"] != 3 || b.Viewers.ByNode["edge-2"]["ws"] != 2 ||
		b.Viewers.ByTransport["ws"] != 5 || b.Publisher.Protocol != "websocket" || b.Publisher.Width != 320 || b.Publisher.Height != 180 ||
		len(b.Publisher.Codecs) == 0 || !strings.HasPrefix(b.Publisher.Codecs[0], "avc1.") || !strings.HasPrefix(b.Publisher.Remote, "127.0.0.1:") {
		t.Errorf("cam/a = %+v publisher %+v", b, b.Publisher)
	}
	var list struct{ Broadcasts []api.Broadcast }
	if st := apiCall(t, e2, "GET", "/broadcasts", "", "", &list); st != 200 || len(list.Broadcasts) != 1 || list.Broadcasts[0].Name != "cam/a" {
		t.Errorf("list: %d %+v", st, list)
	}
	if _, st := apiBroadcast(t, e1, "cam/none"); st != 404 {
		t.Errorf("unknown broadcast: %d", st)
	}
	var nodes struct{ Nodes []api.Node }
	if st := apiCall(t, oa, "GET", "/nodes", "", "", &nodes); st != 200 || len(nodes.Nodes) != 4 {
		t.Fatalf("nodes: %d %+v", st, nodes)
	}
	for i, want := range []string{"edge-1 edge", "edge-2 edge", "origin-a origin", "origin-b origin"} {
		n := nodes.Nodes[i]
		if n.ID+" "+n.Role != want || n.Version == "" || !strings.HasPrefix(n.URL, "http://") || n.Uptime <= 0 {
			t.Errorf("node %d = %+v, want %s", i, n, want)
		}
	}

	var act, act0 api.Action
	// An RTMP publisher on origin B, dropped (no bar) through origin A:
	// ffmpeg is told 4410 and ends; the broadcast waits for a publisher.
	ffmpeg, ffErr := runFFmpeg(t, append(ffmpegArgs(120, 15), "-f", "flv", "rtmp://"+ob.logField("RTMP ingest listening", "addr")+"/live/cam/r")...)
	testenv.WaitFor(t, 15*time.Second, "the RTMP publisher in the API", func() bool {
		r, _ := apiBroadcast(t, oa, "cam/r")
		return r.Publisher != nil && r.Publisher.Protocol == "rtmp" && r.Origin == "origin-b" && r.Publisher.Bitrate > 0
	})
	if st := apiCall(t, oa, "POST", "/drop/{name}", "cam/r", "", &act0); st != 202 || act0.Node != "origin-b" || act0.Bar != 0 {
		t.Fatalf("drop cam/r: %d %+v", st, act0)
	}
	select {
	case <-ffmpeg:
	case <-time.After(10 * time.Second):
		t.Fatal("ffmpeg still publishing 10 s after the drop")
	}
	if ob.count("msg", "publisher dropped", "broadcast", "cam/r", "code", "4410") != 1 {
		t.Errorf("origin B did not drop the RTMP publisher with 4410; ffmpeg said %s", ffErr)
	}
	testenv.WaitFor(t, 10*time.Second, "cam/r waiting for a publisher", func() bool {
		r, st := apiBroadcast(t, e1, "cam/r")
		return st == 200 && !r.Publishing && r.Publisher == nil
	})

	// A dead edge's viewers and the node itself vanish within the TTL.
	e2.cmd.Process.Signal(syscall.SIGKILL)
	testenv.WaitFor(t, 10*time.Second, "edge-2's report to expire", func() bool {
		b, _ = apiBroadcast(t, e1, "cam/a")
		apiCall(t, e1, "GET", "/nodes", "", "", &nodes)
		return b.Viewers.Total == 3 && len(b.Viewers.ByNode) == 1 && len(nodes.Nodes) == 3
	})

	// Kick, asked of origin B: edge 1 closes its viewers with 4410.
	if st := apiCall(t, ob, "POST", "/kick/{name}", "cam/a", "", &act); st != 202 || act.Action != "kick" {
		t.Fatalf("kick: %d %+v", st, act)
	}
	testenv.WaitFor(t, 10*time.Second, "edge 1's viewers closed with 4410", func() bool {
		for _, w := range ws[:3] {
			_, _, err := w.snapshot()
			var c *viewer.Closed
			if !errors.As(err, &c) || c.Code != wire.CodeRemoved {
				return false
			}
		}
		return true
	})
	testenv.WaitFor(t, 10*time.Second, "no viewers reported", func() bool {
		b, _ = apiBroadcast(t, oa, "cam/a")
		return b.Viewers.Total == 0
	})

	// Drop with a bar, asked of edge 1: the publisher on origin A is
	// closed with 4423 and stops; origin B refuses the name.
	if st := apiCall(t, e1, "POST", "/drop/{name}", "cam/a", `{"barSeconds":60}`, &act); st != 202 || act.Node != "origin-a" || act.Bar != 60 {
		t.Fatalf("drop: %d %+v", st, act)
	}
	select {
	case err := <-pub:
		var r *publish.Refusal
		if !errors.As(err, &r) || !strings.Contains(err.Error(), "(4423)") {
			t.Fatalf("publisher ended with %v, want a refusal with 4423", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publisher still running 10 s after the drop")
	}
	err := <-runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/a", ob.field("addr")), &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "(4423)") || !strings.Contains(err.Error(), "barred") {
		t.Fatalf("publish to origin B while barred: %v, want 4423", err)
	}
	if oa.count("msg", "publisher dropped by an operator", "broadcast", "cam/a") != 1 {
		t.Error("origin A did not log the drop")
	}
	cancel()
	wg.Wait()
}

// TestDashboardInChromium opens origin B's dashboard (a node that holds
// neither the broadcast nor the viewers) in Chromium, logs in through the
// form, and sees the broadcast of origin A with its viewers on the edge,
// a chart over several polls and a playing, muted preview from the edge;
// artifacts/dashboard.png is the screenshot. The token never shows in a
// URL or in the nodes' logs.
func TestDashboardInChromium(t *testing.T) {
	requireBrowser(t)
	testenv.RequireTool(t, "ffmpeg")
	rds := testenv.StartRedis(t)
	bin := buildBinary(t)
	node := clusterNode(t, bin, rds)
	oa := node("origin", "origin-a", "-rtmp-listen", "", "-admin-token", adminToken)
	ob := node("origin", "origin-b", "-rtmp-listen", "", "-admin-token", adminToken)
	e1 := node("edge", "edge-1", "-admin-token", adminToken)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := runPublisher(ctx, fmt.Sprintf("ws://%s/publish/cam/a", oa.field("addr")), &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}, 500*time.Millisecond)
	testenv.WaitFor(t, 15*time.Second, "cam/a in the API", func() bool {
		_, st := apiBroadcast(t, e1, "cam/a")
		return st == 200
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	ws := []*watcher{}
	for range 2 {
		ws = append(ws, startWatcher(ctx, &wg, "cam/a", fmt.Sprintf("ws://%s/ws/cam/a", e1.field("addr"))))
	}
	testenv.WaitFor(t, 30*time.Second, "the viewers to play", func() bool { return ws[0].keyframes() > 0 && ws[1].keyframes() > 0 })

	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	png, _ := filepath.Abs(filepath.Join("artifacts", "dashboard.png"))
	cmd := exec.CommandContext(ctx, "node", "test/browser/dashboard.mjs", "http://"+ob.field("addr")+api.DashboardPath, adminToken, "cam/a", png, "4",
		"http://"+e1.field("addr")+"/watch/cam/a?transport=websocket")
	cmd.Dir = "client-js"
	cmd.Env = append(os.Environ(), fmt.Sprintf("QC_WATCH_PLAY_TIMEOUT=%d", int(browserDeadline/time.Second)))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dashboard.mjs: %v\n%s\n%s", err, stderr.String(), stdout.String())
	}
	var rep struct {
		URLs        []string
		LoginStatus int
		Cookie      *struct {
			HTTPOnly bool `json:"httpOnly"`
			SameSite string
			IsToken  bool
		}
		Preview struct {
			URL           string
			CurrentTime   float64
			Muted, Paused bool
			Width, Height int
		}
		Card struct {
			Viewers, Points, Polyline, Nodes int
			Facts, ViewersText               string
		}
		Kick *struct{ Answer, Watch string }
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	t.Logf("dashboard: %+v", rep)
	if rep.LoginStatus != 401 || rep.Cookie == nil || !rep.Cookie.HTTPOnly || rep.Cookie.SameSite != "Strict" || rep.Cookie.IsToken {
		t.Errorf("login: status %d, cookie %+v", rep.LoginStatus, rep.Cookie)
	}
	if rep.Card.Viewers != 2 || rep.Card.Points < 4 || rep.Card.Polyline != rep.Card.Points || rep.Card.Nodes != 3 ||
		!strings.Contains(rep.Card.Facts, "origin origin-a") || !strings.Contains(rep.Card.Facts, "320×180") || !strings.Contains(rep.Card.ViewersText, "edge-1: 2 ws") {
		t.Errorf("card: %+v", rep.Card)
	}
	if !strings.HasPrefix(rep.Preview.URL, "http://"+e1.field("addr")+"/watch/cam/a") || !rep.Preview.Muted || rep.Preview.Paused || rep.Preview.Width != 320 {
		t.Errorf("preview: %+v", rep.Preview)
	}
	// The card's kick button, on origin B's dashboard, stopped the
	// player on the edge's watch page with 4410: it did not come back.
	if rep.Kick == nil || rep.Kick.Answer != "kick cam/a: 202" || !strings.Contains(rep.Kick.Watch, "4410") {
		t.Errorf("kick from the dashboard: %+v", rep.Kick)
	}
	if e1.count("msg", "viewers kicked by an operator", "broadcast", "cam/a") != 1 {
		t.Error("edge 1 did not log the kick")
	}
	for _, p := range []*proc{oa, ob, e1} {
		p.mu.Lock()
		for _, l := range p.logs {
			if strings.Contains(fmt.Sprint(l), adminToken) {
				t.Errorf("%s logged the admin token: %v", p.name, l)
			}
		}
		p.mu.Unlock()
	}
	for _, u := range rep.URLs {
		if strings.Contains(u, adminToken) {
			t.Errorf("the token in a URL: %s", u)
		}
	}
	cancel()
	<-pub
}

// logField returns field k of the first log line with message msg.
func (p *proc) logField(msg, k string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if l["msg"] == msg {
			s, _ := l[k].(string)
			return s
		}
	}
	return ""
}

// In the demo (origin and edge in one process, one embedded registry,
// the edge reading the origin directly) the edge's API lists the built-in
// broadcast with its viewer, both nodes report under their own ids, and
// a kick reaches the edge, which follows the registry itself.
func TestDemoAPI(t *testing.T) {
	d, logs := startDemo(t, "demo")
	get := func(path string, out any) int {
		t.Helper()
		resp, err := http.Get("http://" + d.edge.Addr().String() + api.Prefix + path) // loopback: no token
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			json.Unmarshal(b, out)
		}
		return resp.StatusCode
	}
	var b api.Broadcast
	testenv.WaitFor(t, 15*time.Second, "the demo broadcast in the API", func() bool {
		return get("/broadcasts/demo", &b) == 200 && b.Publishing
	})
	c, err := viewer.Dial(t.Context(), fmt.Sprintf("ws://%s/ws/demo", d.edge.Addr()), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testenv.WaitFor(t, 15*time.Second, "the demo's viewer in the API", func() bool {
		return get("/broadcasts/demo", &b) == 200 && b.Viewers.Total == 1 && b.Publisher != nil
	})
	var nodes struct{ Nodes []api.Node }
	if get("/nodes", &nodes) != 200 || len(nodes.Nodes) != 2 || nodes.Nodes[0].Role == nodes.Nodes[1].Role {
		t.Fatalf("nodes: %+v", nodes)
	}
	resp, err := http.Post("http://"+d.edge.Addr().String()+api.Prefix+"/kick/demo", "", nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("kick: %v %v", resp, err)
	}
	resp.Body.Close()
	for {
		_, err := c.Next(10 * time.Second)
		if err == nil {
			continue
		}
		var cl *viewer.Closed
		if !errors.As(err, &cl) || cl.Code != wire.CodeRemoved {
			t.Fatalf("viewer ended with %v, want 4410", err)
		}
		break
	}
	if len(logs.Lines("viewers kicked by an operator")) != 1 {
		t.Error("kick not logged")
	}
}
