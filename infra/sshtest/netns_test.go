package sshtest

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func netnsList(t *testing.T) string {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v %s", err, out)
	}
	return string(out)
}

// A crashed run's namespaces and bridge (a process that is gone) are
// removed by the next NewNet; a live run's are left alone; a Net removes
// its own at the end.
func TestNetRemovesStaleNamespacesAndItsOwn(t *testing.T) {
	var mine string
	t.Run("net", func(t *testing.T) {
		dead := 4194000
		for syscall.Kill(dead, 0) != syscall.ESRCH {
			dead--
		}
		stale, staleBr := fmt.Sprintf("qct%d-edge", dead), fmt.Sprintf("qcb%d", dead)
		// Another run that is alive: this process's parent.
		live := fmt.Sprintf("qct%d-edge", syscall.Getppid())
		if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
			if strings.Contains(string(out), "Permission denied") || strings.Contains(string(out), "Operation not permitted") {
				t.Skip("needs root (ip netns add, bridges)")
			}
		}
		// Removed here too in case NewNet fails before it removes them.
		defer exec.Command("ip", "netns", "delete", stale).Run()
		defer exec.Command("ip", "link", "delete", staleBr).Run()
		exec.Command("ip", "netns", "add", live).Run()
		defer exec.Command("ip", "netns", "delete", live).Run()
		exec.Command("ip", "link", "add", staleBr, "type", "bridge").Run()
		n := NewNet(t)
		ns, _ := n.Namespace(t, "client") // reached over the bridge: see infra/rollout's netns test
		mine = ns
		l := netnsList(t)
		if strings.Contains(l, stale) {
			t.Errorf("the stale namespace %s is still there:\n%s", stale, l)
		}
		if !strings.Contains(l, live) {
			t.Errorf("the namespace of a live run %s was removed:\n%s", live, l)
		}
		if exec.Command("ip", "link", "show", staleBr).Run() == nil {
			t.Errorf("the stale bridge %s is still there", staleBr)
		}
	})
	if mine != "" && strings.Contains(netnsList(t), mine) {
		t.Errorf("%s is left after the test", mine)
	}
}
