package sshtest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/quiccast/quiccast/shared/testenv"
)

// Net is a test network: a bridge in this network namespace (the
// operator's machine, at .1) and hosts, each a network namespace of its
// own with one address on the bridge. Every name it creates starts with
// "qct<pid>" (namespaces "qct<pid>-<host>", the bridge "qcb<pid>", veths
// "qcv<pid>x<n>"), so a later run removes what a crashed run left and
// nothing else is ever touched.
type Net struct {
	prefix string // qct<pid>-
	bridge string
	subnet string // "10.a.b"
	n      int    // addresses handed out (.2 on)
}

var netSeq struct {
	sync.Mutex
	n int
}

// NewNet creates the bridge. It skips when not root and fails under
// QC_REQUIRE_TOOLS=1 when ip, sshd, unshare or setpriv are missing.
func NewNet(t testing.TB) *Net {
	t.Helper()
	testenv.RequireTool(t, "ip")
	testenv.RequireTool(t, "sshd")
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "setpriv")
	if os.Geteuid() != 0 {
		t.Skip("network-namespace hosts need root (ip netns add, a bridge, mount namespaces)")
	}
	removeStale(t)
	pid := os.Getpid()
	n := &Net{prefix: fmt.Sprintf("qct%d-", pid), bridge: fmt.Sprintf("qcb%d", pid)}
	netSeq.Lock()
	netSeq.n++
	seq := netSeq.n
	netSeq.Unlock()
	if seq > 1 {
		// One bridge per process at a time: tests using Net run one
		// after another (each removes its own at cleanup).
		n.bridge = fmt.Sprintf("qcb%dx%d", pid, seq)
		if len(n.bridge) > 15 {
			n.bridge = n.bridge[:15]
		}
	}
	// A /24 no route on this machine uses: 10.<pid%250+1>.<seq...>.0.
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	for third := seq % 250; ; third++ {
		n.subnet = fmt.Sprintf("10.%d.%d", pid%250+1, third%250+1)
		if !strings.Contains(string(routes), n.subnet+".") {
			break
		}
		if third > seq%250+250 {
			t.Fatal("sshtest: no free 10.x.y.0/24 for the test network")
		}
	}
	t.Cleanup(n.remove)
	run(t, "ip", "link", "add", n.bridge, "type", "bridge")
	run(t, "ip", "addr", "add", n.subnet+".1/24", "dev", n.bridge)
	run(t, "ip", "link", "set", n.bridge, "up")
	return n
}

// Namespace creates host name's network namespace and returns its name
// and address.
func (n *Net) Namespace(t testing.TB, name string) (ns, ip string) {
	t.Helper()
	n.n++
	ns, ip = n.prefix+name, fmt.Sprintf("%s.%d", n.subnet, n.n+1)
	veth := fmt.Sprintf("qcv%dx%d", os.Getpid(), n.n)
	if len(veth) > 15 {
		veth = veth[len(veth)-15:]
	}
	run(t, "ip", "netns", "add", ns)
	run(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(t, "ip", "link", "set", veth, "master", n.bridge, "up")
	run(t, "ip", "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "route", "add", "default", "via", n.subnet+".1")
	return ns, ip
}

// Host creates a namespace for name with a real sshd on its address,
// port 22, in a private mount namespace as Start's.
func (n *Net) Host(t testing.TB, name string) *Server {
	t.Helper()
	ns, ip := n.Namespace(t, name)
	return start(t, ns, ip, 22)
}

// Command is exec.Command run in namespace ns.
func (n *Net) Command(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// remove deletes the namespaces and the bridge (the veths go with their
// namespaces).
func (n *Net) remove() {
	removeMatching(func(name string) bool { return strings.HasPrefix(name, n.prefix) }, n.bridge)
}

// removeStale removes namespaces and bridges of runs whose process is
// gone.
func removeStale(t testing.TB) {
	dead := func(name, tag string) bool {
		rest, ok := strings.CutPrefix(name, tag)
		if !ok {
			return false
		}
		digits := rest
		if i := strings.IndexAny(rest, "-x"); i >= 0 {
			digits = rest[:i]
		}
		pid, err := strconv.Atoi(digits)
		if err != nil || pid == os.Getpid() {
			return false
		}
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "bridge").CombinedOutput()
	var bridges []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			if b := strings.TrimSuffix(f[1], ":"); dead(b, "qcb") {
				bridges = append(bridges, b)
			}
		}
	}
	var stale []string
	removeMatching(func(name string) bool {
		if dead(name, "qct") {
			stale = append(stale, name)
			return true
		}
		return false
	}, bridges...)
	containers := removeStaleContainers(dead)
	if len(stale)+len(bridges)+len(containers) > 0 {
		t.Logf("sshtest: removed what an earlier run left: %v %v %v", stale, bridges, containers)
	}
}

func removeMatching(match func(string) bool, bridges ...string) {
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || !match(f[0]) {
			continue
		}
		// Processes left in it (a crashed run's units) first.
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, p := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		exec.Command("ip", "netns", "delete", f[0]).Run()
	}
	for _, b := range bridges {
		exec.Command("ip", "link", "delete", b, "type", "bridge").Run()
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}
