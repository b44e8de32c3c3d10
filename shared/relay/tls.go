package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/quiccast/quiccast/shared/certs"
)

// TLSFiles names the PEM files of a relay peer. All are optional.
type TLSFiles struct {
	// Cert and Key are this node's certificate: served as a relay
	// server, presented as a client certificate when dialing upstream.
	// Without them a server makes a self-signed certificate.
	Cert, Key string
	// CA verifies peers: a server then requires client certificates
	// signed by it (mutual TLS), a client checks the server's. Without
	// it, peers are not verified and authenticate with the cluster token
	// only.
	CA string
}

func (f TLSFiles) load() (*tls.Certificate, *x509.CertPool, error) {
	var cert *tls.Certificate
	if f.Cert != "" || f.Key != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("relay: certificate: %w", err)
		}
		cert = &c
	}
	var pool *x509.CertPool
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("relay: CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("relay: CA %s: no certificate found", f.CA)
		}
	}
	return cert, pool, nil
}

// ServerTLS returns the TLS configuration of a relay listener. hosts name
// the self-signed certificate made when f has none.
func ServerTLS(f TLSFiles, hosts []string) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	if cert == nil {
		c, err := certs.SelfSigned(hosts, 365*24*time.Hour)
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	tc := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
	if pool != nil {
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// ClientTLS returns the TLS configuration for dialing relay servers.
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	if pool != nil {
		tc.RootCAs = pool
	} else {
		tc.InsecureSkipVerify = true // peers prove themselves with the cluster token
	}
	return tc, nil
}
