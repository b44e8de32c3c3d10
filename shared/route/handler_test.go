package route

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
)

// GET /edge on a real Redis: the reported edges in order, the region from
// the header, 400 for a bad name, 503 with Retry-After when no edge takes
// viewers, and no registry read per request within a second.
func TestRouterAnswersFromTheReports(t *testing.T) {
	rds := testenv.StartRedis(t)
	reg, err := registry.Open(t.Context(), registry.Options{URL: rds.URL(), NodeID: "router", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	srv := httptest.NewServer(New(reg, (&testenv.Logs{}).Logger()))
	defer srv.Close()
	ask := func(query string, hdr map[string]string) (int, http.Header, Answer) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+Path+"?"+query, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a Answer
		json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, resp.Header, a
	}
	if st, h, _ := ask("broadcast=cam/a", nil); st != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("no edges: %d %v", st, h)
	}
	report := func(n registry.NodeInfo, viewers map[string]map[string]int) {
		if err := reg.Report(t.Context(), registry.Report{Node: n, Viewers: viewers}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	report(registry.NodeInfo{ID: "e1", Role: "edge", URL: "http://e1", Viewers: 5, MaxViewers: 100, Region: "us"}, map[string]map[string]int{"cam/a": {"ws": 5}})
	report(registry.NodeInfo{ID: "e2", Role: "edge", URL: "http://e2", Viewers: 1, MaxViewers: 100, Region: "eu"}, nil)
	time.Sleep(fresh) // the empty answer above is cached for a second
	st, h, a := ask("broadcast=cam/a", nil)
	if st != 200 || h.Get("Cache-Control") != "no-store" || len(a.Edges) != 2 || a.Edges[0].ID != "e1" || !a.Edges[0].Pulling || a.Edges[1].URL != "http://e2" {
		t.Fatalf("cam/a: %d %+v", st, a)
	}
	if _, _, a := ask("broadcast=cam/b", nil); len(a.Edges) != 2 || a.Edges[0].ID != "e2" {
		t.Fatalf("cam/b (nobody pulls it): %+v", a)
	}
	if _, _, a := ask("broadcast=cam/a", map[string]string{RegionHeader: "eu"}); a.Edges[0].ID != "e2" {
		t.Fatalf("region eu by header: %+v", a)
	}
	if _, _, a := ask("broadcast=cam/a&region=us", map[string]string{RegionHeader: "eu"}); a.Edges[0].ID != "e1" {
		t.Fatalf("region us by query over the header: %+v", a)
	}
	for _, q := range []string{"", "broadcast=../x", "broadcast=a&region=" + strings.Repeat("x", 65)} {
		if st, _, _ := ask(q, nil); st != 400 {
			t.Errorf("%q: %d, want 400", q, st)
		}
	}
}
