// Package admin is a node's operator surface: /metrics, GET /broadcasts,
// /debug/pprof/. Its routes answer a request that carries the admin token
// (Authorization: Bearer), or, without a token configured, only clients on
// loopback. They are served on the node's public listener or, with
// -admin-listen, on a listener of their own and not on the public one.
package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
			got, ok := bearer(r)
			if !ok || auth.Equal(got, s.cfg.Token) != 1 {
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
