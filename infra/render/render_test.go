package render

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/shared/testenv"
)

func example(t *testing.T) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Load("../inventory.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

var secrets = inventory.Secrets{ClusterToken: "ct", PublishTokens: "p1,p2", RedisPassword: `pa"ss\word`}

// The sandboxing of both units, line for line.
func TestUnitsAreSandboxed(t *testing.T) {
	inv := example(t)
	golden, err := os.ReadFile("testdata/sandbox.golden")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"origin", "edge"} {
		u, err := UnitFile(inv, role)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(golden)), "\n") {
			if !containsLine(u, line) {
				t.Errorf("%s unit lacks %q", role, line)
			}
		}
		for _, line := range []string{"User=quiccast", "ExecStart=/usr/local/bin/quiccast " + role, "EnvironmentFile=/etc/quiccast/" + role + ".env", "LimitNOFILE=27846"} {
			if !containsLine(u, line) {
				t.Errorf("%s unit lacks %q:\n%s", role, line, u)
			}
		}
		// No capability beyond binding low ports.
		for _, l := range strings.Split(u, "\n") {
			if strings.HasPrefix(l, "AmbientCapabilities=") || strings.HasPrefix(l, "CapabilityBoundingSet=") {
				if strings.TrimSpace(l[strings.IndexByte(l, '=')+1:]) != "CAP_NET_BIND_SERVICE" {
					t.Errorf("%s: %s", role, l)
				}
			}
		}
	}
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// systemd itself accepts the units (systemd-analyze verify).
func TestUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	sa := testenv.RequireTool(t, "systemd-analyze")
	inv := example(t)
	root := t.TempDir()
	for _, p := range []string{"usr/local/bin", "usr/lib", "etc/systemd/system", "etc/quiccast"} {
		os.MkdirAll(filepath.Join(root, p), 0o755)
	}
	os.WriteFile(filepath.Join(root, "usr/local/bin/quiccast"), []byte("#!/bin/sh\n"), 0o755)
	// systemd's own units (sysinit.target, …) the verification loads.
	if out, err := exec.Command("cp", "-r", "/usr/lib/systemd", filepath.Join(root, "usr/lib/")).CombinedOutput(); err != nil {
		t.Fatalf("copy systemd's units: %v %s", err, out)
	}
	for _, role := range []string{"origin", "edge"} {
		u, _ := UnitFile(inv, role)
		os.WriteFile(filepath.Join(root, "etc/systemd/system", Unit(role)), []byte(u), 0o644)
		os.WriteFile(filepath.Join(root, "etc/quiccast", role+".env"), nil, 0o600)
	}
	cmd := exec.Command(sa, "verify", "--root="+root, "--man=no", Unit("origin"), Unit("edge"))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestEnvFilesHoldSecretsAndAreMode0600(t *testing.T) {
	inv := example(t)
	for _, name := range []string{"origin-1", "edge-1", "edge-2", "redis-1"} {
		h := inv.Host(name)
		files, err := Host(inv, h, secrets)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			secret := strings.HasSuffix(f.Path, ".env") || f.Path == RedisInc
			if secret && f.Mode&0o077 != 0 && !(f.Path == RedisInc && f.Mode == 0o640 && f.Owner == "root:redis") {
				t.Errorf("%s: %s mode %o", name, f.Path, f.Mode)
			}
			if strings.HasSuffix(f.Path, ".env") && f.Mode != 0o600 {
				t.Errorf("%s: %s mode %o, want 0600", name, f.Path, f.Mode)
			}
		}
	}
	e, _ := Env(inv, inv.Host("edge-2"), "edge", secrets)
	for _, want := range []string{
		`QC_EDGE_PARENT="10.0.0.21:7002"`,
		`QC_EDGE_ACME_DOMAIN="live-eu2.example.com"`,
		`QC_EDGE_LISTEN=":443"`,
		`QC_REDIS_URL="redis://:pa%22ss%5Cword@10.0.0.10:6379/0"`,
		`QC_CLUSTER_TOKEN="ct"`,
	} {
		if !containsLine(e, want) {
			t.Errorf("edge-2 env lacks %s:\n%s", want, e)
		}
	}
	if e, _ := Env(inv, inv.Host("edge-1"), "edge", secrets); !containsLine(e, `QC_EDGE_RELAY_LISTEN=":7002"`) {
		t.Errorf("edge-1 is a parent but does not serve the relay:\n%s", e)
	}
	o, _ := Env(inv, inv.Host("origin-1"), "origin", secrets)
	if !containsLine(o, `QC_ORIGIN_PUBLISH_TOKENS="p1,p2"`) || !containsLine(o, `QC_ORIGIN_RELAY_ADVERTISE="10.0.0.11:7001"`) {
		t.Errorf("origin env:\n%s", o)
	}
	r := redisConf(inv.Host("redis-1"), secrets)
	if !containsLine(r, `requirepass "pa\"ss\\word"`) || !containsLine(r, "bind 10.0.0.10 127.0.0.1") {
		t.Errorf("redis conf:\n%s", r)
	}
}

// systemd's own assessment of the sandboxing (systemd-analyze security
// --offline=true reads the unit files; systemd 252 needs no running
// systemd for it) stays under MaxExposure.
func TestUnitsExposureScoreIsBounded(t *testing.T) {
	sa := testenv.RequireTool(t, "systemd-analyze")
	inv := example(t)
	dir := t.TempDir()
	for _, role := range []string{"origin", "edge"} {
		u, _ := UnitFile(inv, role)
		p := filepath.Join(dir, Unit(role))
		os.WriteFile(p, []byte(u), 0o644)
		out, err := exec.Command(sa, "security", "--offline=true", "--no-pager", p).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze security --offline=true %s: %v\n%s", Unit(role), err, out)
		}
		score, ok := Exposure(string(out))
		if !ok {
			t.Fatalf("no overall exposure level in:\n%s", out)
		}
		t.Logf("%s: exposure %.1f (systemd-analyze security --offline=true)", Unit(role), score)
		if score > MaxExposure {
			t.Errorf("%s: exposure %.1f, want <= %.1f:\n%s", Unit(role), score, MaxExposure, out)
		}
	}
}
