// Package sshtest starts real OpenSSH servers for tests of task deploy:
// each a "host" with its own view of /etc, /usr/local and /var (overlays
// in a private mount namespace, so nothing on the machine changes) and
// /proc/sys read-only. PID 1 here is not systemd, so a stand-in systemctl
// (systemctl.sh) starts units' ExecStart lines as their users.
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	_ "embed"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/quiccast/quiccast/shared/testenv"
)

//go:embed systemctl.sh
var fakeSystemctl []byte

// Server is one host.
type Server struct {
	Dir     string // the test's files: keys, config, the overlays' upper dirs
	Addr    string // 127.0.0.1:port
	HostKey ssh.PublicKey
	// UserKey is the private key file authorized as root.
	UserKey string
	// Systemd is whether the host is a systemd-nspawn container with
	// systemd as its PID 1 (Net.Hosts), rather than sshd with the
	// stand-in systemctl.
	Systemd bool
	cmd     *exec.Cmd
	root    string        // a container's root (its overlay)
	booted  time.Duration // a container's boot, to sshd listening
}

// Upper returns the path under which a file the host wrote at path (in
// /etc, /usr/local or /var; anywhere in a container) lands.
func (s *Server) Upper(path string) string { return filepath.Join(s.Dir, "upper", path) }

// StandInDir is the stand-in systemctl's directory (unit pid files and logs).
func (s *Server) StandInDir() string { return filepath.Join(s.Dir, "systemd") }

// KnownHostsLine is the known_hosts line for this server.
func (s *Server) KnownHostsLine() string {
	host, port, _ := net.SplitHostPort(s.Addr)
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey)))
	if port == "22" {
		return host + " " + key
	}
	return fmt.Sprintf("[%s]:%s %s", host, port, key)
}

// Start starts a host; the test fails (never skips silently under
// QC_REQUIRE_TOOLS) when sshd or mount namespaces are missing.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "", "127.0.0.1", 0)
}

// start starts sshd on ip:port (port 0: a free one) in network namespace
// ns ("": this one).
func start(t testing.TB, ns, ip string, port int) *Server {
	t.Helper()
	sshd := testenv.RequireTool(t, "sshd")
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "setpriv")
	if os.Geteuid() != 0 {
		t.Skip("sshtest needs root (mount namespaces, sshd, useradd inside the host)")
	}
	dir := t.TempDir()
	s := &Server{Dir: dir}
	hostPub, hostKey := keyPair(t)
	userPub, userKey := keyPair(t)
	s.HostKey = hostPub
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hk := write("host_key", hostKey, 0o600)
	s.UserKey = write("user_key", userKey, 0o600)
	ak := write("authorized_keys", ssh.MarshalAuthorizedKey(userPub), 0o600)
	write("fakebin/systemctl", fakeSystemctl, 0o755)
	if err := os.Symlink("systemctl", filepath.Join(dir, "fakebin/journalctl")); err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		port = freePort(t)
	}
	s.Addr = net.JoinHostPort(ip, strconv.Itoa(port))
	cfg := write("sshd_config", []byte(fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s
PidFile none
AuthorizedKeysFile %s .ssh/authorized_keys
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
LogLevel ERROR
SetEnv PATH=%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin FAKE_SYSTEMD_DIR=%s
`, port, ip, hk, ak, filepath.Join(dir, "fakebin"), s.StandInDir())), 0o600)
	var mounts strings.Builder
	for _, m := range []string{"/etc", "/usr/local", "/var"} {
		up, work := filepath.Join(dir, "upper", m), filepath.Join(dir, "work", m)
		os.MkdirAll(up, 0o755)
		os.MkdirAll(work, 0o755)
		fmt.Fprintf(&mounts, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s\n", m, up, work, m)
	}
	script := "set -e\nmount --make-rprivate /\n" + mounts.String() +
		"mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/sshd\nmount -o bind,ro /proc/sys /proc/sys\n" +
		"exec " + sshd + " -D -e -f " + cfg + "\n"
	args := []string{"unshare", "--mount", "sh", "-c", script}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	s.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		s.stopUnits()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Fatalf("sshd exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd on %s did not listen within 20s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// stopUnits stops every process the stand-in systemctl started.
func (s *Server) stopUnits() {
	pids, _ := filepath.Glob(filepath.Join(s.StandInDir(), "*.pid"))
	var waits []int
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		syscall.Kill(-pid, syscall.SIGTERM)
		waits = append(waits, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range waits {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// UnitLog returns what a unit wrote (in a container: its journal).
func (s *Server) UnitLog(unit string) string {
	if s.Systemd {
		return s.journal(unit)
	}
	b, _ := os.ReadFile(filepath.Join(s.StandInDir(), unit+".log"))
	return string(b)
}

// KnownHosts writes a known_hosts file with lines and returns its path.
func KnownHosts(t testing.TB, lines ...string) string {
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// KeyLine returns a known_hosts line for addr with a fresh key: a host
// key that does not match.
func KeyLine(t testing.TB, addr string) string {
	pub, _ := keyPair(t)
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("[%s]:%s %s", host, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
}

func keyPair(t testing.TB) (ssh.PublicKey, []byte) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp, pem.EncodeToMemory(blk)
}

// FreePort returns a port free on 127.0.0.1 for TCP and UDP.
func FreePort(t testing.TB) int { return freePort(t) }

func freePort(t testing.TB) int {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return 0
}

// AddSudoUser creates user name on the host, as cloud-init makes a VM's
// default user (debian, ubuntu, admin): it logs in with the keys root
// has now (copied to its ~/.ssh/authorized_keys) and runs commands as
// root through passwordless sudo. Its home is under /var (the host's overlay);
// its sudoers file also keeps the stand-in systemctl on PATH and its
// FAKE_SYSTEMD_DIR, which a real host does not need. Debian's sudo must be
// installed (.ci/install-deps installs it).
func (s *Server) AddSudoUser(t testing.TB, name string) {
	t.Helper()
	testenv.RequireTool(t, "sudo")
	signer, err := ssh.ParsePrivateKey(mustRead(t, s.UserKey))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh root@%s: %v", s.Addr, err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sess.Stdin = bytes.NewReader(mustRead(t, filepath.Join(s.Dir, "authorized_keys")))
	script := fmt.Sprintf(`set -e
id -u %[1]s >/dev/null 2>&1 || useradd --create-home --home-dir /var/lib/%[1]s-home --shell /bin/sh --password '*' %[1]s
h=/var/lib/%[1]s-home
install -d -m 0700 -o %[1]s -g %[1]s "$h/.ssh"
cat > "$h/.ssh/authorized_keys"
chown %[1]s:%[1]s "$h/.ssh/authorized_keys"
chmod 0600 "$h/.ssh/authorized_keys"
install -d -m 0750 /etc/sudoers.d
f=/etc/sudoers.d/%[1]s
printf '%%s\n' '%[1]s ALL=(ALL:ALL) NOPASSWD: ALL' 'Defaults:%[1]s !secure_path, env_keep += "FAKE_SYSTEMD_DIR"' > "$f.tmp"
chmod 0440 "$f.tmp"
visudo -cqf "$f.tmp"
mv -f "$f.tmp" "$f"`, name)
	if out, err := sess.CombinedOutput(script); err != nil {
		t.Fatalf("add sudo user %s on %s: %v\n%s", name, s.Addr, err, out)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
