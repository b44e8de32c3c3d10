package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/api/apitest"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
)

// routes records the patterns Routes adds.
type routes []string

func (r *routes) HandleFunc(p string, _ func(http.ResponseWriter, *http.Request)) { *r = append(*r, p) }

// Every route the API serves is in openapi.yaml and every operation there
// is served: the document cannot drift from the code.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	d := apitest.Doc(t)
	var served routes
	api.New(nil, nil).Routes(&served)
	var documented []string
	for path, item := range d.Paths.Map() {
		for method := range item.Operations() {
			p := strings.ReplaceAll(path, "{name}", "{name...}")
			documented = append(documented, method+" "+api.Prefix+p)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if !slices.Equal(served, documented) {
		t.Errorf("served %q\ndocumented %q", served, documented)
	}
}

type client struct {
	t   *testing.T
	url string
}

// do calls the API and checks the answer against openapi.yaml (path is
// the document's template; name fills {name}).
func (c client) do(method, path, name, body string) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, c.url+api.Prefix+strings.ReplaceAll(path, "{name}", name), rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	apitest.Check(c.t, method, path, resp.StatusCode, resp.Header, b)
	return resp.StatusCode, b
}

// The API answers from what nodes report to a real Redis, in the
// documented shapes; drop bars the name and sends the event, kick too.
// openRegistries returns an opener of registries on one real Redis, one
// node id each.
func openRegistries(t *testing.T) func(id string) *registry.Registry {
	rds := testenv.StartRedis(t)
	return func(id string) *registry.Registry {
		r, err := registry.Open(t.Context(), registry.Options{URL: rds.URL(), NodeID: id, Logger: (&testenv.Logs{}).Logger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
}

func TestAPIOnRealRedis(t *testing.T) {
	ctx := t.Context()
	open := openRegistries(t)
	origin, edge, self := open("origin-a"), open("edge-1"), open("api")
	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		api.New(self, (&testenv.Logs{}).Logger()).Routes(mux)
		return mux
	}())
	defer srv.Close()
	c := client{t, srv.URL}

	if st, b := c.do("GET", "/broadcasts", "", ""); st != 200 || string(b) != "{\"broadcasts\":[]}\n" {
		t.Fatalf("empty list: %d %s", st, b)
	}
	if _, err := origin.Claim(ctx, registry.Broadcast{Name: "cam/a", Relay: "o:1", Publishing: true}, false); err != nil {
		t.Fatal(err)
	}
	if err := origin.Report(ctx, registry.Report{Node: registry.NodeInfo{Role: "origin", URL: "http://o:7000", Started: time.Now()},
		Publishers: map[string]registry.PublisherInfo{"cam/a": {Protocol: "rtmp", Remote: "10.0.0.9:5000", Codecs: []string{"avc1.64001f", "mp4a.40.2"}, Width: 1280, Height: 720, Bitrate: 2_500_000, Groups: 12}}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := edge.Report(ctx, registry.Report{Node: registry.NodeInfo{Role: "edge", URL: "http://e:8080", Started: time.Now(), Viewers: 4},
		Viewers: map[string]map[string]int{"cam/a": {"ws": 3, "wt": 1}}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st, b := c.do("GET", "/broadcasts/{name}", "cam/a", "")
	var got api.Broadcast
	if st != 200 || json.Unmarshal(b, &got) != nil {
		t.Fatalf("get: %d %s", st, b)
	}
	if got.Origin != "origin-a" || got.Publisher == nil || got.Publisher.Width != 1280 || got.Viewers.Total != 4 ||
		got.Viewers.ByTransport["wt"] != 1 || got.Viewers.ByNode["edge-1"]["ws"] != 3 {
		t.Errorf("get = %+v", got)
	}
	if st, b := c.do("GET", "/broadcasts", "", ""); st != 200 || !strings.Contains(string(b), `"name":"cam/a"`) {
		t.Errorf("list: %d %s", st, b)
	}
	if st, b := c.do("GET", "/nodes", "", ""); st != 200 || !strings.Contains(string(b), `"id":"edge-1"`) || !strings.Contains(string(b), `"role":"origin"`) {
		t.Errorf("nodes: %d %s", st, b)
	}
	if st, _ := c.do("GET", "/broadcasts/{name}", "nobody", ""); st != 404 {
		t.Errorf("unknown broadcast: %d", st)
	}
	if st, _ := c.do("GET", "/broadcasts/{name}", "bad%20name", ""); st != 400 {
		t.Errorf("bad name: %d", st)
	}

	events := make(chan registry.Event, 16)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go edge.Follow(fctx, func(ev registry.Event) { events <- ev })
	testenv.WaitFor(t, 5*time.Second, "the follower", func() bool {
		self.PublishEvent(ctx, registry.Event{Type: registry.EventNodeUp})
		select {
		case <-events:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	for _, bad := range []string{`{"barSeconds":-1}`, `{"barSeconds":"x"}`, `{"bar":3}`, `{"barSeconds":1e9}`} {
		if st, _ := c.do("POST", "/drop/{name}", "cam/a", bad); st != 400 {
			t.Errorf("drop %s: %d, want 400", bad, st)
		}
	}
	if st, _ := c.do("POST", "/drop/{name}", "nobody", ""); st != 404 {
		t.Errorf("drop of nothing: %d", st)
	}
	st, b = c.do("POST", "/drop/{name}", "cam/a", `{"barSeconds":30}`)
	if st != 202 || !strings.Contains(string(b), `"node":"origin-a"`) {
		t.Fatalf("drop: %d %s", st, b)
	}
	if left, err := origin.Barred(ctx, "cam/a"); err != nil || left < 25*time.Second {
		t.Errorf("barred %v %v after a drop with barSeconds 30", left, err)
	}
	if st, _ := c.do("POST", "/kick/{name}", "cam/a", ""); st != 202 {
		t.Errorf("kick: %d", st)
	}
	want := []string{"drop cam/a 30s", "kick cam/a 0s"}
	var seen []string
	for len(seen) < len(want) {
		select {
		case ev := <-events:
			if ev.Type == registry.EventDrop || ev.Type == registry.EventKick {
				seen = append(seen, ev.Type+" "+ev.Broadcast+" "+ev.Bar.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("events %q, want %q", seen, want)
		}
	}
	if !slices.Equal(seen, want) {
		t.Errorf("events %q, want %q", seen, want)
	}
}
