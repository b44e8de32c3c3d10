package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleInventoryIsValid(t *testing.T) {
	inv, err := Load("../inventory.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Hosts) != 4 || inv.Host("edge-2").Parent != "edge-1" || inv.Host("edge-1").Ports.EdgeHTTP != 443 || inv.Host("origin-1").Ports.OriginHTTP != 7000 {
		t.Fatalf("%+v", inv.Hosts)
	}
	if got := inv.Host("redis-1").Addr(); got != "203.0.113.10:22" {
		t.Fatalf("Addr() = %q", got)
	}
	edges, err := inv.Select("", "edge")
	if err != nil || len(edges) != 2 {
		t.Fatalf("ROLE=edge: %v %d", err, len(edges))
	}
	one, err := inv.Select("edge-2", "")
	if err != nil || len(one) != 1 || one[0].Name != "edge-2" {
		t.Fatalf("HOSTS=edge-2: %v %v", err, one)
	}
}

// Bad input is refused with a message naming the problem, before any
// host is contacted.
func TestBadInventoriesAreRefusedWithAClearError(t *testing.T) {
	const ok = "cluster: {redis_password: env:PW}\nhosts:\n"
	for _, ca := range []struct{ name, yaml, want string }{
		{"unknown role", "hosts:\n  - {name: a, ssh: h, roles: [cdn]}\n", `unknown role "cdn"`},
		{"edge without dns under acme", "hosts:\n  - {name: e, ssh: h, roles: [edge]}\n", "needs a dns name while acme is on"},
		{"secret in the file", "cluster: {cluster_token: hunter2}\nhosts:\n  - {name: o, ssh: h, roles: [origin]}\n", "never the secret itself"},
		{"misspelt key", "hosts:\n  - {name: o, ssh: h, role: [origin]}\n", "role"},
		{"parent unknown", "cluster: {acme: {enabled: false}}\nhosts:\n  - {name: e, ssh: h, roles: [edge], parent: x}\n", `parent "x" is not a host`},
		{"redis without password", "hosts:\n  - {name: r, ssh: h, roles: [redis]}\n", "redis_password: required"},
		{"bad arch", ok + "  - {name: o, ssh: h, roles: [origin], arch: mips}\n", `arch "mips"`},
		{"no ssh", ok + "  - {name: o, roles: [origin]}\n", "no ssh address"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			_, err := Parse([]byte(ca.yaml))
			if err == nil || !strings.Contains(err.Error(), ca.want) {
				t.Fatalf("got %v, want an error with %q", err, ca.want)
			}
		})
	}
	inv, _ := Parse([]byte("hosts:\n  - {name: o, ssh: h, roles: [origin]}\n"))
	if _, err := inv.Select("nope", ""); err == nil || !strings.Contains(err.Error(), `no host "nope"`) {
		t.Fatalf("HOSTS=nope: %v", err)
	}
	if _, err := inv.Select("", "cdn"); err == nil || !strings.Contains(err.Error(), `unknown role "cdn"`) {
		t.Fatalf("ROLE=cdn: %v", err)
	}
}

func TestSecretsComeFromTheEnvironmentOrFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("from-file\n"), 0o600)
	p := filepath.Join(dir, "inv.yaml")
	os.WriteFile(p, []byte("cluster: {cluster_token: env:QC_TEST_TOKEN_X, redis_password: file:pw}\nhosts:\n  - {name: r, ssh: h, roles: [redis, origin]}\n"), 0o600)
	inv, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = inv.Resolve()
	if err == nil || !strings.Contains(err.Error(), "cluster_token: environment variable QC_TEST_TOKEN_X is not set") {
		t.Fatalf("a missing variable: got %v", err)
	}
	t.Setenv("QC_TEST_TOKEN_X", "tok")
	s, err := inv.Resolve()
	if err != nil || s.ClusterToken != "tok" || s.RedisPassword != "from-file" {
		t.Fatalf("%v %+v", err, s)
	}
}
