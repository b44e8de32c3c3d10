package sshtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Hosts booted with real systemd: each host is a systemd-nspawn container
// of a Debian 12 tree (built once with mmdebstrap from Debian's packages
// and cached), a read-write overlay of its own over it, in the host's
// network namespace. systemd is PID 1 in it, starts sshd, and task deploy's
// systemctl is the real one: units run with their sandboxing enforced.

// Host modes, as HostMode reports them.
const (
	ModeSystemd = "systemd"  // systemd-nspawn containers, systemd as PID 1
	ModeStandIn = "stand-in" // sshd in a mount namespace, systemctl.sh
)

// TreePackages are the Debian packages of the hosts' tree besides
// minbase: systemd and what task deploy uses on a host. redis-server is
// in the tree (disabled; task deploy enables it on the redis host)
// because the hosts reach no Debian mirror.
var TreePackages = []string{"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2", "procps", "redis-server", "ca-certificates"}

// treeHooks run in the tree after the packages are installed: the
// container gets a machine id at each boot, redis-server starts only where
// task deploy enables it, each host gets its own host key.
var treeHooks = []string{
	`rm -f "$1/etc/systemd/system/multi-user.target.wants/redis-server.service"`,
	`rm -f "$1"/etc/ssh/ssh_host_*`,
	`: > "$1/etc/machine-id"`,
}

// TreeSources is the apt sources file the tree is built from (the
// machine's own Debian sources).
const TreeSources = "/etc/apt/sources.list.d/debian.sources"

// TreeCache is where the tree is cached (QC_NSPAWN_CACHE overrides).
func TreeCache() string {
	if d := os.Getenv("QC_NSPAWN_CACHE"); d != "" {
		return d
	}
	return "/var/cache/quiccast-test"
}

func treeArgs(dir string) []string {
	args := []string{"--quiet", "--variant=minbase", "--include=" + strings.Join(TreePackages, ",")}
	for _, h := range treeHooks {
		args = append(args, "--customize-hook="+h)
	}
	return append(args, "bookworm", dir, TreeSources)
}

// TreePath is the cached tree's directory: its name changes with the
// packages and hooks, so a change builds a new one.
func TreePath() string {
	sum := sha256.Sum256([]byte(strings.Join(treeArgs(""), "\x00")))
	return filepath.Join(TreeCache(), "bookworm-"+hex.EncodeToString(sum[:4]))
}

// Tree returns the cached tree, building it first if it is not there
// (mmdebstrap, about 2 minutes on 2 cores; one builder at a time, other
// test processes wait for it). took is the build time, 0 when cached.
func Tree(ctx context.Context, log func(string, ...any)) (dir string, took time.Duration, err error) {
	dir = TreePath()
	done := filepath.Join(dir, ".quiccast-tree-complete")
	if _, err := os.Stat(done); err == nil {
		return dir, 0, nil
	}
	if err := os.MkdirAll(TreeCache(), 0o755); err != nil {
		return "", 0, err
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", 0, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", 0, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(done); err == nil {
		return dir, 0, nil // built by another process meanwhile
	}
	mm, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return "", 0, fmt.Errorf("no tree at %s and mmdebstrap is not installed (Debian package mmdebstrap)", dir)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	os.RemoveAll(tmp)
	os.RemoveAll(dir) // an incomplete one
	log("sshtest: building the hosts' Debian tree with mmdebstrap into %s (cached for later runs)", dir)
	start := time.Now()
	cmd := exec.CommandContext(ctx, mm, treeArgs(tmp)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", 0, fmt.Errorf("mmdebstrap %s: %v: %s", strings.Join(treeArgs(tmp), " "), err, tail(string(out), 15))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".quiccast-tree-complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", 0, err
	}
	return dir, time.Since(start), nil
}

// cgroupRoots returns the mount points of the cgroup hierarchies systemd
// uses: cgroup2 (unified) and v1's name=systemd.
func cgroupRoots() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		l := sc.Text()
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch {
		case qf[0] == "cgroup2":
			roots = append(roots, pf[4])
		case qf[0] == "cgroup" && strings.Contains(","+qf[2]+",", ",name=systemd,"):
			roots = append(roots, pf[4])
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd cgroup hierarchy is mounted")
	}
	return roots, nil
}

// HostMode says which hosts the tests get here, and why: ModeSystemd
// where the machine allows it (root, systemd-nspawn, a writable cgroup
// hierarchy, the tree cached or buildable; the first boot is the last
// check), else ModeStandIn. QC_DEPLOY_HOSTS=systemd or stand-in forces a
// mode (systemd then fails the test where it cannot be had); under
// QC_REQUIRE_TOOLS=1 a missing systemd-nspawn or mmdebstrap fails it
// (.ci/install-deps installs them).
func HostMode(t testing.TB) (mode, why string) {
	t.Helper()
	force := os.Getenv("QC_DEPLOY_HOSTS")
	if force == ModeStandIn {
		return ModeStandIn, "QC_DEPLOY_HOSTS=stand-in"
	}
	if force != "" && force != ModeSystemd {
		t.Fatalf("QC_DEPLOY_HOSTS=%q: want %q, %q or unset", force, ModeSystemd, ModeStandIn)
	}
	no := func(why string) (string, string) {
		if force == ModeSystemd {
			t.Fatalf("QC_DEPLOY_HOSTS=systemd, but: %s", why)
		}
		return ModeStandIn, why
	}
	if os.Geteuid() != 0 {
		return no("not root")
	}
	for _, tool := range []string{"systemd-nspawn", "mmdebstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "mmdebstrap" {
				if _, err := os.Stat(filepath.Join(TreePath(), ".quiccast-tree-complete")); err == nil {
					continue
				}
			}
			if os.Getenv("QC_REQUIRE_TOOLS") == "1" {
				t.Fatalf("%s is required (QC_REQUIRE_TOOLS=1) but not installed: run `go tool task deps`", tool)
			}
			return no(tool + " is not installed (Debian packages systemd-container, mmdebstrap)")
		}
	}
	roots, err := cgroupRoots()
	if err != nil {
		return no(err.Error())
	}
	for _, r := range roots {
		p := filepath.Join(r, fmt.Sprintf("qct%d-probe", os.Getpid()))
		if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
			return no(fmt.Sprintf("cannot create a cgroup for the containers: %v", err))
		}
		os.Remove(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, took, err := Tree(ctx, t.Logf)
	if err != nil {
		return no(err.Error())
	}
	if took > 0 {
		t.Logf("sshtest: built %s in %v", dir, took.Round(time.Second))
	}
	return ModeSystemd, fmt.Sprintf("systemd-nspawn containers of %s, systemd as PID 1", dir)
}

// Hosts creates a host for each name: systemd-nspawn containers where
// HostMode allows (if the first does not boot, and the mode was not
// forced, every host is a stand-in host and the reason is given), else
// stand-in hosts. It returns the hosts and the mode with its reason, for
// the test's log.
func (n *Net) Hosts(t testing.TB, names ...string) ([]*Server, string, string) {
	t.Helper()
	mode, why := HostMode(t)
	hosts := make([]*Server, len(names))
	if mode == ModeSystemd && len(names) > 0 {
		ns, ip := n.Namespace(t, names[0])
		s, err := bootHost(t, ns, ip)
		if err != nil {
			if os.Getenv("QC_DEPLOY_HOSTS") == ModeSystemd {
				t.Fatalf("QC_DEPLOY_HOSTS=systemd, but the first host did not boot: %v", err)
			}
			mode, why = ModeStandIn, "systemd-nspawn did not boot a host: "+err.Error()
			hosts[0] = start(t, ns, ip, 22)
		} else {
			hosts[0] = s
			// The others boot side by side.
			type booted struct {
				i   int
				s   *Server
				err error
			}
			ch := make(chan booted, len(names))
			for i, name := range names[1:] {
				ns, ip := n.Namespace(t, name)
				go func() {
					s, err := bootHost(t, ns, ip)
					ch <- booted{i + 1, s, err}
				}()
			}
			var errs []error
			for range names[1:] {
				b := <-ch
				hosts[b.i] = b.s
				if b.err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", names[b.i], b.err))
				}
			}
			if len(errs) > 0 {
				t.Fatalf("systemd-nspawn hosts: %v", errors.Join(errs...))
			}
			return hosts, mode, why
		}
	}
	for i, name := range names {
		if hosts[i] == nil {
			hosts[i] = n.Host(t, name)
		}
	}
	return hosts, mode, why
}

var bootMu sync.Mutex // t.Cleanup from several goroutines

// bootHost boots a container in network namespace ns with sshd on ip:22
// and waits for sshd. Its files are an overlay over the cached tree (the
// upper directory is Server.Upper's); it is halted at the test's end.
func bootHost(t testing.TB, ns, ip string) (*Server, error) {
	tree := TreePath()
	dir, err := os.MkdirTemp("", "qc-nspawn-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: filepath.Join(dir, ns), Systemd: true}
	root := filepath.Join(s.Dir, "root")
	s.root = root
	bootMu.Lock()
	t.Cleanup(func() { os.RemoveAll(dir) })
	bootMu.Unlock()
	hostPub, hostKey := keyPair(t)
	userPub, userKey := keyPair(t)
	s.HostKey = hostPub
	up := filepath.Join(s.Dir, "upper")
	files := []struct {
		path string
		b    []byte
		mode os.FileMode
	}{
		{"user_key", userKey, 0o600},
		{"keys/authorized_keys", ssh.MarshalAuthorizedKey(userPub), 0o600},
		{"upper/etc/ssh/ssh_host_ed25519_key", hostKey, 0o600},
		{"upper/etc/ssh/ssh_host_ed25519_key.pub", ssh.MarshalAuthorizedKey(hostPub), 0o644},
		// The test's files, as a VM's provider would put them.
		{"upper/etc/ssh/sshd_config.d/quiccast-test.conf", []byte(`HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/quiccast-test-keys .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxSessions 64
LogLevel ERROR
`), 0o644},
		{"upper/etc/hostname", []byte(strings.TrimPrefix(ns, fmt.Sprintf("qct%d-", os.Getpid())) + "\n"), 0o644},
	}
	for _, f := range files {
		p := filepath.Join(s.Dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.b, f.mode); err != nil {
			return nil, err
		}
	}
	s.UserKey = filepath.Join(s.Dir, "user_key")
	// The keys authorized for root are Dir/authorized_keys, as on a
	// stand-in host (a test may add keys to it): a file in keys/, which
	// the container sees read-only.
	if err := os.Symlink("keys/authorized_keys", filepath.Join(s.Dir, "authorized_keys")); err != nil {
		return nil, err
	}
	if err := os.Symlink("/run/host-keys/authorized_keys", filepath.Join(up, "etc/ssh/quiccast-test-keys")); err != nil {
		return nil, err
	}
	for _, d := range []string{"work", "root"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	roots, err := cgroupRoots()
	if err != nil {
		return nil, err
	}
	// nspawn (--keep-unit: no systemd outside to ask for a scope) puts
	// the container under its own cgroup: a cgroup per host, so that no
	// two containers' systemd share a tree.
	var cgs []string
	for _, r := range roots {
		cgs = append(cgs, filepath.Join(r, ns))
	}
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, err
	}
	script := `set -e
for cg in $CGROUPS; do mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; done
exec "$@"`
	cmd := exec.Command("sh", "-c", script, "sh", nspawn, "--quiet", "--boot",
		"--directory="+root, "--machine="+ns, "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/"+ns, "--console=read-only",
		"--bind-ro="+filepath.Join(s.Dir, "keys")+":/run/host-keys")
	cmd.Env = append(os.Environ(), "CGROUPS="+strings.Join(cgs, " "), "SYSTEMD_LOG_COLOR=0")
	console, err := os.Create(filepath.Join(s.Dir, "console.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The root: an overlay of the host's own over the tree.
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o",
		fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", tree, up, filepath.Join(s.Dir, "work")), root).CombinedOutput(); err != nil {
		console.Close()
		return nil, fmt.Errorf("overlay on %s: %v: %s", tree, err, out)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		console.Close()
		exec.Command("umount", "-l", root).Run()
		return nil, fmt.Errorf("systemd-nspawn: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var haltOnce sync.Once
	halt := func() { haltOnce.Do(func() { haltContainer(cmd, exited, console, root, cgs) }) }
	bootMu.Lock()
	t.Cleanup(halt)
	bootMu.Unlock()
	s.Addr = net.JoinHostPort(ip, "22")
	deadline := time.Now().Add(90 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(console.Name())
			halt()
			return nil, fmt.Errorf("systemd-nspawn exited before sshd listened on %s: %s", s.Addr, tail(string(b), 25))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(console.Name())
			halt() // before anything else uses the namespace's port 22
			return nil, fmt.Errorf("sshd in the container did not listen on %s within 90s: %s", s.Addr, tail(string(b), 25))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.booted = time.Since(start)
	return s, nil
}

// haltContainer stops a container (SIGTERM: nspawn halts it; SIGKILL
// after 20 s) and removes its overlay mount and cgroups.
func haltContainer(cmd *exec.Cmd, exited chan struct{}, console *os.File, root string, cgs []string) {
	cmd.Process.Signal(syscall.SIGTERM) // nspawn halts the container
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	console.Close()
	exec.Command("umount", "-l", root).Run()
	for _, cg := range cgs {
		removeCgroup(cg)
	}
}

// removeCgroup removes cgroup dir and the ones under it, deepest first.
func removeCgroup(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		// A cgroup empties a moment after its processes exit.
		for try := 0; try < 50; try++ {
			if err := os.Remove(dirs[i]); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// removeStaleContainers removes the containers' overlays and cgroups
// of runs whose process is gone (their processes were killed with their
// network namespaces).
func removeStaleContainers(dead func(name, tag string) bool) []string {
	var removed []string
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 || filepath.Base(f[4]) != "root" {
				continue
			}
			if name := filepath.Base(filepath.Dir(f[4])); dead(name, "qct") {
				exec.Command("umount", "-l", f[4]).Run()
				removed = append(removed, f[4])
			}
		}
	}
	roots, _ := cgroupRoots()
	for _, r := range roots {
		entries, _ := os.ReadDir(r)
		for _, e := range entries {
			if e.IsDir() && dead(e.Name(), "qct") {
				removeCgroup(filepath.Join(r, e.Name()))
				removed = append(removed, filepath.Join(r, e.Name()))
			}
		}
	}
	return removed
}

// Booted is how long the container took from systemd-nspawn's start to
// sshd listening (0 for a stand-in host).
func (s *Server) Booted() time.Duration { return s.booted }

// journal returns a unit's journal in a container, read from its files.
func (s *Server) journal(unit string) string {
	out, err := exec.Command("journalctl", "--directory="+filepath.Join(s.root, "var/log/journal"), "-u", unit, "-n", "200", "--no-pager", "-o", "short-precise").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("journalctl: %v: %s", err, out)
	}
	return string(out)
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
