package rollout_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/render"
	"github.com/quiccast/quiccast/infra/rollout"
	"github.com/quiccast/quiccast/infra/sshtest"
	"github.com/quiccast/quiccast/shared/testenv"
)

// The viewer half of TestNetnsClusterDeployUpgradeRollback: the test runs
// this binary again in the client's network namespace with
// QC_NETNS_VIEWER set to the viewer URLs (comma-separated); it watches
// (moving to the next URL when its edge closes) and reports each event
// on stdout. With QC_NETNS_VIEWER_FRAMES=n it stops after n frames.
func TestNetnsViewerProcess(t *testing.T) {
	urls := os.Getenv("QC_NETNS_VIEWER")
	if urls == "" {
		t.Skip("run by TestNetnsClusterDeployUpgradeRollback in the client namespace")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The test closes stdin to stop the viewer.
	go func() { bufio.NewReader(os.Stdin).ReadByte(); cancel() }()
	w := &watcher{out: os.Stdout}
	if n, _ := strconv.Atoi(os.Getenv("QC_NETNS_VIEWER_FRAMES")); n > 0 {
		go func() {
			for ctx.Err() == nil {
				if f, _, _, _, _ := w.stats(); f >= n {
					cancel()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	w.run(ctx, strings.Split(urls, ","), &phase{})
}

// netViewer is a viewer running in a network namespace, its events fed
// into a watcher here.
type netViewer struct {
	w     *watcher
	stop  func()
	done  chan struct{}
	errMu sync.Mutex
	log   strings.Builder
}

func startNetViewer(t *testing.T, n *sshtest.Net, ns string, ph *phase, frames int, urls ...string) *netViewer {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.Command(ns, exe, "-test.run=^TestNetnsViewerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "QC_NETNS_VIEWER="+strings.Join(urls, ","), fmt.Sprintf("QC_NETNS_VIEWER_FRAMES=%d", frames))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &netViewer{w: &watcher{}, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "F":
				v.w.frame(ph)
			case l == "D":
				v.w.mu.Lock()
				v.w.drainedAt = time.Now()
				v.w.mu.Unlock()
			case l == "M":
				v.w.mu.Lock()
				v.w.moves++
				v.w.mu.Unlock()
			case l == "X":
				v.w.mu.Lock()
				v.w.failures++
				v.w.mu.Unlock()
			case strings.HasPrefix(l, "N "):
				v.w.note(l[2:])
			default:
				v.errMu.Lock()
				v.log.WriteString(l + "\n")
				v.errMu.Unlock()
			}
		}
		cmd.Wait()
	}()
	var once sync.Once
	v.stop = func() {
		once.Do(func() {
			stdin.Close()
			select {
			case <-v.done:
			case <-time.After(10 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-v.done
			}
		})
	}
	t.Cleanup(v.stop)
	return v
}

// netCluster is four hosts on a bridge, each its own network namespace
// with its own address and a real sshd: redis, origin, edge-1 and
// edge-2 (a lower tier: -parent edge-1), plus a client namespace. Every
// node uses its default ports: the hosts differ by address, as VMs do.
type netCluster struct {
	cluster
	net    *sshtest.Net
	hosts  map[string]*sshtest.Server
	ip     map[string]string
	client string // the client's namespace
	mode   string // sshtest.ModeSystemd or ModeStandIn
}

func newNetCluster(t *testing.T) *netCluster {
	n := sshtest.NewNet(t)
	c := &netCluster{net: n, hosts: map[string]*sshtest.Server{}, ip: map[string]string{}}
	names := []string{"redis", "origin", "edge-1", "edge-2"}
	var known []string
	start := time.Now()
	hosts, mode, why := n.Hosts(t, names...)
	c.mode = mode
	switch mode {
	case sshtest.ModeSystemd:
		t.Logf("hosts: real systemd (%s); booted in %v", why, time.Since(start).Round(100*time.Millisecond))
	default:
		t.Logf("hosts: sshd with the stand-in systemctl, units checked by systemd-analyze verify, sandboxing not enforced; not systemd because: %s", why)
	}
	for i, name := range names {
		s := hosts[i]
		c.hosts[name] = s
		c.ip[name], _, _ = net.SplitHostPort(s.Addr)
		known = append(known, s.KnownHostsLine())
	}
	c.client, c.ip["client"] = n.Namespace(t, "client")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "redis-password"), []byte("s3cret pass\n"), 0o600)
	t.Setenv("QC_TEST_CLUSTER_TOKEN", "cluster-token-1")
	y := fmt.Sprintf(`cluster:
  cluster_token: env:QC_TEST_CLUSTER_TOKEN
  redis_password: file:redis-password
  max_viewers: 1000
  acme: {enabled: false}
hosts:
  - {name: redis, ssh: %s, roles: [redis]}
  - {name: origin, ssh: %s, roles: [origin]}
  - {name: edge-1, ssh: %s, roles: [edge], region: eu}
  - {name: edge-2, ssh: %s, roles: [edge], region: eu-2, parent: edge-1}
`, c.ip["redis"], c.ip["origin"], c.ip["edge-1"], c.ip["edge-2"])
	c.inv, c.secrets = loadInventory(t, dir, y)
	r := c.hosts["redis"]
	c.ssh = remote.Config{KnownHosts: sshtest.KnownHosts(t, known...), Key: r.UserKey}
	ka, _ := os.ReadFile(r.Dir + "/authorized_keys")
	for _, name := range names[1:] {
		h := c.hosts[name]
		kh, _ := os.ReadFile(h.Dir + "/authorized_keys")
		os.WriteFile(h.Dir+"/authorized_keys", append(kh, ka...), 0o600)
	}
	return c
}

// sandboxEnforced checks, on a host booted with systemd, that the unit
// of role runs with its sandboxing: the running process (systemd's
// MainPID) is user quiccast with CAP_NET_BIND_SERVICE only, no new
// privileges and a seccomp filter; in its mount namespace /usr, /etc and
// /home are read-only or empty and /tmp is its own, while its
// StateDirectory is writable; systemd-analyze security scores it under
// render.MaxExposure.
func (c *netCluster) sandboxEnforced(t *testing.T, host, role string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := remote.Dial(ctx, host, c.hosts[host].Addr, "root", c.ssh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	unit := render.Unit(role)
	out, err := h.Run(ctx, `set -u
pid=$(systemctl show -p MainPID --value `+unit+`)
echo "pid=$pid"
echo "user=$(stat -c %U /proc/$pid)"
grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/$pid/status | tr -d '\t' | tr ':' '='
touch /tmp/quiccast-host-tmp
for p in /usr/local/bin/quiccast-probe /etc/quiccast-probe /var/lib/quiccast/probe; do
  if nsenter -t "$pid" -m sh -c "touch $p && rm $p" 2>/dev/null; then echo "write $p=ok"; else echo "write $p=denied"; fi
done
nsenter -t "$pid" -m sh -c 'test -e /tmp/quiccast-host-tmp' && echo tmp=shared || echo tmp=private
rm -f /tmp/quiccast-host-tmp
systemd-analyze security --no-pager `+unit+` | tail -n 1`, nil)
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", unit, host, err, out)
	}
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	want := map[string]string{
		"user":   render.User,
		"CapEff": "0000000000000400", "CapPrm": "0000000000000400", "CapBnd": "0000000000000400", "CapAmb": "0000000000000400", // CAP_NET_BIND_SERVICE
		"NoNewPrivs": "1", "Seccomp": "2",
		"write /usr/local/bin/quiccast-probe": "denied", "write /etc/quiccast-probe": "denied",
		"write /var/lib/quiccast/probe": "ok", "tmp": "private",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s on %s (systemd's MainPID %s): %s = %q, want %q", unit, host, got["pid"], k, got[k], v)
		}
	}
	score, ok := render.Exposure(out)
	if !ok || score > render.MaxExposure {
		t.Errorf("%s on %s: systemd-analyze security: %v (want <= %.1f)\n%s", unit, host, score, render.MaxExposure, out)
	}
	t.Logf("%s on %s, started by systemd: user %s, CapEff %s, NoNewPrivs %s, Seccomp %s, /usr and /etc read-only, /tmp private, exposure %.1f", unit, host, got["user"], got["CapEff"], got["NoNewPrivs"], got["Seccomp"], score)
}

func (c *netCluster) unitLogs() string {
	var b strings.Builder
	for _, name := range []string{"origin", "edge-1", "edge-2"} {
		role := "edge"
		if name == "origin" {
			role = "origin"
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", name, c.hosts[name].UnitLog("quiccast-"+role+".service"))
	}
	return b.String()
}

// The test, on hosts that are network namespaces: deploy v1 to
// redis, origin and two edges over SSH; ffmpeg in the client namespace
// publishes over RTMP to the origin's address; viewers in the client
// namespace play from both edges; a v2 deploy upgrades every node while a
// viewer watches (the longest gap is reported per phase); a build that
// does not start is rolled back on the edge it was tried on.
func TestNetnsClusterDeployUpgradeRollback(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	c := newNetCluster(t) // skips first when not root
	bins := binaries(t)
	start := time.Now()
	if _, sum, err := c.deploy(t, bins["v1.0.0-test"], "", ""); err != nil {
		t.Fatalf("first deploy: %v\n%s", err, c.unitLogs())
	} else if !strings.Contains(sum, c.ip["edge-1"]) && !strings.Contains(sum, "edge-1") {
		t.Fatalf("summary does not name edge-1:\n%s", sum)
	}
	t.Logf("first deploy of 4 hosts: %v", time.Since(start).Round(100*time.Millisecond))
	if c.mode == sshtest.ModeSystemd {
		for _, h := range []struct{ host, role string }{{"origin", "origin"}, {"edge-1", "edge"}} {
			c.sandboxEnforced(t, h.host, h.role)
		}
	}
	env, _ := os.ReadFile(c.hosts["edge-2"].Upper("/etc/quiccast/edge.env"))
	if !strings.Contains(string(env), `QC_EDGE_PARENT="`+c.ip["edge-1"]+`:7002"`) {
		t.Fatalf("edge-2 does not pull from edge-1's address:\n%s", env)
	}

	// ffmpeg publishes from the client namespace over RTMP to the
	// origin's address (again when the origin restarts).
	rtmp := fmt.Sprintf("rtmp://%s:1935/live/show", c.ip["origin"])
	ff := c.net.Command(c.client, "sh", "-c", `while :; do ffmpeg -hide_banner -nostdin -loglevel error -re \
  -f lavfi -i testsrc2=size=320x180:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 12 -pix_fmt yuv420p -c:a aac -b:a 64k -f flv "$0"; sleep 0.1; done`, rtmp)
	var fflog strings.Builder
	ff.Stderr = &fflog
	ff.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ff.Start(); err != nil {
		t.Fatal(err)
	}
	ffDone := make(chan struct{})
	go func() { ff.Wait(); close(ffDone) }()
	stopFF := func() {
		syscall.Kill(-ff.Process.Pid, syscall.SIGKILL)
		<-ffDone
	}
	defer stopFF()

	ws := func(host string) string { return fmt.Sprintf("ws://%s:8080/ws/show", c.ip[host]) }
	// Each edge plays, seen from the client namespace.
	for _, e := range []string{"edge-1", "edge-2"} {
		v := startNetViewer(t, c.net, c.client, &phase{}, 50, ws(e))
		select {
		case <-v.done:
		case <-time.After(60 * time.Second):
		}
		v.stop()
		if f, _, _, _, _ := v.w.stats(); f < 50 {
			t.Fatalf("%s: %d frames in the client namespace, want 50\ntimeline: %s\n%s\nffmpeg: %s\n%s", e, f, strings.Join(v.w.timeline, "\n"), v.log.String(), fflog.String(), c.unitLogs())
		}
	}

	// Chromium, in the client namespace, plays each edge's watch page.
	for _, e := range []string{"edge-1", "edge-2"} {
		for _, tr := range []string{"webtransport", "websocket"} {
			chromiumPlays(t, c, fmt.Sprintf("http://%s:8080", c.ip[e]), "/watch/show?transport="+tr, tr)
		}
	}

	// v2 while a viewer watches, moving between the edges on GOAWAY.
	ph := &phase{now: "before the upgrade"}
	v := startNetViewer(t, c.net, c.client, ph, 0, ws("edge-1"), ws("edge-2"))
	testenv.WaitFor(t, 30*time.Second, "the viewer receiving frames", func() bool { f, _, _, _, _ := v.w.stats(); return f > 25 })
	f0, _, _, _, _ := v.w.stats()
	start = time.Now()
	res, _, err := c.deployLog(t, bins["v2.0.0-test"], "", "", ph)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, c.unitLogs())
	}
	t.Logf("upgrade of 4 hosts: %v", time.Since(start).Round(100*time.Millisecond))
	for _, r := range res {
		if r.Host != "redis" && r.After != "v2.0.0-test" {
			t.Errorf("%s: after %q", r.Host, r.After)
		}
	}
	ph.mu.Lock()
	ph.now = "after the upgrade"
	ph.mu.Unlock()
	testenv.WaitFor(t, 30*time.Second, "frames after the upgrade", func() bool { f, _, _, _, _ := v.w.stats(); return f > f0+50 })
	v.stop()
	frames, gap, when, moves, failures := v.w.stats()
	t.Logf("rolling upgrade while watching (netns): %d frames, longest gap %v (during %s), %d moves between edges, %d failed dials", frames, gap.Round(time.Millisecond), when, moves, failures)
	v.w.mu.Lock()
	gaps := v.w.gaps
	v.w.mu.Unlock()
	for p, g := range gaps {
		t.Logf("  longest gap during %s: %v", p, g.Round(time.Millisecond))
	}
	v.w.mu.Lock()
	moveGap, drains := v.w.maxMoveGap, v.w.moveGaps
	v.w.mu.Unlock()
	t.Logf("  longest gap from an edge's GOAWAY to frames from the other edge: %v (%d moves)", moveGap.Round(time.Millisecond), drains)
	// Each move on GOAWAY within the goal of 1 s (asserted at 2 s: a
	// loaded machine). Usually the viewer is on each edge as it restarts
	// (2 moves); while the origin's restart stalls the edges (see
	// infra/README.md) its 5 s read timeout may move it first, and then
	// it can miss a drain.
	if moveGap > 2*time.Second {
		t.Errorf("%d moves on GOAWAY, the longest %v: want each under 2 s (goal 1 s)", drains, moveGap)
	}
	if drains == 0 {
		t.Logf("the viewer saw no GOAWAY: it had left each edge before its restart")
	}
	if failures > 0 {
		t.Errorf("%d failed dials while moving between edges, want none (the other edge is ready whenever one restarts)", failures)
	}
	// Other gaps are reported, not asserted: after the origin's restart
	// an edge's resubscription waits for the new incarnation's group
	// numbers (see infra/README.md), up to the viewer's 5 s read timeout.
	if t.Failed() || testing.Verbose() {
		t.Logf("viewer timeline:\n%s", strings.Join(v.w.timeline, "\n"))
	}
	if os.Getenv("QC_DEBUG_UNITS") != "" {
		t.Logf("units:\n%s\nffmpeg: %s", c.unitLogs(), fflog.String())
	}

	// A build that does not start is rolled back on the first edge, and
	// the run stops before the second.
	start = time.Now()
	res, _, err = c.deploy(t, bins["broken"], "", "edge")
	took := time.Since(start)
	t.Logf("deploy of a broken build, rolled back: %v", took.Round(100*time.Millisecond))
	// The unit exits at once: the rollback does not wait out the 20 s
	// ReadyTimeout; the readiness poll sees the exit ("exited … before
	// answering": inactive from the stand-in; from systemd, which restarts
	// it on failure, "activating, auto-restart" or "failed"; a timeout
	// says "did not answer … within"). The time it took is logged, not
	// asserted: on a busy machine the SSH round trips alone can take
	// seconds.
	if err == nil || !strings.Contains(err.Error(), "exited (systemctl is-active: ") || !strings.Contains(err.Error(), "before answering") {
		t.Errorf("broken build: %v after %v, want the exit seen before the ready timeout", err, took)
	}
	var re *rollout.Error
	if !errors.As(err, &re) || !errors.Is(err, rollout.ErrNotReady) || re.Host != "edge-1" || !strings.Contains(err.Error(), "rolled back to v2.0.0-test, which is ready") {
		t.Fatalf("broken build: got %v, want a rollout.Error for edge-1 saying it rolled back to v2", err)
	}
	if len(res) != 1 || res[0].After != "v2.0.0-test" {
		t.Fatalf("after rollback: %+v", res)
	}
	v = startNetViewer(t, c.net, c.client, &phase{}, 25, ws("edge-2"))
	select {
	case <-v.done:
	case <-time.After(30 * time.Second):
	}
	v.stop()
	if f, _, _, _, _ := v.w.stats(); f < 25 {
		t.Fatalf("edge-2 after edge-1's rollback: %d frames, want 25\n%s", f, c.unitLogs())
	}
}

// chromiumPlays runs the player's browser check (client-js's
// test/browser/watch.mjs: headless Chromium through Playwright) in the
// client namespace on url: it exits non-zero unless video plays (time
// advances, frames are decoded) for 2 s. Without Chromium, node or
// playwright-core it says so and returns (fails under QC_REQUIRE_TOOLS=1).
//
// The page is served over plain http from a private address, which is not
// a secure context, so WebTransport would be off: Chromium is told to treat
// that one origin as secure (as an https page on a real domain is), and the
// player then uses the edge's self-signed certificate through its hash.
func chromiumPlays(t *testing.T, c *netCluster, origin, path, transport string) {
	url := origin + path
	t.Helper()
	var missing []string
	for _, tool := range []string{"chromium", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if _, err := os.Stat("../../client-js/node_modules/playwright-core/package.json"); err != nil {
		missing = append(missing, "client-js/node_modules/playwright-core (npm ci in client-js)")
	}
	if len(missing) > 0 {
		if os.Getenv("QC_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%v required (QC_REQUIRE_TOOLS=1) for Chromium in the client namespace", missing)
		}
		t.Logf("Chromium part skipped: %v missing", missing)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.net.Command(c.client, "node", "test/browser/watch.mjs", url, filepath.Join(t.TempDir(), "watch.png"), "2", "0")
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	cmd.Dir = "../../client-js"
	cmd.Env = append(os.Environ(), "QC_WATCH_PLAY_TIMEOUT=90",
		`QC_CHROMIUM_ARGS=["--unsafely-treat-insecure-origin-as-secure=`+origin+`"]`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("Chromium in the client namespace did not play %s: %v\n%s", url, err, tail(stderr.String(), 30))
	}
	var rep struct {
		First, Last struct {
			CurrentTime float64
			Frames      int
			Stats       struct{ Transport, Edge string }
		}
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &rep); err != nil {
		t.Fatalf("watch.mjs report: %v\n%s", err, stdout.String())
	}
	if rep.Last.Stats.Transport != transport {
		t.Fatalf("Chromium played %s over %q, want %s", url, rep.Last.Stats.Transport, transport)
	}
	t.Logf("Chromium in the client namespace played %s over %s: %d frames decoded, currentTime %.1f -> %.1f s (%v with start-up)",
		url, rep.Last.Stats.Transport, rep.Last.Frames, rep.First.CurrentTime, rep.Last.CurrentTime, time.Since(start).Round(100*time.Millisecond))
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
