package sshtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Where the machine allows it (HostMode), a host is a container whose
// PID 1 is systemd, which runs sshd; a test's containers and their
// cgroups are gone at its end, and those of a run whose process is gone
// are removed by the next one. Where it does not, the test says why and
// skips (QC_DEPLOY_HOSTS=systemd makes it fail instead).
func TestSystemdHostBootsAndIsRemoved(t *testing.T) {
	dead := 4194000
	for syscall.Kill(dead, 0) != syscall.ESRCH {
		dead--
	}
	var cgs []string
	t.Run("host", func(t *testing.T) {
		n := NewNet(t)
		if mode, why := HostMode(t); mode != ModeSystemd {
			t.Skipf("no systemd hosts here: %s", why)
		}
		// A stale cgroup, as a crashed run leaves.
		roots, err := cgroupRoots()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range roots {
			stale := filepath.Join(r, fmt.Sprintf("qct%d-edge", dead), "payload")
			if err := os.MkdirAll(stale, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		removeStale(t)
		for _, r := range roots {
			if _, err := os.Stat(filepath.Join(r, fmt.Sprintf("qct%d-edge", dead))); err == nil {
				t.Errorf("stale cgroup under %s not removed", r)
			}
		}

		hosts, mode, why := n.Hosts(t, "a")
		if mode != ModeSystemd {
			t.Fatalf("HostMode allowed systemd, but the host is %s: %s", mode, why)
		}
		s := hosts[0]
		t.Logf("booted in %v", s.Booted().Round(time.Millisecond))
		for _, r := range roots {
			cgs = append(cgs, filepath.Join(r, strings.TrimSuffix(filepath.Base(s.Dir), "/")))
		}
		out := sshRun(t, s, "ps -p 1 -o comm=; systemctl is-active ssh.service; systemctl is-system-running --wait || true")
		f := strings.Fields(out)
		if len(f) < 3 || f[0] != "systemd" || f[1] != "active" {
			t.Fatalf("PID 1, ssh.service, system state: %q, want systemd, active, running", out)
		}
		t.Logf("PID 1 %s, ssh.service %s, system %s", f[0], f[1], f[2])
	})
	for _, cg := range cgs {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s left after the test", cg)
		}
	}
}

func sshRun(t *testing.T, s *Server, cmd string) string {
	t.Helper()
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { <-ctx.Done(); c.Close() }()
	out, err := sess.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", cmd, s.Addr, err, out)
	}
	return string(out)
}
