package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MaxHashValidity is the longest validity browsers accept for a
// certificate pinned with WebTransport's serverCertificateHashes (14 days,
// W3C WebTransport §"custom certificate requirements").
const MaxHashValidity = 14 * 24 * time.Hour

// DevOptions configures a Dev certificate. Zero fields take defaults.
type DevOptions struct {
	// Validity of each certificate. Default 10 days; at most
	// MaxHashValidity (minus the minute of back-dating).
	Validity time.Duration
	// Rotate is how long a certificate is served before the next one
	// takes over. Default 4 days. A certificate is announced (as "next")
	// one Rotate before it is served, so Validity must exceed 2×Rotate.
	Rotate time.Duration
	// Now is the clock; default time.Now. Tests move it.
	Now func() time.Time
}

// Dev is a development certificate for HTTP/3 and WebTransport: a
// self-signed ECDSA P-256 certificate valid under 14 days, so that
// browsers accept it through serverCertificateHashes without a CA. It
// rotates by itself: the next certificate is made one rotation ahead, so
// a page can be given both hashes and still connect after a rotation.
// Rotation happens lazily, on the next handshake or hash request after it
// is due, so Dev needs no goroutine.
type Dev struct {
	hosts []string
	opts  DevOptions

	mu       sync.Mutex
	cur      *tls.Certificate
	next     *tls.Certificate
	rotateAt time.Time
	// Rotations counts rotations, for metrics.
	Rotations atomic.Int64
}

// NewDev makes the current and the next certificate for hosts.
func NewDev(hosts []string, opts DevOptions) (*Dev, error) {
	if opts.Validity <= 0 {
		opts.Validity = 10 * 24 * time.Hour
	}
	if opts.Rotate <= 0 {
		opts.Rotate = 4 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Validity+time.Minute > MaxHashValidity {
		return nil, fmt.Errorf("certs: development certificates must be valid under %s for serverCertificateHashes, not %s", MaxHashValidity, opts.Validity)
	}
	if opts.Validity <= 2*opts.Rotate {
		return nil, fmt.Errorf("certs: validity %s must exceed twice the rotation period %s", opts.Validity, opts.Rotate)
	}
	d := &Dev{hosts: hosts, opts: opts}
	var err error
	if d.cur, err = d.make(); err != nil {
		return nil, err
	}
	if d.next, err = d.make(); err != nil {
		return nil, err
	}
	d.rotateAt = opts.Now().Add(opts.Rotate)
	return d, nil
}

func (d *Dev) make() (*tls.Certificate, error) {
	c, err := SelfSignedAt(d.hosts, d.opts.Now(), d.opts.Validity)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// rotate promotes the next certificate when it is due (or when the current
// one is about to expire, should the clock have jumped). Called with mu.
func (d *Dev) rotate() {
	now := d.opts.Now()
	if now.Before(d.rotateAt) && now.Before(d.cur.Leaf.NotAfter.Add(-time.Hour)) {
		return
	}
	fresh, err := d.make()
	if err != nil {
		return // keep serving; the next call retries
	}
	d.cur, d.next = d.next, fresh
	if !now.Before(d.cur.Leaf.NotAfter.Add(-d.opts.Rotate)) {
		// The clock jumped past the next certificate's life too.
		if d.cur, err = d.make(); err != nil {
			d.cur = fresh
		}
	}
	d.rotateAt = now.Add(d.opts.Rotate)
	d.Rotations.Add(1)
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (d *Dev) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rotate()
	return d.cur, nil
}

// Hashes returns the SHA-256 of the current and the next certificate, and
// when the current one expires.
func (d *Dev) Hashes() (cur, next [32]byte, notAfter time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rotate()
	return Hash(*d.cur), Hash(*d.next), d.cur.Leaf.NotAfter
}

// FilesOptions configures Files. Zero fields take defaults.
type FilesOptions struct {
	// Check is how often, at most, the files are looked at for changes.
	// Default 5 s.
	Check  time.Duration
	Logger *slog.Logger
}

// Files serves a certificate and key from PEM files and reloads them when
// they change (a new modification time or size), on the first handshake
// after the change; a reload that fails (a half-written file, a key that
// does not match) keeps the previous certificate and is retried at the
// next check.
type Files struct {
	cert, key string
	opts      FilesOptions

	mu      sync.Mutex
	c       *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time

	// Reloads and Failures count reloads, for metrics.
	Reloads  atomic.Int64
	Failures atomic.Int64
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewFiles loads cert and key; an error here is fatal to the caller.
func NewFiles(cert, key string, opts FilesOptions) (*Files, error) {
	if cert == "" || key == "" {
		return nil, errors.New("certs: a certificate file needs its key file, and the other way round")
	}
	if opts.Check <= 0 {
		opts.Check = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Files{cert: cert, key: key, opts: opts}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.checked = time.Now()
	return f, nil
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{st.ModTime(), st.Size()}, nil
}

// load reads both files. Called with mu held, or before f is shared.
func (f *Files) load() error {
	var stamps [2]fileStamp
	for i, p := range []string{f.cert, f.key} {
		s, err := stampOf(p)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		stamps[i] = s
	}
	c, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return fmt.Errorf("certs: %s, %s: %w", f.cert, f.key, err)
	}
	f.c, f.stamp = &c, stamps
	return nil
}

// GetCertificate serves the certificate, reloading it first if the files
// changed (tls.Config.GetCertificate).
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= f.opts.Check {
		f.checked = time.Now()
		f.reloadIfChanged()
	}
	return f.c, nil
}

func (f *Files) reloadIfChanged() {
	changed := false
	for i, p := range []string{f.cert, f.key} {
		s, err := stampOf(p)
		if err != nil || s != f.stamp[i] {
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := f.load(); err != nil {
		f.Failures.Add(1)
		f.opts.Logger.Error("certificate reload failed; still serving the previous one", "cert", f.cert, "err", err)
		return
	}
	f.Reloads.Add(1)
	f.opts.Logger.Info("certificate reloaded", "cert", f.cert, "not_after", f.c.Leaf.NotAfter)
}

// NotAfter returns when the served certificate expires.
func (f *Files) NotAfter() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c.Leaf.NotAfter
}
