package rollout_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/infra/build"
	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/render"
	"github.com/quiccast/quiccast/infra/rollout"
	"github.com/quiccast/quiccast/infra/sshtest"
	"github.com/quiccast/quiccast/shared/testenv"
)

const acmeDomain = "edge-b.quiccast.test"

var (
	buildOnce sync.Once
	bins      map[string]string
	buildErr  error
)

// binaries builds quiccast twice (v1 and v2 stamps) for this machine.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quiccast-deploy-test-")
		if err != nil {
			buildErr = err
			return
		}
		bins = map[string]string{}
		for _, v := range []string{"v1.0.0-test", "v2.0.0-test"} {
			p, err := build.Binary(context.Background(), "../..", filepath.Join(dir, v), "amd64", build.Stamp{Version: v, Commit: "0123456789abcdef", Built: "2026-12-03T00:00:00Z"})
			if err != nil {
				buildErr = err
				return
			}
			bins[v] = p
		}
		// A build that starts but never becomes ready.
		bad := filepath.Join(dir, "broken")
		buildErr = os.WriteFile(bad, []byte("#!/bin/sh\nif [ \"$1\" = version ]; then echo 'quiccast v3.0.0-broken commit x built y go'; exit 0; fi\necho 'broken build: exiting' >&2\nexit 1\n"), 0o755)
		bins["broken"] = bad
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

type cluster struct {
	inv      *inventory.Inventory
	secrets  inventory.Secrets
	ssh      remote.Config
	a, b     *sshtest.Server
	edgePort int
}

// newCluster starts two hosts: a (redis, origin) and b (edge).
func newCluster(t *testing.T) *cluster { return newClusterACME(t, 0, nil) }

// newClusterACME is newCluster with b's certificate from pebble (nil:
// ACME off) on edgePort (0: any).
func newClusterACME(t *testing.T, edgePort int, pebble *testenv.Pebble) *cluster {
	a, b := sshtest.Start(t), sshtest.Start(t)
	if edgePort == 0 {
		edgePort = sshtest.FreePort(t)
	}
	c := &cluster{a: a, b: b, edgePort: edgePort}
	acme, dns := "{enabled: false}", ""
	if pebble != nil {
		acme = fmt.Sprintf("{ca: %q, ca_root: %q, email: ops@quiccast.test}", pebble.Dir, pebble.TLS)
		dns = "dns: " + acmeDomain
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "redis-password"), []byte("s3cret pass\n"), 0o600)
	t.Setenv("QC_TEST_CLUSTER_TOKEN", "cluster-token-1")
	y := fmt.Sprintf(`cluster:
  cluster_token: env:QC_TEST_CLUSTER_TOKEN
  redis_password: file:redis-password
  max_viewers: 1000
  acme: %s
hosts:
  - name: a
    ssh: %s
    roles: [redis, origin]
    ports: {redis: %d, origin_http: %d, origin_relay: %d, rtmp: %d}
  - name: b
    ssh: %s
    roles: [edge]
    %s
    ports: {edge_http: %d}
`, acme, a.Addr, sshtest.FreePort(t), sshtest.FreePort(t), sshtest.FreePort(t), sshtest.FreePort(t), b.Addr, dns, c.edgePort)
	p := filepath.Join(dir, "inventory.yaml")
	os.WriteFile(p, []byte(y), 0o600)
	inv, err := inventory.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	c.inv = inv
	if c.secrets, err = inv.Resolve(); err != nil {
		t.Fatal(err)
	}
	c.ssh = remote.Config{KnownHosts: sshtest.KnownHosts(t, a.KnownHostsLine(), b.KnownHostsLine()), Key: a.UserKey}
	// Both hosts trust the same user key.
	kb, _ := os.ReadFile(b.Dir + "/authorized_keys")
	ka, _ := os.ReadFile(a.Dir + "/authorized_keys")
	os.WriteFile(b.Dir+"/authorized_keys", append(kb, ka...), 0o600)
	return c
}

func (c *cluster) deploy(t *testing.T, bin, hosts, role string) ([]rollout.Result, string, error) {
	t.Helper()
	sel, err := c.inv.Select(hosts, role)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := rollout.Run(ctx, rollout.Options{
		Inventory: c.inv, Hosts: sel, Secrets: c.secrets, SSH: c.ssh,
		Binary:       func(context.Context, string) (string, error) { return bin, nil },
		ReadyTimeout: 20 * time.Second,
		Log:          &log,
	})
	var sum bytes.Buffer
	rollout.Summary(&sum, res)
	t.Logf("deploy %s:\n%s%s", filepath.Base(bin), log.String(), sum.String())
	return res, sum.String(), err
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

func TestDeployInstallsUpgradesRollsBackAndIsIdempotent(t *testing.T) {
	bins := binaries(t)
	c := newCluster(t)
	edge := fmt.Sprintf("http://127.0.0.1:%d", c.edgePort)

	res, _, err := c.deploy(t, bins["v1.0.0-test"], "", "")
	if err != nil {
		t.Fatalf("first deploy: %v\nedge log: %s\norigin log: %s", err, c.b.UnitLog("quiccast-edge.service"), c.a.UnitLog("quiccast-origin.service"))
	}
	for _, r := range res {
		if r.Before != "-" || r.After != "v1.0.0-test" {
			t.Errorf("%s: before %q after %q, want - and v1.0.0-test", r.Host, r.Before, r.After)
		}
	}
	get(t, edge+"/readyz")
	if m := get(t, edge+"/metrics"); !strings.Contains(m, `quiccast_build_info{built="2026-12-03T00:00:00Z",commit="0123456789abcdef"`) || !strings.Contains(m, `version="v1.0.0-test"`) {
		t.Fatalf("edge /metrics lacks the build_info of v1")
	}
	// Files on the hosts: secrets 0600, the node runs as its own user.
	for _, f := range []string{"/etc/quiccast/edge.env"} {
		st, err := os.Stat(c.b.Upper(f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, err, st)
		}
	}
	env, _ := os.ReadFile(c.b.Upper("/etc/quiccast/edge.env"))
	if !strings.Contains(string(env), `QC_REDIS_URL="redis://:s3cret%20pass@127.0.0.1:`) || !strings.Contains(string(env), `QC_CLUSTER_TOKEN="cluster-token-1"`) {
		t.Fatalf("edge.env:\n%s", env)
	}
	if rc, _ := os.ReadFile(c.a.Upper(render.RedisInc)); !strings.Contains(string(rc), `requirepass "s3cret pass"`) {
		t.Fatalf("redis settings:\n%s", rc)
	}

	// The same build again changes nothing.
	_, sum, err := c.deploy(t, bins["v1.0.0-test"], "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sum, "Nothing changed") {
		t.Fatalf("second deploy of the same build changed something:\n%s", sum)
	}

	// v2 replaces v1, node by node.
	res, _, err = c.deploy(t, bins["v2.0.0-test"], "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Host == "b" && (r.Before != "v1.0.0-test" || r.After != "v2.0.0-test") {
			t.Fatalf("edge: before %q after %q", r.Before, r.After)
		}
	}
	if m := get(t, edge+"/metrics"); !strings.Contains(m, `version="v2.0.0-test"`) {
		t.Fatal("edge /metrics does not show v2 after the upgrade")
	}

	// A build that never gets ready is rolled back, and the run stops.
	res, _, err = c.deploy(t, bins["broken"], "", "edge")
	var re *rollout.Error
	if !errors.As(err, &re) || !errors.Is(err, rollout.ErrNotReady) || re.Host != "b" || !strings.Contains(err.Error(), "rolled back to v2.0.0-test, which is ready") {
		t.Fatalf("broken build: got %v, want a rollout.Error for b saying it rolled back to v2", err)
	}
	if !strings.Contains(err.Error(), "broken build: exiting") {
		t.Errorf("the error does not quote the unit's last log lines: %v", err)
	}
	if len(res) != 1 || res[0].After != "v2.0.0-test" {
		t.Fatalf("after rollback: %+v", res)
	}
	get(t, edge+"/readyz")
	if m := get(t, edge+"/metrics"); !strings.Contains(m, `version="v2.0.0-test"`) {
		t.Fatal("edge does not run v2 after the rollback")
	}
}

func TestHostKeyMismatchStopsBeforeAnythingChanges(t *testing.T) {
	c := newCluster(t)
	c.ssh.KnownHosts = sshtest.KnownHosts(t, c.a.KnownHostsLine(), sshtest.KeyLine(t, c.b.Addr))
	_, _, err := c.deploy(t, "/nonexistent", "", "")
	if !errors.Is(err, remote.ErrHostKey) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("got %v, want a host key error saying nothing was changed", err)
	}
	for _, s := range []*sshtest.Server{c.a, c.b} {
		if _, err := os.Stat(s.Upper("/etc/quiccast")); !os.IsNotExist(err) {
			t.Fatalf("a host was changed before the host key check of every host: %v", err)
		}
	}
}

func TestUnreachableHostStopsBeforeAnythingChanges(t *testing.T) {
	c := newCluster(t)
	c.inv.Host("b").SSH = fmt.Sprintf("127.0.0.1:%d", sshtest.FreePort(t))
	_, _, err := c.deploy(t, "/nonexistent", "", "")
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "b: ") {
		t.Fatalf("got %v, want an error naming b and saying nothing was changed", err)
	}
	if _, err := os.Stat(c.a.Upper("/etc/quiccast")); !os.IsNotExist(err) {
		t.Fatalf("host a was changed although b is unreachable: %v", err)
	}
}

// An edge with a DNS name, deployed, gets its certificate from the ACME
// CA (Pebble, checking TLS-ALPN-01 on the deployed edge's port), is ready
// only once it serves it, and keeps it in its state directory.
func TestDeployedEdgeGetsItsCertificateFromACME(t *testing.T) {
	bins := binaries(t)
	port := sshtest.FreePort(t)
	p := testenv.StartPebble(t, port, time.Hour)
	c := newClusterACME(t, port, p)
	if _, _, err := c.deploy(t, bins["v1.0.0-test"], "", ""); err != nil {
		t.Fatalf("deploy: %v\nedge log: %s", err, c.b.UnitLog("quiccast-edge.service"))
	}
	env, _ := os.ReadFile(c.b.Upper("/etc/quiccast/edge.env"))
	for _, want := range []string{`QC_EDGE_ACME_DOMAIN="` + acmeDomain + `"`, `QC_EDGE_ACME_CA="` + p.Dir + `"`, `QC_EDGE_ACME_CA_ROOT="/etc/quiccast/acme-ca-root.pem"`, `QC_EDGE_ACME_DIR="/var/lib/quiccast/acme"`} {
		if !strings.Contains(string(env), want) {
			t.Fatalf("edge.env lacks %s:\n%s", want, env)
		}
	}
	tc := &tls.Config{RootCAs: p.Roots(t), ServerName: acmeDomain}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
	}}, Timeout: 5 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("https://%s:%d/readyz", acmeDomain, port))
	if err != nil {
		t.Fatalf("HTTPS with the CA's root: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz: %s", resp.Status)
	}
	certs, _ := filepath.Glob(c.b.Upper("/var/lib/quiccast/acme/certificates/*/" + acmeDomain + "/" + acmeDomain + ".crt"))
	if len(certs) != 1 {
		t.Fatalf("no certificate cached in the edge's state directory: %v", certs)
	}
}
