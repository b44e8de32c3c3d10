// Package acme gets and renews a node's certificate from an ACME CA (Let's
// Encrypt by default) with certmagic: TLS-ALPN-01 answered on the node's
// own HTTPS listener, the certificate and account cached on disk, and one
// GetCertificate for HTTP/1.1, HTTP/2 and HTTP/3 alike.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/quiccast/quiccast/shared/config"
)

// Config says which name to get a certificate for and from where.
type Config struct {
	// Domain is the public DNS name; empty disables ACME.
	Domain string
	// Email is the account's contact (optional; the CA warns about
	// expiry there).
	Email string
	// CA is the ACME directory URL (default Let's Encrypt production).
	CA string
	// CARoot is a PEM file of roots to trust for the CA's own HTTPS (a
	// test CA such as Pebble); empty trusts the system's.
	CARoot string
	// Dir caches the account and certificates across restarts.
	Dir string
	// Listen is the TCP address whose TLS listener answers TLS-ALPN-01
	// (the node's HTTPS address; the CA connects to port 443 of Domain).
	Listen string
	// RenewCheck is how often certificates are checked for renewal
	// (default certmagic's, 10 minutes); RenewalRatio the part of the
	// lifetime left when renewal starts (default 1/3).
	RenewCheck   time.Duration
	RenewalRatio float64

	Logger *slog.Logger
}

// Flags declares the settings on s with the given prefix ("acme-").
func (c *Config) Flags(s *config.Set) {
	s.String(&c.Domain, "acme-domain", "", "public DNS name to get a certificate for from an ACME CA (HTTPS on -listen and HTTP/3); empty: off")
	s.String(&c.Email, "acme-email", "", "contact e-mail of the ACME account")
	s.String(&c.CA, "acme-ca", certmagic.LetsEncryptProductionCA, "ACME directory URL (e.g. Let's Encrypt staging, or a Pebble test CA)")
	s.String(&c.CARoot, "acme-ca-root", "", "PEM file of roots to trust for the ACME CA's own HTTPS (test CAs); default: the system's")
	s.String(&c.Dir, "acme-dir", "acme", "directory caching the ACME account and certificates")
}

// Manager holds a managed certificate.
type Manager struct {
	cfg    *certmagic.Config
	cache  *certmagic.Cache
	domain string
	// Obtained counts certificates obtained or renewed (not loaded from
	// the cache).
	Obtained atomic.Int64
	notAfter atomic.Int64 // Unix seconds of the last certificate seen
}

// New prepares to manage c.Domain; Start begins. Close stops renewals.
func New(c Config) (*Manager, error) {
	if c.Domain == "" {
		return nil, errors.New("acme: no domain")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CA == "" {
		c.CA = certmagic.LetsEncryptProductionCA
	}
	if c.Dir == "" {
		c.Dir = "acme"
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	log := zap.New(slogCore{h: c.Logger.With("component", "acme").Handler()})
	m := &Manager{domain: c.Domain}
	var mcfg *certmagic.Config
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return mcfg, nil },
		RenewCheckInterval: c.RenewCheck,
		Logger:             log,
	})
	mcfg = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: c.RenewalRatio,
		Storage:            &certmagic.FileStorage{Path: c.Dir},
		DefaultServerName:  c.Domain,
		Logger:             log,
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			if event == "cert_obtained" {
				m.Obtained.Add(1)
			}
			return nil
		},
	})
	iss := certmagic.ACMEIssuer{
		CA:                   c.CA,
		TestCA:               c.CA,
		Email:                c.Email,
		Agreed:               true,
		DisableHTTPChallenge: true, // nothing of ours listens on port 80
		Logger:               log,
	}
	if host, port, err := net.SplitHostPort(c.Listen); err == nil {
		// The listener is ours: certmagic finds the address taken and
		// leaves the challenge to our TLS config.
		iss.ListenHost = host
		iss.AltTLSALPNPort, _ = strconv.Atoi(port)
	}
	if c.CARoot != "" {
		pem, err := os.ReadFile(c.CARoot)
		if err != nil {
			return nil, fmt.Errorf("acme: -acme-ca-root: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme: -acme-ca-root %s holds no certificate", c.CARoot)
		}
		iss.TrustedRoots = pool
	}
	mcfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(mcfg, iss)}
	m.cfg = mcfg
	return m, nil
}

// Start manages the domain: a cached certificate is used at once, a
// missing or expiring one is obtained in the background (handshakes for
// the name fail until it is there). Call it once the listener of
// Config.Listen is bound, so the TLS-ALPN-01 challenge reaches it.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.cfg.ManageAsync(ctx, []string{m.domain}); err != nil {
		return fmt.Errorf("acme: %s: %w", m.domain, err)
	}
	return nil
}

// GetCertificate serves the managed certificate (and TLS-ALPN-01
// challenges); it fits tls.Config for TCP and QUIC listeners alike.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := m.cfg.GetCertificate(hello)
	if err == nil && c != nil && c.Leaf != nil {
		m.notAfter.Store(c.Leaf.NotAfter.Unix())
	}
	return c, err
}

// TLSConfig returns the config of the HTTPS listener: HTTP/2, HTTP/1.1
// and the acme-tls/1 protocol of TLS-ALPN-01.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		MinVersion:     tls.VersionTLS12,
	}
}

// NotAfter returns when the certificate served last expires (zero before
// the first handshake).
func (m *Manager) NotAfter() time.Time {
	if s := m.notAfter.Load(); s != 0 {
		return time.Unix(s, 0)
	}
	return time.Time{}
}

// Close stops renewals.
func (m *Manager) Close() { m.cache.Stop() }

// slogCore writes certmagic's zap logs to slog.
type slogCore struct {
	h      slog.Handler
	fields []zapcore.Field
}

var levels = sync.OnceValue(func() map[zapcore.Level]slog.Level {
	return map[zapcore.Level]slog.Level{zapcore.DebugLevel: slog.LevelDebug, zapcore.InfoLevel: slog.LevelInfo, zapcore.WarnLevel: slog.LevelWarn}
})

func level(l zapcore.Level) slog.Level {
	if v, ok := levels()[l]; ok {
		return v
	}
	return slog.LevelError
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), level(l))
}

func (c slogCore) With(fs []zapcore.Field) zapcore.Core {
	return slogCore{h: c.h, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	r := slog.NewRecord(e.Time, level(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		r.AddAttrs(slog.Any(k, v))
	}
	return c.h.Handle(context.Background(), r)
}

func (slogCore) Sync() error { return nil }
