package testenv

import (
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
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/certs"
)

// Pebble is Let's Encrypt's test CA with its mock DNS server (every name
// is 127.0.0.1), both built from go.mod's tool lines.
type Pebble struct {
	Dir    string // ACME directory URL
	TLS    string // PEM of Pebble's own HTTPS certificate (for -acme-ca-root)
	mgmt   string
	client *http.Client
}

// goTool builds a tool of go.mod and returns its path.
func goTool(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", name).Output()
	if err != nil {
		t.Fatalf("go tool -n %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// FreeAddr returns a 127.0.0.1 address whose port is free for TCP and UDP.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		return FreeAddr(t)
	}
	u.Close()
	return l.Addr().String()
}

// startProc runs a program until the test ends, once waitAddr accepts.
func startProc(t testing.TB, name, waitAddr string, env []string, args ...string) {
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
	WaitFor(t, 20*time.Second, filepath.Base(name)+" listening on "+waitAddr, func() bool {
		c, err := net.Dial("tcp", waitAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// StartPebble runs a CA whose certificates live validity and whose
// TLS-ALPN-01 checks connect to tlsPort.
func StartPebble(t testing.TB, tlsPort int, validity time.Duration) *Pebble {
	t.Helper()
	dir := t.TempDir()
	dns, dnsMgmt := FreeAddr(t), FreeAddr(t)
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
	p := &Pebble{TLS: filepath.Join(dir, "pebble.pem")}
	os.WriteFile(p.TLS, certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "pebble.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	listen, mgmt := FreeAddr(t), FreeAddr(t)
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

// RootPEM returns Pebble's issuing root (made at its start), PEM.
func (p *Pebble) RootPEM(t testing.TB) []byte {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// Roots returns the pool of Pebble's issuing root.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	b := p.RootPEM(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %s", b)
	}
	return pool
}
