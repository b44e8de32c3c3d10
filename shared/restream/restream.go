// Package restream pushes live broadcasts to external RTMP and RTMPS
// endpoints (YouTube, Facebook, Twitch, another quiccast origin, any RTMP
// server). A Pusher per (broadcast, target) reads the broadcast's cache
// like a viewer, turns its CMAF chunks back into H.264/H.265 and AAC
// frames with their timestamps, and publishes them over RTMP with a
// write deadline. It reconnects with exponential backoff and jitter when
// the network fails, and backs off long, then gives up, when the server
// refuses the publish (a bad stream key), so a wrong key is a clear
// status and not a storm of attempts. Stream keys never reach a log, an
// error, the API or a metric: see Target.
package restream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/media"
)

// Errors from Add and Remove.
var (
	ErrNotLive = errors.New("restream: no such live broadcast on this node")
	ErrExists  = errors.New("restream: the broadcast is already pushed to this target")
	ErrClosed  = errors.New("restream: closed")
	ErrLimit   = errors.New("restream: too many targets for this broadcast")
)

// Config configures restreaming. Zero fields take the defaults Flags
// shows.
type Config struct {
	// Rules is the -restream setting (see ParseRules): which broadcasts
	// are pushed where without being asked.
	Rules string
	// CAFile is a PEM file of extra roots for rtmps:// targets; the
	// system roots are used too.
	CAFile string
	// Timeout bounds connect+publish, and every write.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnect after a
	// network failure; it doubles from MinBackoff, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// RefusedBackoff is the wait after a first refusal; it doubles up to
	// MaxRefusedBackoff. MaxRefusals refusals in a row stop the target.
	RefusedBackoff    time.Duration
	MaxRefusedBackoff time.Duration
	MaxRefusals       int
	// MaxTargets bounds the targets of one broadcast.
	MaxTargets int
	// Cursor sets when a pusher that falls behind (a slow target) skips
	// to newer groups.
	Cursor media.CursorConfig

	// TLS, when set, is used for rtmps:// targets instead of CAFile.
	TLS *tls.Config
	// Lookup resolves ${NAME} in Rules; default os.LookupEnv.
	Lookup  func(string) (string, bool)
	Logger  *slog.Logger
	Metrics *Metrics
}

// Flags declares the settings on s.
func (c *Config) Flags(s *config.Set) {
	s.StringList(&c.Rules, "restream", "", "push broadcasts to RTMP(S) servers: PATTERN=rtmp://HOST/APP/STREAMKEY (path.Match pattern; repeatable, or comma-separated); ${NAME} in a URL is read from the environment variable NAME; @FILE reads PATTERN=URL lines from FILE")
	s.String(&c.CAFile, "restream-ca", "", "PEM file of extra CA certificates trusted for rtmps:// restream targets")
	s.Duration(&c.Timeout, "restream-timeout", 10*time.Second, "restream: bound on connect+publish and on every write to a target")
	s.Duration(&c.MaxBackoff, "restream-max-backoff", 30*time.Second, "restream: longest wait before reconnecting to a target after a network failure (doubles from 500ms, with jitter)")
	s.Duration(&c.RefusedBackoff, "restream-refused-backoff", 15*time.Second, "restream: wait after a target refuses the publish (a bad key); doubles on each refusal, up to 5 min")
	s.Int(&c.MaxRefusals, "restream-max-refusals", 5, "restream: stop a target after this many refusals in a row (state refused)")
}

func (c *Config) withDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.RefusedBackoff <= 0 {
		c.RefusedBackoff = 15 * time.Second
	}
	if c.MaxRefusedBackoff <= 0 {
		c.MaxRefusedBackoff = 5 * time.Minute
	}
	if c.MaxRefusals <= 0 {
		c.MaxRefusals = 5
	}
	if c.MaxTargets <= 0 {
		c.MaxTargets = 16
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Status is one target as List shows it.
type Status struct {
	Broadcast string `json:"broadcast"`
	ID        string `json:"id"`
	// URL is the target with its key, password and query values
	// REDACTED.
	URL string `json:"url"`
	// Source is "config" (a -restream rule) or "api".
	Source string `json:"source"`
	// Active is false once the target was stopped, its broadcast ended,
	// or it was refused MaxRefusals times in a row.
	Active bool      `json:"active"`
	State  string    `json:"state"`
	Since  time.Time `json:"since"`
	Bytes  int64     `json:"bytes"`
	// Sessions counts the publishes the server accepted; Attempts every
	// connection tried; Refusals the refusals in a row.
	Sessions  int       `json:"sessions"`
	Attempts  int       `json:"attempts"`
	Refusals  int       `json:"refusals"`
	LastError string    `json:"last_error,omitempty"`
	RetryAt   time.Time `json:"retry_at,omitzero"`
}

// maxEnded bounds the ended targets List keeps showing.
const maxEnded = 256

// Manager runs the pushers of the broadcasts this node holds. Safe for
// concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	m     *Metrics
	rules []Rule
	tls   *tls.Config

	mu      sync.Mutex
	live    map[string]*media.Broadcast
	pushers map[string]*Pusher // by id
	ended   map[string]Status  // by id
	order   []string           // ended ids, oldest first
	closed  bool
	wg      sync.WaitGroup
}

// New checks cfg (rules, CA file) and returns a Manager.
func New(cfg Config) (*Manager, error) {
	cfg.withDefaults()
	rules, err := ParseRules(cfg.Rules, cfg.Lookup)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("part", "restream"), m: cfg.Metrics, rules: rules, tls: cfg.TLS,
		live: map[string]*media.Broadcast{}, pushers: map[string]*Pusher{}, ended: map[string]Status{}}
	if m.tls == nil && cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("restream: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("restream: %s holds no PEM certificate", cfg.CAFile)
		}
		m.tls = &tls.Config{RootCAs: pool}
	}
	for _, r := range rules {
		m.log.Info("restream rule", "pattern", r.Pattern, "url", r.Target.String())
	}
	return m, nil
}

// Live tells the manager that this node holds b from now until b closes;
// the rules matching its name start pushing it.
func (m *Manager) Live(b *media.Broadcast) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.live[b.Name] = b
	m.mu.Unlock()
	go func() {
		<-b.Done()
		m.mu.Lock()
		if m.live[b.Name] == b {
			delete(m.live, b.Name)
		}
		m.mu.Unlock()
	}()
	for _, r := range m.rules {
		if r.Match(b.Name) {
			if _, err := m.start(b.Name, r.Target, "config"); err != nil && !errors.Is(err, ErrExists) {
				m.log.Warn("restream not started", "broadcast", b.Name, "url", r.Target.String(), "err", err)
			}
		}
	}
}

// Add pushes the live broadcast name to raw (rtmp:// or rtmps://) until
// the broadcast ends or Remove. It fails with ErrNotLive, ErrExists,
// ErrLimit or ErrInvalidURL.
func (m *Manager) Add(name, raw string) (Status, error) {
	if err := checkName(name); err != nil {
		return Status{}, err
	}
	t, err := ParseTarget(raw)
	if err != nil {
		return Status{}, err
	}
	return m.start(name, t, "api")
}

func (m *Manager) start(name string, t *Target, source string) (Status, error) {
	id := TargetID(name, t)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Status{}, ErrClosed
	}
	b := m.live[name]
	if b == nil || b.Closed() {
		return Status{}, ErrNotLive
	}
	if p := m.pushers[id]; p != nil {
		return p.status(), ErrExists
	}
	n := 0
	for _, p := range m.pushers {
		if p.b.Name == name {
			n++
		}
	}
	if n >= m.cfg.MaxTargets {
		return Status{}, fmt.Errorf("%w (%d)", ErrLimit, m.cfg.MaxTargets)
	}
	p := newPusher(m, b, t, id, source)
	m.pushers[id] = p
	if _, ok := m.ended[id]; ok {
		delete(m.ended, id)
		for i, e := range m.order {
			if e == id {
				m.order = append(m.order[:i], m.order[i+1:]...)
				break
			}
		}
	}
	m.m.targets.Inc()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		p.run()
		m.mu.Lock()
		delete(m.pushers, id)
		m.ended[id] = p.status()
		m.order = append(m.order, id)
		for len(m.order) > maxEnded {
			delete(m.ended, m.order[0])
			m.m.forget(m.order[0])
			m.order = m.order[1:]
		}
		m.mu.Unlock()
		m.m.targets.Dec()
		close(p.ended)
	}()
	m.log.Info("restream started", "broadcast", name, "target_id", id, "url", t.String(), "source", source)
	return p.status(), nil
}

// Remove stops pushing broadcast name to target id and waits for its
// connection to close. It returns the target's last status and whether
// it was running.
func (m *Manager) Remove(name, id string) (Status, bool) {
	if m == nil {
		return Status{}, false
	}
	m.mu.Lock()
	p := m.pushers[id]
	m.mu.Unlock()
	if p == nil || p.b.Name != name {
		return Status{}, false
	}
	p.cancel()
	<-p.ended
	m.log.Info("restream stopped", "broadcast", name, "target_id", id)
	return p.status(), true
}

// List returns the running targets and the ended ones still remembered,
// by broadcast and id.
func (m *Manager) List() []Status {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	out := make([]Status, 0, len(m.pushers)+len(m.ended))
	for _, p := range m.pushers {
		out = append(out, p.status())
	}
	for id, st := range m.ended {
		if m.pushers[id] == nil {
			out = append(out, st)
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Broadcast != out[j].Broadcast {
			return out[i].Broadcast < out[j].Broadcast
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Close stops every pusher and waits for them.
func (m *Manager) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	ps := make([]*Pusher, 0, len(m.pushers))
	for _, p := range m.pushers {
		ps = append(ps, p)
	}
	m.mu.Unlock()
	for _, p := range ps {
		p.cancel()
	}
	m.wg.Wait()
}
