package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// Chromium plays over WebTransport from an edge whose certificate comes
// from an ACME CA (Pebble), with no serverCertificateHashes: /cert-hash
// lists none, and the page is HTTPS on the edge's DNS name. Chromium
// trusts Pebble's root from an NSS database in a fresh HOME (certutil,
// Debian's libnss3-tools), as a machine trusts Let's Encrypt's, and
// resolves the name to 127.0.0.1.
func TestChromiumPlaysOverWebTransportWithAnACMECertificate(t *testing.T) {
	requireBrowser(t)
	certutil := testenv.RequireTool(t, "certutil")
	bin := buildBinary(t)
	const domain = "live.quiccast.test"
	addr := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	var portN int
	for _, c := range port {
		portN = portN*10 + int(c-'0')
	}
	p := testenv.StartPebble(t, portN, time.Hour)

	_, url, lines := launchDemo(t, bin, "-listen", addr, "-origin-listen", "127.0.0.1:0", "-rtmp-listen", "",
		"-acme-domain", domain, "-acme-ca", p.Dir, "-acme-ca-root", p.TLS, "-acme-dir", t.TempDir())
	if !strings.HasPrefix(url, "https://"+domain+":"+port+"/") {
		t.Fatalf("watch URL %q, want HTTPS on %s", url, domain)
	}
	go func() {
		for lines.Scan() {
		}
	}()

	// Wait for the certificate: HTTPS verified against Pebble's root.
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.Roots(t), ServerName: domain},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	testenv.WaitFor(t, 60*time.Second, "the edge serving its ACME certificate", func() bool {
		resp, err := cl.Get("https://" + domain + ":" + port + "/cert-hash")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct{ Hashes []string }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
			return false
		}
		if len(body.Hashes) != 0 {
			t.Fatalf("/cert-hash lists %d hashes with an ACME certificate; want none", len(body.Hashes))
		}
		return true
	})
	// Trust Pebble's root the way a system trusts a public CA: an NSS
	// database in the HOME Chromium runs with.
	home := t.TempDir()
	db := "sql:" + filepath.Join(home, ".pki", "nssdb")
	os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700)
	root := filepath.Join(home, "pebble-root.pem")
	os.WriteFile(root, p.RootPEM(t), 0o644)
	for _, args := range [][]string{{"-d", db, "-N", "--empty-password"}, {"-d", db, "-A", "-t", "C,,", "-n", "pebble", "-i", root}} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v %s", args, err, out)
		}
	}
	t.Setenv("HOME", home)
	// QUIC in Chromium accepts a root that is not a public one only for
	// origins forced onto QUIC: the page then loads over HTTP/3 too.
	args, _ := json.Marshal([]string{"--host-resolver-rules=MAP " + domain + " 127.0.0.1", "--origin-to-force-quic-on=" + domain + ":" + port})
	t.Setenv("QC_CHROMIUM_ARGS", string(args))
	rep := watchInChromium(t, url, "chromium-webtransport-acme", 4, 0)
	checkPlayback(t, rep, "webtransport")
	if rep.Last.Stats.Fallbacks != 0 {
		t.Fatalf("fell back %d times", rep.Last.Stats.Fallbacks)
	}

	// The same page over wss://: Chromium's TLS (BoringSSL) against the
	// edge's fan-out, which seals the records itself once the upgrade is
	// done (shared/tlsrec), or the kernel where it offers TLS.
	rep = watchInChromium(t, url+"?transport=websocket", "chromium-wss-acme", 4, 0)
	checkPlayback(t, rep, "websocket")
	resp, err := cl.Get("https://" + domain + ":" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !regexp.MustCompile(`quiccast_edge_ws_viewers_total\{writer="k?tls"\} [1-9]`).Match(body) {
		t.Fatalf("no wss:// viewer on the fan-out; /metrics (HTTP %d) says:\n%s", resp.StatusCode, grepLines(body, "quiccast_edge_ws_viewers_total"))
	}
}

// grepLines returns the lines of b that contain s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
