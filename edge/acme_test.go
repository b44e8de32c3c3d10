package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/quiccast/quiccast/shared/acme"
	"github.com/quiccast/quiccast/shared/certs"
	"github.com/quiccast/quiccast/shared/testenv"
)

// pebble is Let's Encrypt's test CA with its mock DNS server (every name
// is 127.0.0.1), both built from go.mod's tool lines.
type pebble struct {
	Dir    string // ACME directory URL
	TLS    string // PEM of Pebble's own HTTPS certificate (for -acme-ca-root)
	mgmt   string
	client *http.Client
}

func goTool(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", name).Output()
	if err != nil {
		t.Fatalf("go tool -n %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		return freeAddr(t)
	}
	u.Close()
	return l.Addr().String()
}

func startProc(t *testing.T, name, waitAddr string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(name), logs.String())
		}
	})
	testenv.WaitFor(t, 20*time.Second, filepath.Base(name)+" listening on "+waitAddr, func() bool {
		c, err := net.Dial("tcp", waitAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startPebble runs a CA whose certificates live validity and whose
// TLS-ALPN-01 checks connect to tlsPort.
func startPebble(t *testing.T, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	dir := t.TempDir()
	dns, dnsMgmt := freeAddr(t), freeAddr(t)
	startProc(t, goTool(t, "pebble-challtestsrv"), dnsMgmt, nil,
		"-dnsserver", dns, "-management", dnsMgmt, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "")

	// Pebble's own HTTPS certificate.
	c, err := certs.SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	kb, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	p := &pebble{TLS: filepath.Join(dir, "pebble.pem")}
	os.WriteFile(p.TLS, certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "pebble.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	listen, mgmt := freeAddr(t), freeAddr(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             filepath.Join(dir, "pebble.pem"),
		"privateKey":              filepath.Join(dir, "pebble.key"),
		"httpPort":                1, // HTTP-01 is not used
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"profiles":                map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity / time.Second)}},
	}}
	b, _ := json.Marshal(conf)
	os.WriteFile(filepath.Join(dir, "pebble.json"), b, 0o600)
	startProc(t, goTool(t, "pebble"), listen, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", filepath.Join(dir, "pebble.json"), "-dnsserver", dns)
	p.Dir = "https://" + listen + "/dir"
	p.mgmt = "https://" + mgmt
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	p.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	return p
}

// roots returns the pool of Pebble's issuing root (made at its start).
func (p *pebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %s", b)
	}
	return pool
}

const acmeDomain = "edge.quiccast.test"

// An edge with a DNS name gets its certificate from the ACME CA (Pebble,
// checking TLS-ALPN-01 on the edge's port), serves it over HTTPS and
// HTTP/3, renews it before it expires, and keeps it on disk across a
// restart.
func TestEdgeGetsServesAndRenewsAnACMECertificate(t *testing.T) {
	addr := freeAddr(t)
	_, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)
	p := startPebble(t, port, 40*time.Second)
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

	roots := p.roots(t)
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
