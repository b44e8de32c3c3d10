// Package admin is a node's operator surface: /metrics, GET /broadcasts,
// /debug/pprof/, the cluster API (/api/v1/…) and the dashboard. Its routes
// answer a request that carries the admin token (Authorization: Bearer, or
// the cookie the login form at POST /admin/login sets), or, without a
// token configured, only clients on loopback. They are served on the
// node's public listener or, with -admin-listen, on a listener of their
// own and not on the public one.
package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/serve"
)

// Config is where the admin routes are served and what they require.
type Config struct {
	// Listen is a separate HTTP address for the admin routes; empty
	// serves them on the node's public listener.
	Listen string
	// Token is the admin credential (Authorization: Bearer); empty lets
	// only loopback clients in.
	Token string
}

// Flags declares -admin-listen and -admin-token (env QC_ADMIN_TOKEN).
func (c *Config) Flags(s *config.Set) {
	s.String(&c.Listen, "admin-listen", "", "separate HTTP address for /metrics, /broadcasts and /debug/pprof/ (then not on -listen); empty: on -listen")
	s.GlobalString(&c.Token, "admin-token", "", "token for /metrics, /broadcasts and /debug/pprof/ (Authorization: Bearer); empty: those answer loopback clients only")
}

// Surface holds the admin routes of one node.
type Surface struct {
	cfg    Config
	fails  failures // wrong tokens at the login form
	log    *slog.Logger
	routes []route
	ln     net.Listener
	srv    *http.Server
}

type route struct {
	pattern string
	h       http.Handler
}

// New binds -admin-listen when it is set, so Addr works at once.
func New(cfg Config, log *slog.Logger) (*Surface, error) {
	s := &Surface{cfg: cfg, log: log}
	// The login form's target: the one admin route without the guard.
	s.routes = append(s.routes, route{"POST " + LoginPath, http.HandlerFunc(s.login)})
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("admin listen %s: %w", cfg.Listen, err)
		}
		s.ln = ln
		if cfg.Token == "" && !loopback(ln.Addr().String()) {
			log.Warn("admin routes on -admin-listen answer loopback clients only: set -admin-token to reach them from other hosts", "addr", ln.Addr().String())
		}
	}
	return s, nil
}

// Handle adds an admin route (a ServeMux pattern such as "GET /metrics").
func (s *Surface) Handle(pattern string, h http.Handler) {
	s.routes = append(s.routes, route{pattern, s.guard(h)})
}

// HandleFunc adds an admin route from a function.
func (s *Surface) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(pattern, http.HandlerFunc(h))
}

// Mount puts the admin routes on the public mux unless they have a
// listener of their own.
func (s *Surface) Mount(public *http.ServeMux) {
	if s.ln != nil {
		return
	}
	for _, r := range s.routes {
		public.Handle(r.pattern, r.h)
	}
}

// Addr is the admin listener's address, or nil when the routes are on the
// public listener.
func (s *Surface) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Start serves the separate admin listener, if any, until Close.
func (s *Surface) Start() {
	if s.ln == nil {
		return
	}
	mux := http.NewServeMux()
	for _, r := range s.routes {
		mux.Handle(r.pattern, r.h)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.log.Info("admin listening", "addr", s.ln.Addr().String(), "token", s.cfg.Token != "")
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "err", err)
		}
	}()
}

// Close stops the separate admin listener.
func (s *Surface) Close() {
	switch {
	case s.srv != nil:
		_ = serve.Shutdown(s.srv, time.Second)
	case s.ln != nil:
		s.ln.Close()
	}
}

// guard lets in a request with the admin token, or without a token
// configured, one from loopback.
func (s *Surface) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token != "" {
			if !s.authorized(r) {
				if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
					s.loginForm(w, r.URL.Path, "")
					return
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="quiccast admin"`)
				http.Error(w, "admin route: send the admin token as Authorization: Bearer", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		if !loopback(r.RemoteAddr) {
			http.Error(w, "admin route: answers loopback clients only; set -admin-token (then send Authorization: Bearer) to reach it from elsewhere", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoginPath is where the login form posts the admin token; CookieName is
// the cookie it sets, good for CookieMaxAge.
const (
	LoginPath    = "/admin/login"
	CookieName   = "qc_admin"
	CookieMaxAge = 12 * time.Hour
)

// authorized reports whether r carries the admin token, as a bearer token
// or as the login cookie.
func (s *Surface) authorized(r *http.Request) bool {
	if got, ok := bearer(r); ok {
		return auth.Equal(got, s.cfg.Token) == 1
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return hmac.Equal([]byte(c.Value), []byte(s.cookieValue()))
	}
	return false
}

// cookieValue stands for the token in the browser: a MAC of it, so the
// cookie is no copy of the token (it is a credential all the same, and
// HttpOnly, SameSite=Strict: no other site's page can send it).
func (s *Surface) cookieValue() string {
	m := hmac.New(sha256.New, []byte(s.cfg.Token))
	m.Write([]byte("quiccast admin cookie v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// login takes the form's token; a right one sets the cookie and goes back
// to the page the form was shown for. The token travels in the POST body,
// never in a URL, so no access log or browser history keeps it.
func (s *Surface) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	next := r.PostFormValue("next")
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		next = "/dashboard"
	}
	if s.cfg.Token == "" {
		http.Redirect(w, r, next, http.StatusSeeOther) // loopback only: nothing to log in to
		return
	}
	if !s.fails.allow(time.Now()) {
		http.Error(w, "too many wrong tokens; try again in a second", http.StatusTooManyRequests)
		return
	}
	if auth.Equal(r.PostFormValue("token"), s.cfg.Token) != 1 {
		s.fails.add(time.Now())
		s.log.Warn("admin login refused: wrong token", "remote", r.RemoteAddr)
		s.loginForm(w, next, "wrong token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.cookieValue(), Path: "/", MaxAge: int(CookieMaxAge.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	s.log.Info("admin login", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// failures bounds guessing at the login form: after maxLoginFailures
// wrong tokens in a second, every attempt is refused (429) until the
// second is over.
type failures struct {
	mu    sync.Mutex
	start time.Time
	n     int
}

const maxLoginFailures = 10

func (f *failures) allow(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.start) >= time.Second {
		f.start, f.n = now, 0
	}
	return f.n < maxLoginFailures
}

func (f *failures) add(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.start) >= time.Second {
		f.start, f.n = now, 0
	}
	f.n++
}

//go:embed login.html
var loginHTML string

var loginTmpl = template.Must(template.New("login").Parse(loginHTML))

// loginForm answers 401 with the form that posts the token to LoginPath.
func (s *Surface) loginForm(w http.ResponseWriter, next, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(http.StatusUnauthorized)
	_ = loginTmpl.Execute(w, map[string]string{"Action": LoginPath, "Next": next, "Problem": problem})
}
