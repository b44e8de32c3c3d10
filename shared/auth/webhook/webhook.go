// Package webhook authorises publish and play requests by asking an HTTP
// service, the way nginx-rtmp's on_publish, on_play and on_done do: a POST
// of application/x-www-form-urlencoded fields (call, addr, clientid, app,
// name, tcurl, swfurl, pageurl, flashver, type, and the query arguments of
// the stream key or URL). A 2xx answer allows; a 3xx to on_publish
// renames the stream to its Location; anything else, a timeout or an
// unreachable service refuses (unless FailOpen). Allows are cached briefly.
package webhook

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

// Config configures a Hook. Empty URLs are not called.
type Config struct {
	OnPublish, OnPlay, OnDone string
	// Timeout bounds each call (default 5s).
	Timeout time.Duration
	// CacheTTL is how long an allow is remembered for the same action,
	// name, token and address (default 10s; negative: no cache).
	CacheTTL time.Duration
	// CacheSize bounds the cache (default 4096 entries).
	CacheSize int
	// FailOpen allows when the service cannot be reached or times out.
	// Default false: refuse (fail closed).
	FailOpen bool
	// Client makes the calls; it must not follow redirects.
	Client *http.Client
	Logger *slog.Logger
}

// Hook is an auth.Authorizer, auth.Decider and auth.Ender.
type Hook struct {
	cfg   Config
	ids   atomic.Uint64
	mu    sync.Mutex
	cache map[[32]byte]cached
	done  chan struct{} // bounds on_done calls in flight
}

type cached struct {
	g   auth.Grant
	end time.Time
}

// New returns a Hook.
func New(cfg Config) (*Hook, error) {
	for _, u := range []string{cfg.OnPublish, cfg.OnPlay, cfg.OnDone} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("webhook: %q is not an http:// or https:// URL", auth.Redact(u))
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 10 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 4096
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	c := *cfg.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &c
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Hook{cfg: cfg, cache: map[[32]byte]cached{}, done: make(chan struct{}, 64)}, nil
}

// Method is "webhook".
func (*Hook) Method() string { return "webhook" }

// Guards is true for the actions with a URL.
func (h *Hook) Guards(a auth.Action) bool { return h.url(a) != "" }

func (h *Hook) url(a auth.Action) string {
	switch a {
	case auth.Publish:
		return h.cfg.OnPublish
	case auth.Play:
		return h.cfg.OnPlay
	}
	return ""
}

// Authorize is Decide without the grant.
func (h *Hook) Authorize(ctx context.Context, r auth.Request) error {
	_, err := h.Decide(ctx, r)
	return err
}

// Form is the POST body nginx-rtmp sends for call about r.
func Form(call string, r auth.Request, clientID uint64) url.Values {
	f := url.Values{}
	for k, vs := range r.Args { // first, so the fixed fields win
		f[k] = append([]string(nil), vs...)
	}
	if len(r.Args) == 0 && r.Token != "" {
		f.Set("token", r.Token)
	}
	app := r.App
	if app == "" {
		app = "live"
	}
	f.Set("call", call)
	f.Set("addr", addrOf(r.Remote))
	f.Set("clientid", strconv.FormatUint(clientID, 10))
	f.Set("app", app)
	f.Set("name", r.Broadcast)
	f.Set("tcurl", r.URL)
	f.Set("swfurl", "")
	f.Set("pageurl", "")
	f.Set("flashver", r.FlashVer)
	f.Set("type", "live")
	return f
}

func addrOf(remote string) string {
	i := strings.LastIndexByte(remote, ':')
	if i < 0 || strings.Count(remote, ":") > 1 && !strings.HasPrefix(remote, "[") {
		return remote
	}
	return strings.Trim(remote[:i], "[]")
}

// Decide asks the action's URL.
func (h *Hook) Decide(ctx context.Context, r auth.Request) (auth.Grant, error) {
	u := h.url(r.Action)
	if u == "" {
		return auth.Grant{}, nil
	}
	key := cacheKey(r)
	now := time.Now()
	if h.cfg.CacheTTL > 0 {
		h.mu.Lock()
		c, ok := h.cache[key]
		h.mu.Unlock()
		if ok && now.Before(c.end) {
			return c.g, nil
		}
	}
	call := string(r.Action)
	status, loc, err := h.post(ctx, u, Form(call, r, h.ids.Add(1)))
	if err != nil {
		h.cfg.Logger.Warn("webhook unreachable", "call", call, "url", auth.Redact(u), "broadcast", r.Broadcast, "err", err, "fail_open", h.cfg.FailOpen)
		if h.cfg.FailOpen {
			return auth.Grant{}, nil
		}
		return auth.Grant{}, wire.Errorf(wire.CodeUnavailable, "%s %q: the authorisation service did not answer; try again", r.Action, r.Broadcast)
	}
	var g auth.Grant
	switch {
	case status >= 200 && status < 300:
	case status >= 300 && status < 400 && r.Action == auth.Publish && loc != "":
		g.Name = renamed(loc)
	case status >= 300 && status < 400:
		return auth.Grant{}, wire.Errorf(wire.CodeForbidden, "%s %q: refused by the authorisation service (HTTP %d without a usable Location)", r.Action, r.Broadcast, status)
	case status == http.StatusUnauthorized:
		return auth.Grant{}, wire.Errorf(wire.CodeUnauthorized, "%s %q: key not accepted", r.Action, r.Broadcast)
	default:
		return auth.Grant{}, wire.Errorf(wire.CodeForbidden, "%s %q: refused by the authorisation service (HTTP %d)", r.Action, r.Broadcast, status)
	}
	if h.cfg.CacheTTL > 0 {
		h.mu.Lock()
		if len(h.cache) >= h.cfg.CacheSize {
			for k, c := range h.cache {
				if len(h.cache) < h.cfg.CacheSize && !now.After(c.end) {
					break
				}
				delete(h.cache, k)
			}
		}
		h.cache[key] = cached{g: g, end: now.Add(h.cfg.CacheTTL)}
		h.mu.Unlock()
	}
	return g, nil
}

// renamed is the broadcast name a Location gives: nginx-rtmp takes the
// Location as the new name; a URL (rtmp://host/app/name) gives its last
// path element.
func renamed(loc string) string {
	if u, err := url.Parse(loc); err == nil && u.Scheme != "" {
		return path.Base(u.Path)
	}
	return strings.TrimPrefix(loc, "/")
}

func cacheKey(r auth.Request) [32]byte {
	h := sha256.New()
	for _, s := range []string{string(r.Action), r.Broadcast, r.Token, addrOf(r.Remote), r.Args.Encode()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (h *Hook) post(ctx context.Context, u string, form url.Values) (status int, location string, err error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "quiccast")
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		return 0, "", errors.New(auth.Redact(err.Error()))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), nil
}

// Done posts call=done to OnDone in the background (at most 64 in flight;
// more are dropped and logged).
func (h *Hook) Done(r auth.Request) {
	if h.cfg.OnDone == "" || (r.Action != auth.Publish && r.Action != auth.Play) {
		return
	}
	select {
	case h.done <- struct{}{}:
	default:
		h.cfg.Logger.Warn("webhook on_done dropped: too many in flight", "broadcast", r.Broadcast)
		return
	}
	form := Form("done", r, h.ids.Add(1))
	go func() {
		defer func() { <-h.done }()
		if _, _, err := h.post(context.Background(), h.cfg.OnDone, form); err != nil {
			h.cfg.Logger.Warn("webhook on_done failed", "url", auth.Redact(h.cfg.OnDone), "broadcast", r.Broadcast, "err", err)
		}
	}()
}
