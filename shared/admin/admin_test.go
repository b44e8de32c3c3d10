package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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

// The login form sets a cookie that stands for the token: HttpOnly,
// SameSite=Strict, not the token itself; a wrong token gets the form
// again; the form's "next" cannot send the browser to another site.
func TestLoginCookie(t *testing.T) {
	s, err := New(Config{Token: "s3cret"}, (&testenv.Logs{}).Logger())
	if err != nil {
		t.Fatal(err)
	}
	s.HandleFunc("GET /dashboard", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("dash")) })
	mux := http.NewServeMux()
	s.Mount(mux)
	do := func(r *http.Request) *httptest.ResponseRecorder {
		r.RemoteAddr = "10.0.0.5:1"
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	get := httptest.NewRequest("GET", "/dashboard", nil)
	get.Header.Set("Accept", "text/html,application/xhtml+xml")
	if w := do(get); w.Code != 401 || !strings.Contains(w.Body.String(), `action="/admin/login"`) || !strings.Contains(w.Body.String(), `value="/dashboard"`) {
		t.Fatalf("browser without cookie: %d %s", w.Code, w.Body)
	}
	if w := do(httptest.NewRequest("GET", "/dashboard", nil)); w.Code != 401 || strings.Contains(w.Body.String(), "<form") {
		t.Fatalf("API client without token: %d %s", w.Code, w.Body)
	}
	login := func(token, next string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", LoginPath, strings.NewReader(url.Values{"token": {token}, "next": {next}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return do(r)
	}
	if w := login("wrong", "/dashboard"); w.Code != 401 || !strings.Contains(w.Body.String(), "wrong token") || len(w.Result().Cookies()) != 0 {
		t.Fatalf("wrong token: %d %v", w.Code, w.Result().Cookies())
	}
	w := login("s3cret", "/dashboard")
	cs := w.Result().Cookies()
	if w.Code != 303 || w.Header().Get("Location") != "/dashboard" || len(cs) != 1 {
		t.Fatalf("login: %d %q %v", w.Code, w.Header().Get("Location"), cs)
	}
	c := cs[0]
	if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Value == "s3cret" || strings.Contains(c.Value, "s3cret") {
		t.Errorf("cookie %+v", c)
	}
	with := httptest.NewRequest("GET", "/dashboard", nil)
	with.AddCookie(c)
	if w := do(with); w.Code != 200 || w.Body.String() != "dash" {
		t.Errorf("with the cookie: %d %s", w.Code, w.Body)
	}
	forged := httptest.NewRequest("GET", "/dashboard", nil)
	forged.AddCookie(&http.Cookie{Name: CookieName, Value: "s3cret"})
	if w := do(forged); w.Code != 401 {
		t.Errorf("the token as cookie: %d", w.Code)
	}
	// Guessing is bounded: after 10 wrong tokens in a second, 429.
	codes := map[int]int{}
	for range 15 {
		codes[login("guess", "/dashboard").Code]++
	}
	if codes[401] > maxLoginFailures || codes[429] < 5 {
		t.Errorf("15 wrong tokens at once: %v, want at most 10 tried", codes)
	}
	s.fails = failures{} // the next second
	for _, next := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example"} {
		if w := login("s3cret", next); w.Header().Get("Location") != "/dashboard" {
			t.Errorf("next %q went to %q", next, w.Header().Get("Location"))
		}
	}
}
