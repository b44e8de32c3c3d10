package registry

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURLForms(t *testing.T) {
	t.Parallel()
	for _, ca := range []struct {
		url      string
		mode     string
		addrs    []string
		db       int
		tls      bool
		master   string
		password string
		sentPass string
	}{
		{url: "redis://127.0.0.1:6379/2", mode: ModeSingle, addrs: []string{"127.0.0.1:6379"}, db: 2},
		{url: "rediss://:pw1@redis.example:6380/0", mode: ModeSingle, addrs: []string{"redis.example:6380"}, tls: true, password: "pw1"},
		{url: "redis-sentinel://:pw2@s1:26379,s2:26380,s3/mymaster?db=3&sentinel_password=sp",
			mode: ModeSentinel, addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, db: 3, master: "mymaster", password: "pw2", sentPass: "sp"},
		{url: "rediss-sentinel://[::1]:26379,10.0.0.2/m1", mode: ModeSentinel, addrs: []string{"[::1]:26379", "10.0.0.2:26379"}, tls: true, master: "m1"},
		{url: "redis-sentinel://p%40ss@s1:26379/m", mode: ModeSentinel, addrs: []string{"s1:26379"}, master: "m", password: "p@ss"},
		{url: "redis-cluster://:pw3@n1:7000,n2:7001,n3", mode: ModeCluster, addrs: []string{"n1:7000", "n2:7001", "n3:6379"}, password: "pw3"},
		{url: "rediss-cluster://n1:7000/", mode: ModeCluster, addrs: []string{"n1:7000"}, tls: true},
	} {
		t.Run(ca.url, func(t *testing.T) {
			tg, err := parseURL(ca.url, TLSFiles{})
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if tg.mode != ca.mode || !slices.Equal(tg.addrs, ca.addrs) || tg.db != ca.db || tg.tls != ca.tls {
				t.Errorf("got mode %s addrs %v db %d tls %t; want %s %v %d %t", tg.mode, tg.addrs, tg.db, tg.tls, ca.mode, ca.addrs, ca.db, ca.tls)
			}
			var pw string
			switch {
			case tg.single != nil:
				pw = tg.single.Password
			case tg.failover != nil:
				pw = tg.failover.Password
				if tg.failover.MasterName != ca.master || tg.failover.SentinelPassword != ca.sentPass || (tg.failover.TLSConfig != nil) != ca.tls {
					t.Errorf("failover options %+v", tg.failover)
				}
			case tg.cluster != nil:
				pw = tg.cluster.Password
				if (tg.cluster.TLSConfig != nil) != ca.tls {
					t.Errorf("cluster TLS = %v, want %t", tg.cluster.TLSConfig, ca.tls)
				}
			}
			if pw != ca.password {
				t.Errorf("password %q, want %q", pw, ca.password)
			}
		})
	}
}

// TestURLErrorsNeverShowPasswords: a bad URL is refused with a message
// that says what is wrong, and neither the message nor the redacted URL
// carries a password.
func TestURLErrorsNeverShowPasswords(t *testing.T) {
	t.Parallel()
	const pw = "hunter2"
	for _, ca := range []struct {
		url  string
		want string
	}{
		{"http://:hunter2@h:1", "unknown scheme"},
		{"hunter2@h:1", "not a URL"},
		{"redis-sentinel://:hunter2@s1:26379", "master name"},
		{"redis-sentinel://:hunter2@s1:26379/a/b", "master name"},
		{"redis-sentinel://:hunter2@s1:26379/m?db=x&sentinel_password=hunter2", "db"},
		{"redis-sentinel://:hunter2@s1:26379/m?foo=1&sentinel_password=hunter2", `unknown option "foo"`},
		{"redis-sentinel://:hunter2@s1:port/m", "bad address"},
		{"redis-sentinel://:hunter2@/m", "no host"},
		{"redis-cluster://:hunter2@n1:7000/0", "database 0"},
		{"redis-cluster://:hunter2@n1:7000?read_only=1", "unknown option"},
		{"redis://:hunter2@127.0.0.1:x y/0", ""},
		{"redis://:hunter2@127.0.0.1:6379/0/1", ""},
		{"redis://:hunter2@127.0.0.1:6379/0?password=hunter2", ""},
	} {
		t.Run(ca.url, func(t *testing.T) {
			_, err := parseURL(ca.url, TLSFiles{})
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), ca.want) {
				t.Errorf("error %q does not say %q", err, ca.want)
			}
			r, oerr := Open(t.Context(), Options{URL: ca.url, NodeID: "a"})
			if oerr == nil {
				r.Close()
				t.Fatal("Open accepted it")
			}
			for _, s := range []string{err.Error(), oerr.Error(), redactURL(ca.url)} {
				if strings.Contains(s, pw) {
					t.Errorf("a password leaked: %s", s)
				}
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://:pw@h:1/0":     "redis://:xxxxx@h:1/0",
		"redis://user:pw@h:1/0": "redis://user:xxxxx@h:1/0",
		"redis://pw@h:1":        "redis://xxxxx@h:1",
		"redis://h:1/0":         "redis://h:1/0",
		"redis-sentinel://:a@s1:1,s2:2/m?db=1&sentinel_password=b":      "redis-sentinel://:xxxxx@s1:1,s2:2/m?db=1&sentinel_password=xxxxx",
		"rediss-cluster://u:p%2Fq@n1:1,n2:2":                            "rediss-cluster://u:xxxxx@n1:1,n2:2",
		"redis-sentinel://s1/m?Sentinel_Password=b&sentinel_username=u": "redis-sentinel://s1/m?Sentinel_Password=xxxxx&sentinel_username=u",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTLSFilesNeedATLSURL(t *testing.T) {
	t.Parallel()
	_, err := parseURL("redis://127.0.0.1:6379", TLSFiles{CA: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "rediss://") {
		t.Errorf("parseURL = %v, want a hint to use rediss://", err)
	}
	_, err = parseURL("rediss://127.0.0.1:6379", TLSFiles{CA: "/nonexistent/ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "-redis-ca-file") {
		t.Errorf("parseURL = %v, want an error naming -redis-ca-file", err)
	}
	_, err = parseURL("rediss-sentinel://s1/m", TLSFiles{Cert: "/c.pem"})
	if err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("parseURL = %v, want cert and key together", err)
	}
}
