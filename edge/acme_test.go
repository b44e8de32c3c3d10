package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/quiccast/quiccast/shared/acme"
	"github.com/quiccast/quiccast/shared/testenv"
)

const acmeDomain = "edge.quiccast.test"

// An edge with a DNS name gets its certificate from the ACME CA (Pebble,
// checking TLS-ALPN-01 on the edge's port), serves it over HTTPS and
// HTTP/3, renews it before it expires, and keeps it on disk across a
// restart.
func TestEdgeGetsServesAndRenewsAnACMECertificate(t *testing.T) {
	addr := testenv.FreeAddr(t)
	_, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)
	p := testenv.StartPebble(t, port, 40*time.Second)
	cache := t.TempDir()
	cfg := func() Config {
		return Config{
			Listen: addr, WTListen: "same", Source: newFakeSource(), Logger: (&testenv.Logs{}).Logger(),
			ACME: acme.Config{Domain: acmeDomain, CA: p.Dir, CARoot: p.TLS, Dir: cache, RenewCheck: time.Second, RenewalRatio: 0.5},
		}
	}
	n, err := New(cfg())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
	}
	defer func() {
		if cancel != nil {
			stop()
		}
	}()

	roots := p.Roots(t)
	tc := &tls.Config{RootCAs: roots, ServerName: acmeDomain}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: dial, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	served := func(c *http.Client, url string) *x509.Certificate {
		resp, err := c.Get(url)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.TLS == nil {
			return nil
		}
		return resp.TLS.PeerCertificates[0]
	}
	url := "https://" + acmeDomain + ":" + portS + "/healthz"
	var first *x509.Certificate
	testenv.WaitFor(t, 60*time.Second, "the edge serving a certificate from the ACME CA over HTTPS", func() bool {
		first = served(h1, url)
		return first != nil
	})
	if first.Subject.CommonName != acmeDomain && (len(first.DNSNames) == 0 || first.DNSNames[0] != acmeDomain) {
		t.Fatalf("served certificate for %v %v", first.Subject, first.DNSNames)
	}

	// HTTP/3 (the WebTransport listener) serves the same certificate,
	// verified against the CA's root without any certificate hashes.
	h3t := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: acmeDomain}}
	defer h3t.Close()
	h3 := &http.Client{Transport: h3t, Timeout: 5 * time.Second}
	resp, err := h3.Get("https://127.0.0.1:" + portS + "/healthz")
	if err != nil {
		t.Fatalf("HTTP/3 with the ACME certificate: %v", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 3 || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("HTTP/3: proto %s, serial %v, want the HTTPS certificate %v", resp.Proto, resp.TLS.PeerCertificates[0].SerialNumber, first.SerialNumber)
	}

	// Renewal: with 40 s certificates renewed at half their life, a new
	// certificate is served without a restart.
	testenv.WaitFor(t, 60*time.Second, "a renewed certificate", func() bool {
		c := served(h1, url)
		return c != nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 && c.NotAfter.After(first.NotAfter)
	})
	if n.acme.Obtained.Load() < 2 {
		t.Fatalf("obtained %d certificates, want the first and a renewal", n.acme.Obtained.Load())
	}
	stop()
	cancel = nil

	// A restarted edge serves the certificate from its disk cache
	// without asking the CA.
	n2, err := New(cfg())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, n2.Run)
	testenv.WaitFor(t, 10*time.Second, "the restarted edge serving the cached certificate", func() bool {
		return served(h1, url) != nil
	})
	if got := n2.acme.Obtained.Load(); got != 0 {
		t.Fatalf("the restarted edge obtained %d certificates; want the cached one", got)
	}
}
