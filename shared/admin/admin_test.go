package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/quiccast/quiccast/shared/testenv"
)

func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, c := range []struct {
		token, remote, auth string
		want                int
	}{
		{"", "127.0.0.1:1", "", 200},
		{"", "[::1]:1", "", 200},
		{"", "10.0.0.5:1", "", 403},
		{"", "10.0.0.5:1", "Bearer x", 403},
		{"t", "10.0.0.5:1", "Bearer t", 200},
		{"t", "10.0.0.5:1", "bearer t", 200},
		{"t", "127.0.0.1:1", "", 401},
		{"t", "10.0.0.5:1", "Bearer tt", 401},
		{"t", "10.0.0.5:1", "Basic t", 401},
	} {
		s, err := New(Config{Token: c.token}, (&testenv.Logs{}).Logger())
		if err != nil {
			t.Fatal(err)
		}
		s.Handle("GET /metrics", ok)
		mux := http.NewServeMux()
		s.Mount(mux)
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = c.remote
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%+v: %d", c, w.Code)
		}
	}
}
