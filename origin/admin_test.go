package origin

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/quiccast/quiccast/shared/admin"
)

// Issue 9, finding 10: /broadcasts (publishers' IP:port) and /metrics
// answered anyone.
func TestAdminRoutesNeedTheTokenOrLoopback(t *testing.T) {
	do := func(h http.Handler, path, remote, token string) (int, string) {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = remote
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	n, _ := startOrigin(t, Config{Pprof: true})
	startControl(t, n, "admin/seen")
	for _, path := range []string{"/broadcasts", "/metrics", "/debug/pprof/"} {
		if code, body := do(n.srv.Handler, path, "203.0.113.7:40000", ""); code != http.StatusForbidden || !strings.Contains(body, "-admin-token") {
			t.Errorf("%s from another host without a token: %d %q", path, code, body)
		}
		if code, _ := do(n.srv.Handler, path, "127.0.0.1:40000", ""); code != http.StatusOK {
			t.Errorf("%s from loopback: %d", path, code)
		}
	}
	if code, body := do(n.srv.Handler, "/healthz", "203.0.113.7:40000", ""); code != http.StatusOK {
		t.Errorf("/healthz is public: %d %q", code, body)
	}

	// With a token: only the token lets in, from anywhere.
	tn, _ := startOrigin(t, Config{Admin: admin.Config{Token: "adm1n"}})
	for _, c := range []struct {
		remote, token string
		want          int
	}{{"203.0.113.7:1", "", 401}, {"127.0.0.1:1", "", 401}, {"203.0.113.7:1", "wrong", 401}, {"203.0.113.7:1", "adm1n", 200}} {
		if code, _ := do(tn.srv.Handler, "/broadcasts", c.remote, c.token); code != c.want {
			t.Errorf("/broadcasts from %s with %q: %d, want %d", c.remote, c.token, code, c.want)
		}
	}

	// With -admin-listen the routes leave the public listener.
	an, _ := startOrigin(t, Config{Admin: admin.Config{Listen: "127.0.0.1:0"}})
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if code := get(fmt.Sprintf("http://%s/metrics", an.Addr())); code != http.StatusNotFound {
		t.Errorf("/metrics on the public listener with -admin-listen: %d", code)
	}
	if code := get(fmt.Sprintf("http://%s/metrics", an.AdminAddr())); code != http.StatusOK {
		t.Errorf("/metrics on -admin-listen: %d", code)
	}
}
