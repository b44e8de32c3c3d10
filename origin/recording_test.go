package origin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/admin"
	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
)

// The admin API starts and stops a recording of a broadcast whose name has
// a "/", refuses unknown and doubled requests and, below the free-space
// floor, says why; playback answers the play token only.
func TestRecordingThroughTheAdminAPI(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Int64
	free.Store(1 << 40)
	n, logs := startOrigin(t, Config{
		Admin: admin.Config{Token: "adm1n"},
		Auth:  auth.FromConfig("", "pl4y", ""),
		Record: record.Config{Dir: dir, MinFree: 1 << 30,
			FreeSpace: func(string) (int64, error) { return free.Load(), nil }},
	})
	do := func(method, path, token string) (int, string) {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = "203.0.113.7:1"
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		n.srv.Handler.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	const path = "/api/v1/recordings/cams/door"
	if code, _ := do("POST", path, ""); code != http.StatusUnauthorized {
		t.Fatalf("POST without the admin token: %d", code)
	}
	if code, body := do("POST", path, "adm1n"); code != http.StatusNotFound || !strings.Contains(body, `no live broadcast \"cams/door\"`) {
		t.Fatalf("POST for a broadcast not live: %d %s", code, body)
	}
	startControl(t, n, "cams/door")
	testenv.WaitFor(t, 5*time.Second, "the broadcast", func() bool { _, ok := n.Lookup("cams/door"); return ok })
	code, body := do("POST", path, "adm1n")
	var st record.Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusCreated || err != nil || !st.Active || st.Broadcast != "cams/door" {
		t.Fatalf("POST: %d %s", code, body)
	}
	if code, _ := do("POST", path, "adm1n"); code != http.StatusConflict {
		t.Fatalf("second POST: %d", code)
	}
	testenv.WaitFor(t, 20*time.Second, "two segments", func() bool { return n.Recorder().List()[0].Segments >= 2 })
	if code, body := do("DELETE", path, "adm1n"); code != http.StatusOK || !strings.Contains(body, `"state":"stopped"`) {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _ := do("DELETE", path, "adm1n"); code != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", code)
	}

	// Playback: public routes, the play token.
	if code, _ := do("GET", "/recordings/list?name=cams/door", ""); code != http.StatusUnauthorized {
		t.Fatalf("list without the play token: %d", code)
	}
	code, body = do("GET", "/recordings/list?name=cams/door&token=pl4y", "")
	if code != 200 || !strings.Contains(body, `"name":"cams/door"`) || !strings.Contains(body, `"ended":true`) {
		t.Fatalf("list: %d %s", code, body)
	}

	// Below the floor: refused, logged, counted, and the API says so.
	free.Store(1 << 20)
	code, body = do("POST", path, "adm1n")
	if code != http.StatusInsufficientStorage || !strings.Contains(body, "below the floor") {
		t.Fatalf("POST below the floor: %d %s", code, body)
	}
	if len(logs.Lines("recording refused: disk below the free-space floor")) != 1 {
		t.Fatal("no log line for the refusal")
	}
	if got := testenv.Metric(t, n.Registry(), "quiccast_record_refused_total"); got != 1 {
		t.Fatalf("refused metric %v", got)
	}
	if code, body := do("GET", "/api/v1/recordings", "adm1n"); code != 200 || !strings.Contains(body, "refused: ") {
		t.Fatalf("recordings: %d %s", code, body)
	}
}

// A recording asked of an origin that does not hold the broadcast travels
// through the registry to the one that does.
func TestRecordingRequestReachesTheHoldingOrigin(t *testing.T) {
	rds := testenv.StartRedis(t)
	open := func(id string) *registry.Registry {
		reg, err := registry.Open(context.Background(), registry.Options{URL: rds.URL(), NodeID: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
		return reg
	}
	a, _ := startOrigin(t, Config{Registry: open("origin-a"), Record: record.Config{Dir: t.TempDir()}})
	b, _ := startOrigin(t, Config{Registry: open("origin-b"), Record: record.Config{Dir: t.TempDir()}})
	startControl(t, a, "hall")
	testenv.WaitFor(t, 10*time.Second, "the broadcast in the registry", func() bool {
		_, err := b.cluster.reg.Lookup(context.Background(), "hall")
		return err == nil
	})
	do := func(method string) (int, string) {
		r := httptest.NewRequest(method, "/api/v1/recordings/hall", nil)
		r.RemoteAddr = "127.0.0.1:1" // loopback: no admin token configured
		w := httptest.NewRecorder()
		b.srv.Handler.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	if code, body := do("POST"); code != http.StatusAccepted || !strings.Contains(body, `"node":"origin-a"`) {
		t.Fatalf("POST on origin b: %d %s", code, body)
	}
	testenv.WaitFor(t, 10*time.Second, "origin a recording", func() bool { return recording(a, "hall") })
	if len(b.Recorder().List()) != 0 {
		t.Fatalf("origin b records: %+v", b.Recorder().List())
	}
	if code, body := do("DELETE"); code != http.StatusAccepted {
		t.Fatalf("DELETE on origin b: %d %s", code, body)
	}
	testenv.WaitFor(t, 10*time.Second, "origin a's recording stopped", func() bool { return !recording(a, "hall") })
}

// recording reports whether n records name now.
func recording(n *Node, name string) bool {
	for _, st := range n.Recorder().List() {
		if st.Broadcast == name && st.Active {
			return true
		}
	}
	return false
}
