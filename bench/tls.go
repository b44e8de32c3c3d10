package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quiccast/quiccast/shared/certs"
)

// TLS for the viewers: wss:// (the WebSocket protocol of viewer_ws.go
// inside TLS, as a page served over HTTPS must use) and WebTransport
// trusting a given certificate instead of skipping verification.

// runWSSViewer watches a broadcast over wss://HOST/ws/NAME.
func runWSSViewer(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network) {
	runWS(ctx, id, edge, name, token, st, nw, true)
}

// selfSigned writes a self-signed ECDSA P-256 certificate (shared/certs)
// for 127.0.0.1, localhost and hosts (IP addresses or names) into dir
// (cert.pem, key.pem) and returns the files and a pool that trusts it.
func selfSigned(dir string, hosts ...string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	c, err := certs.SelfSigned(append([]string{"127.0.0.1", "localhost"}, hosts...), 7*24*time.Hour)
	if err != nil {
		return "", "", nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return certFile, keyFile, pool, nil
}

// clientTLS is how viewers and scrapes check the edges' certificates:
// -insecure skips the check, -ca trusts that file's certificates (and not
// the system's), neither uses the system's roots. It returns nil when
// nothing was asked for.
func (c *Config) clientTLS() (*tls.Config, error) {
	switch {
	case c.Insecure && c.CA != "":
		return nil, errors.New("bench: -ca and -insecure are exclusive")
	case c.Insecure:
		return &tls.Config{InsecureSkipVerify: true}, nil
	case c.CA != "":
		b, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("bench: -ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("bench: -ca %s: no PEM certificate", c.CA)
		}
		return &tls.Config{RootCAs: pool}, nil
	}
	return nil, nil
}

// useTLS says whether local edges get a certificate (HTTPS, wss:// and
// WebTransport on -listen).
func (c *Config) useTLS() bool {
	return c.LocalTLS || c.Transport == "wss"
}

// withServerName is tc (or an empty config) naming addr's host for SNI
// and verification.
func withServerName(tc *tls.Config, addr string) *tls.Config {
	if tc == nil {
		tc = &tls.Config{}
	}
	tc = tc.Clone()
	if tc.ServerName == "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			tc.ServerName = h
		} else {
			tc.ServerName = addr
		}
	}
	return tc
}
