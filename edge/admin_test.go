package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Issue 9, finding 10: /metrics answered anyone; now the admin token or
// loopback (shared/admin), on the edge as on the origin.
func TestEdgeMetricsNeedTheTokenOrLoopback(t *testing.T) {
	n, _ := startEdge(t, Config{Source: newFakeSource()})
	for remote, want := range map[string]int{"203.0.113.7:40000": http.StatusForbidden, "127.0.0.1:40000": http.StatusOK, "[::1]:40000": http.StatusOK} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		n.srv.Handler.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("/metrics from %s: %d, want %d", remote, w.Code, want)
		}
	}
}
