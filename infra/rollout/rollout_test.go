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
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/infra/build"
	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/render"
	"github.com/quiccast/quiccast/infra/rollout"
	"github.com/quiccast/quiccast/infra/sshtest"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

const acmeDomain = "edge-b.quiccast.test"

var (
	buildOnce sync.Once
	bins      map[string]string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds quiccast twice (v1 and v2 stamps) for this machine.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quiccast-deploy-test-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
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
	// c is a second edge (newClusterN with two edges).
	c         *sshtest.Server
	edge2Port int
}

// newCluster starts two hosts: a (redis, origin) and b (edge).
func newCluster(t *testing.T) *cluster { return newClusterACME(t, 0, nil) }

// newClusterACME is newCluster with b's certificate from pebble (nil:
// ACME off) on edgePort (0: any).
func newClusterACME(t *testing.T, edgePort int, pebble *testenv.Pebble) *cluster {
	return newClusterN(t, edgePort, pebble, false)
}

// newClusterN is newClusterACME, with a second edge c when secondEdge.
func newClusterN(t *testing.T, edgePort int, pebble *testenv.Pebble, secondEdge bool) *cluster {
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
	known := []string{a.KnownHostsLine(), b.KnownHostsLine()}
	if secondEdge {
		c.c, c.edge2Port = sshtest.Start(t), sshtest.FreePort(t)
		y += fmt.Sprintf("  - name: c\n    ssh: %s\n    roles: [edge]\n    ports: {edge_http: %d}\n", c.c.Addr, c.edge2Port)
		known = append(known, c.c.KnownHostsLine())
	}
	c.inv, c.secrets = loadInventory(t, dir, y)
	c.ssh = remote.Config{KnownHosts: sshtest.KnownHosts(t, known...), Key: a.UserKey}
	// Every host trusts a's user key.
	ka, _ := os.ReadFile(a.Dir + "/authorized_keys")
	for _, h := range []*sshtest.Server{b, c.c} {
		if h != nil {
			kh, _ := os.ReadFile(h.Dir + "/authorized_keys")
			os.WriteFile(h.Dir+"/authorized_keys", append(kh, ka...), 0o600)
		}
	}
	return c
}

func (c *cluster) deploy(t *testing.T, bin, hosts, role string) ([]rollout.Result, string, error) {
	t.Helper()
	return c.deployLog(t, bin, hosts, role, nil)
}

// deployLog is deploy with progress lines also written to log.
func (c *cluster) deployLog(t *testing.T, bin, hosts, role string, progress io.Writer) ([]rollout.Result, string, error) {
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
		Log:          io.MultiWriter(&log, writerOr(progress)),
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

// TestRollbackRestoresTheEnvAndUnitFiles deploys v2, then a build that
// does not start together with a new env (another cluster token) and a
// new unit (another LimitNOFILE): the rollback must put back the binary,
// edge.env and the unit as they were, and the edge must be ready again.
func TestRollbackRestoresTheEnvAndUnitFiles(t *testing.T) {
	bins := binaries(t)
	c := newCluster(t)
	edge := fmt.Sprintf("http://127.0.0.1:%d", c.edgePort)
	if _, _, err := c.deploy(t, bins["v2.0.0-test"], "", ""); err != nil {
		t.Fatalf("deploy v2: %v\nedge log: %s", err, c.b.UnitLog("quiccast-edge.service"))
	}
	files := []string{render.EnvDir + "/edge.env", "/etc/systemd/system/" + render.Unit(inventory.Edge)}
	read := func() map[string]string {
		m := map[string]string{}
		for _, f := range files {
			b, err := os.ReadFile(c.b.Upper(f))
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(c.b.Upper(f))
			m[f] = fmt.Sprintf("%v\n%s", st.Mode().Perm(), b)
		}
		return m
	}
	before := read()

	c.inv.Cluster.MaxViewers = 2000
	c.secrets.ClusterToken = "cluster-token-2"
	res, _, err := c.deploy(t, bins["broken"], "", "edge")
	var re *rollout.Error
	if !errors.As(err, &re) || re.Host != "b" || !strings.Contains(err.Error(), "rolled back to v2.0.0-test, which is ready") {
		t.Fatalf("broken build with a new configuration: got %v, want b rolled back to v2", err)
	}
	for _, f := range files {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("the error does not say %s was restored: %v", f, err)
		}
	}
	if len(res) != 1 || !slices.Contains(res[0].Changed, "rolled back") {
		t.Fatalf("after rollback: %+v", res)
	}
	after := read()
	for _, f := range files {
		if after[f] != before[f] {
			t.Errorf("%s after the rollback:\n%s\nwant as before:\n%s", f, after[f], before[f])
		}
	}
	get(t, edge+"/readyz")
	if m := get(t, edge+"/metrics"); !strings.Contains(m, `version="v2.0.0-test"`) {
		t.Fatal("edge does not run v2 after the rollback")
	}

	// Deployed again with that configuration and v2, the new files stay.
	if _, _, err := c.deploy(t, bins["v2.0.0-test"], "", "edge"); err != nil {
		t.Fatal(err)
	}
	if now := read(); now[files[0]] == before[files[0]] || !strings.Contains(now[files[0]], "cluster-token-2") || !strings.Contains(now[files[1]], "LimitNOFILE=") || now[files[1]] == before[files[1]] {
		t.Fatalf("the new configuration was not deployed:\n%v", now)
	}
}

// TestDeployThroughANonRootUserWithSudo deploys as "deploy", a user with
// passwordless sudo (a cloud VM's default user), instead of root: every
// command goes through sudo -n, files end up root-owned with their modes,
// and the nodes run. A user without sudo rights is stopped at the first
// host with sudo's own message, before anything changes.
func TestDeployThroughANonRootUserWithSudo(t *testing.T) {
	bins := binaries(t)
	c := newCluster(t)
	for _, s := range []*sshtest.Server{c.a, c.b} {
		s.AddSudoUser(t, "deploy")
	}
	// "nosudo" can log in (the hosts share one authorized_keys) but has
	// no sudoers entry.
	c.a.AddSudoUser(t, "nosudo")
	if err := os.Remove(c.a.Upper("/etc/sudoers.d/nosudo")); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.inv.Hosts {
		h.User = "nosudo"
	}
	_, _, err := c.deploy(t, bins["v1.0.0-test"], "a", "")
	if err == nil || !strings.Contains(err.Error(), "sudo: a password is required") {
		t.Fatalf("deploy as a user without sudo: %v, want sudo's refusal", err)
	}
	t.Logf("as a user without sudo: %v", err)
	if _, serr := os.Stat(c.a.Upper(render.Binary)); serr == nil {
		t.Fatalf("a user without sudo installed the binary (%v)", err)
	}

	for _, h := range c.inv.Hosts {
		h.User = "deploy"
	}
	res, _, err := c.deploy(t, bins["v1.0.0-test"], "", "")
	if err != nil {
		t.Fatalf("deploy as deploy with sudo: %v\nedge log: %s", err, c.b.UnitLog("quiccast-edge.service"))
	}
	for _, r := range res {
		if r.After != "v1.0.0-test" {
			t.Errorf("%s: after %q", r.Host, r.After)
		}
	}
	get(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", c.edgePort))
	for _, f := range []struct {
		s    *sshtest.Server
		path string
		mode os.FileMode
	}{
		{c.b, render.Binary, 0o755},
		{c.b, render.EnvDir + "/edge.env", 0o600},
		{c.a, render.EnvDir + "/origin.env", 0o600},
		{c.b, "/etc/systemd/system/" + render.Unit(inventory.Edge), 0o644},
	} {
		st, err := os.Stat(f.s.Upper(f.path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.mode || st.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: mode %v uid %d, want %v and root", f.path, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, f.mode)
		}
	}
	// Again: nothing changes, through sudo too.
	if _, sum, err := c.deploy(t, bins["v1.0.0-test"], "", ""); err != nil || !strings.Contains(sum, "Nothing changed") {
		t.Fatalf("second deploy as deploy: %v\n%s", err, sum)
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

func writerOr(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// phase records which step of a deploy is under way, from its progress
// lines ("b: restarting quiccast-edge.service").
type phase struct {
	mu  sync.Mutex
	now string
}

func (p *phase) Write(b []byte) (int, error) {
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, ": restarting "); i > 0 {
			p.mu.Lock()
			p.now = "restart of " + strings.TrimSpace(l[i+len(": restarting "):]) + " on " + l[:i]
			p.mu.Unlock()
		}
	}
	return len(b), nil
}

func (p *phase) get() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.now
}

// watcher is a WebSocket viewer that moves to the other edge when its
// edge closes (as the player does on GOAWAY), and records the gaps
// between frames.
type watcher struct {
	mu        sync.Mutex
	frames    int
	last      time.Time
	lastPhase string
	// drainedAt: when the edge closed with GOAWAY; maxMoveGap is the
	// longest time from a drain to the next frame (from the other edge).
	drainedAt  time.Time
	maxMoveGap time.Duration
	moveGaps   int
	maxGap     time.Duration
	maxGapWhen string
	moves      int
	failures   int
	timeline   []string
	repeats    int
	gaps       map[string]time.Duration // longest gap by phase
	// out, when set, gets a line per event ("F" frame, "M" move, "X"
	// failed dial, "N text" note): a viewer in another network
	// namespace reports to the test this way.
	out io.Writer
}

func (w *watcher) run(ctx context.Context, urls []string, ph *phase) {
	i := 0
	for ctx.Err() == nil {
		v, err := viewer.Dial(ctx, urls[i%len(urls)], "")
		if err != nil {
			w.fail()
			i++
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		got := 0
		for ctx.Err() == nil {
			ev, err := v.Next(5 * time.Second)
			if err != nil {
				if got == 0 {
					w.note(fmt.Sprintf("%s: closed before any frame: %v", urls[i%len(urls)], err))
				} else {
					w.note(fmt.Sprintf("%s: closed after %d frames: %v", urls[i%len(urls)], got, err))
				}
				var cl *viewer.Closed
				if errors.As(err, &cl) && cl.Code == wire.CodeGoingAway {
					w.drain()
				}
				break
			}
			got++
			if ev.Control != nil {
				continue
			}
			w.frame(ph)
		}
		v.Close()
		w.move()
		i++
		if got == 0 {
			// Refused (the broadcast is not there yet): do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// frame records a frame received now, and the gap since the last one.
func (w *watcher) frame(ph *phase) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		fmt.Fprintln(w.out, "F")
	}
	cur := ph.get()
	if !w.last.IsZero() {
		// A gap belongs to the phase it began in (and the one it ended
		// in, when they differ).
		g, when := now.Sub(w.last), w.lastPhase
		if when != cur {
			when += " → " + cur
		}
		if g > w.maxGap {
			w.maxGap, w.maxGapWhen = g, when
		}
		if w.gaps == nil {
			w.gaps = map[string]time.Duration{}
		}
		if g > w.gaps[when] {
			w.gaps[when] = g
		}
	}
	if !w.drainedAt.IsZero() {
		// The first frame from the next edge after a drain: what a
		// viewer loses when its edge restarts.
		g := now.Sub(w.drainedAt)
		w.drainedAt = time.Time{}
		if g > w.maxMoveGap {
			w.maxMoveGap = g
		}
		w.moveGaps++
	}
	w.last, w.lastPhase = now, cur
	w.frames++
}

// drain records that the edge closed with 1001 (GOAWAY): the viewer
// moves to the other edge.
func (w *watcher) drain() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		fmt.Fprintln(w.out, "D")
	}
	w.drainedAt = time.Now()
}

// move records a move to the other edge.
func (w *watcher) move() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		fmt.Fprintln(w.out, "M")
	}
	w.moves++
}

// fail records a failed dial.
func (w *watcher) fail() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		fmt.Fprintln(w.out, "X")
	}
	w.failures++
}

// note keeps a line of the viewer's timeline (repeats are counted).
func (w *watcher) note(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		fmt.Fprintln(w.out, "N", s)
	}
	line := time.Now().Format("15:04:05.000") + " " + s
	if n := len(w.timeline); n > 0 && strings.HasSuffix(w.timeline[n-1], s) {
		w.repeats++
		return
	}
	if w.repeats > 0 {
		w.timeline = append(w.timeline, fmt.Sprintf("  (%d more)", w.repeats))
		w.repeats = 0
	}
	w.timeline = append(w.timeline, line)
}

func (w *watcher) stats() (frames int, gap time.Duration, when string, moves, failures int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames, w.maxGap, w.maxGapWhen, w.moves, w.failures
}

// A rolling upgrade of origin and both edges while a viewer watches: the
// viewer moves between the edges as each drains and the longest gap
// between frames is reported.
func TestRollingUpgradeWhileAViewerWatches(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	bins := binaries(t)
	c := newClusterN(t, 0, nil, true)
	if _, _, err := c.deploy(t, bins["v1.0.0-test"], "", ""); err != nil {
		t.Fatal(err)
	}
	origin := c.inv.Host("a").Ports.OriginHTTP
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := exec.CommandContext(ctx, bins["v1.0.0-test"], "publish", "-url", fmt.Sprintf("ws://127.0.0.1:%d/publish/show", origin),
		"-size", "320x180", "-fps", "25", "-gop", "500ms", "-min-backoff", "100ms", "-max-backoff", "500ms")
	var publog bytes.Buffer
	pub.Stdout, pub.Stderr = &publog, &publog
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); pub.Wait() }()
	ph := &phase{now: "before the upgrade"}
	w := &watcher{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, []string{fmt.Sprintf("ws://127.0.0.1:%d/ws/show", c.edgePort), fmt.Sprintf("ws://127.0.0.1:%d/ws/show", c.edge2Port)}, ph)
	}()
	testenv.WaitFor(t, 30*time.Second, "the viewer receiving frames", func() bool { f, _, _, _, _ := w.stats(); return f > 50 })
	f0, _, _, _, _ := w.stats()
	res, _, err := c.deployLog(t, bins["v2.0.0-test"], "", "", ph)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	for _, r := range res {
		if r.After != "v2.0.0-test" {
			t.Errorf("%s: after %q", r.Host, r.After)
		}
	}
	ph.mu.Lock()
	ph.now = "after the upgrade"
	ph.mu.Unlock()
	testenv.WaitFor(t, 30*time.Second, "frames after the upgrade", func() bool { f, _, _, _, _ := w.stats(); return f > f0+100 })
	cancel()
	<-done
	frames, gap, when, moves, failures := w.stats()
	t.Logf("rolling upgrade while watching: %d frames, longest gap %v (during %s), %d moves between edges, %d failed dials", frames, gap.Round(time.Millisecond), when, moves, failures)
	w.mu.Lock()
	gaps := w.gaps
	w.mu.Unlock()
	for ph, g := range gaps {
		t.Logf("  longest gap during %s: %v", ph, g.Round(time.Millisecond))
	}
	w.mu.Lock()
	moveGap, drains := w.maxMoveGap, w.moveGaps
	w.mu.Unlock()
	t.Logf("  longest gap from an edge's GOAWAY to frames from the other edge: %v (%d moves)", moveGap.Round(time.Millisecond), drains)
	// Edges drain and the viewer moves to the other edge: the goal is no
	// gap over 1 s; allow some slack for a loaded machine. The origin
	// restart is reported, not asserted (one origin: the publisher must
	// reconnect; see infra/README.md).
	for ph, g := range gaps {
		if began, _, _ := strings.Cut(ph, " → "); strings.Contains(began, "quiccast-edge") && g > 5*time.Second {
			t.Errorf("longest gap during %s: %v, want under 5 s (goal 1 s)", ph, g)
		}
	}
	if os.Getenv("QC_DEBUG_UNITS") != "" {
		for _, h := range []*sshtest.Server{c.a, c.b, c.c} {
			t.Logf("%s units:\norigin: %s\nedge: %s", h.Addr, h.UnitLog("quiccast-origin.service"), h.UnitLog("quiccast-edge.service"))
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("viewer timeline:\n%s\npublisher:\n%s", strings.Join(w.timeline, "\n"), publog.String())
	}

}

// loadInventory writes y as dir/inventory.yaml and loads it and its
// secrets, as `task deploy` does.
func loadInventory(t *testing.T, dir, y string) (*inventory.Inventory, inventory.Secrets) {
	t.Helper()
	p := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := inv.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	return inv, secrets
}
