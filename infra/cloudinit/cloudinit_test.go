package cloudinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/shared/testenv"
)

func inv(t *testing.T) *inventory.Inventory {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ops.pub"), []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8d3n7Vn7bq2N2y3vXvK7qf4Qm1o0Jc6m2yX0r3g0Hk ops@example\n"), 0o644)
	p := filepath.Join(dir, "inv.yaml")
	os.WriteFile(p, []byte(`cluster: {redis_password: env:PW}
ssh: {authorized_keys: [ops.pub]}
hosts:
  - {name: redis-1, ssh: 203.0.113.10, roles: [redis]}
  - {name: edge-1, ssh: 203.0.113.21, user: deploy, roles: [edge], dns: live.example.com}
`), 0o600)
	i, err := inventory.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// cloud-init itself accepts every host's user-data.
func TestUserDataPassesCloudInitSchema(t *testing.T) {
	ci := testenv.RequireTool(t, "cloud-init")
	i := inv(t)
	for _, h := range i.Hosts {
		ud, err := UserData(i, h)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), h.Name+".yaml")
		os.WriteFile(f, ud, 0o644)
		out, err := exec.Command(ci, "schema", "-c", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
			t.Fatalf("%s: cloud-init schema: %v\n%s\n%s", h.Name, err, out, ud)
		}
		s := string(ud)
		for _, want := range []string{"#cloud-config\n", "net.core.rmem_max = 7500000", "ssh-ed25519 AAAAC3"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q:\n%s", h.Name, want, s)
			}
		}
		if h.Name == "redis-1" && !strings.Contains(s, "- redis-server") {
			t.Errorf("redis host does not install redis-server:\n%s", s)
		}
		if h.Name == "edge-1" && (!strings.Contains(s, "NOPASSWD:ALL") || !strings.Contains(s, "name: deploy")) {
			t.Errorf("the deploy user has no passwordless sudo:\n%s", s)
		}
	}
}

// The check can fail: cloud-init refuses a document with a wrong type.
func TestCloudInitSchemaRejectsBadUserData(t *testing.T) {
	ci := testenv.RequireTool(t, "cloud-init")
	f := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(f, []byte("#cloud-config\npackage_update: maybe\nruncmd: 3\n"), 0o644)
	if out, err := exec.Command(ci, "schema", "-c", f).CombinedOutput(); err == nil {
		t.Fatalf("cloud-init schema accepted bad user-data:\n%s", out)
	}
}

func TestUserDataNeedsAKey(t *testing.T) {
	i := inv(t)
	i.SSH.AuthorizedKeys = nil
	if _, err := UserData(i, i.Hosts[0]); err == nil || !strings.Contains(err.Error(), "no public key") {
		t.Fatalf("got %v", err)
	}
}
