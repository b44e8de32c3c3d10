package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// TestTLSRegistry: over rediss:// with -redis-ca-file the registry works;
// a CA that did not sign the server's certificate is refused with an
// error that says so, and a server that requires a client certificate
// takes the registry's only when it shows one.
func TestTLSRegistry(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "redis test CA")
	srv := testenv.StartRedis(t, testenv.RedisTLS(ca), testenv.RedisPassword("tls-pw-31337"))
	r := openT(t, Options{URL: srv.URL(), NodeID: "a", TLS: TLSFiles{CA: ca.File}})
	if r.Mode() != ModeSingle || !r.Healthy() {
		t.Fatalf("Mode %s, Healthy %t; want single and healthy", r.Mode(), r.Healthy())
	}
	if _, err := r.Claim(t.Context(), Broadcast{Name: "tls/cam", Relay: "127.0.0.1:1"}, false); err != nil {
		t.Fatalf("Claim over TLS: %v", err)
	}
	if b, err := r.Lookup(t.Context(), "tls/cam"); err != nil || b.Origin != "a" {
		t.Fatalf("Lookup over TLS = %+v, %v", b, err)
	}

	t.Run("wrong CA", func(t *testing.T) {
		other := testenv.NewCA(t, "another CA")
		var logs testenv.Logs
		b := openT(t, Options{URL: srv.URL(), NodeID: "b", TLS: TLSFiles{CA: other.File}, Logger: logs.Logger()})
		if b.Healthy() {
			t.Fatal("Healthy() with a CA that did not sign the server")
		}
		_, err := b.Lookup(t.Context(), "tls/cam")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Lookup = %v, want a certificate error", err)
		}
		if len(logs.Lines("WARN", "redis unavailable at start", "certificate")) != 1 {
			t.Errorf("want one warning naming the certificate; logs: %v", logs.Lines())
		}
	})
	t.Run("plain URL to a TLS server", func(t *testing.T) {
		b := openT(t, Options{URL: strings.Replace(srv.URL(), "rediss://", "redis://", 1), NodeID: "b"})
		if _, err := b.Lookup(t.Context(), "tls/cam"); err == nil {
			t.Error("Lookup over plain TCP to a TLS-only server succeeded")
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		mtls := testenv.StartRedis(t, testenv.RedisTLS(ca), testenv.RedisTLSClientAuth())
		noCert := openT(t, Options{URL: mtls.URL(), NodeID: "b", TLS: TLSFiles{CA: ca.File}})
		if _, err := noCert.Lookup(t.Context(), "x"); err == nil {
			t.Error("a server requiring client certificates took a client without one")
		}
		cert, key := mtls.ClientCert()
		withCert := openT(t, Options{URL: mtls.URL(), NodeID: "b", TLS: TLSFiles{CA: ca.File, Cert: cert, Key: key}})
		if _, err := withCert.Claim(t.Context(), Broadcast{Name: "x"}, false); err != nil {
			t.Errorf("Claim with a client certificate: %v", err)
		}
	})
}

// TestSentinelRegistryFollowsTheMaster: through redis-sentinel:// the
// registry writes to the master; SIGKILL the master and, once the
// sentinels promoted a replica, writes succeed again on it, and what was
// written before is there.
func TestSentinelRegistryFollowsTheMaster(t *testing.T) {
	t.Parallel()
	const pw = "sentinel-set-pw-77"
	master := testenv.StartRedis(t, testenv.RedisPassword(pw))
	reps := []*testenv.Redis{testenv.StartRedis(t, testenv.RedisReplicaOf(master)), testenv.StartRedis(t, testenv.RedisReplicaOf(master))}
	var ss []*testenv.Sentinel
	for range 3 {
		ss = append(ss, testenv.StartSentinel(t, master, "qcmaster", 2))
	}
	testenv.WaitSentinelSet(t, ss, len(reps))
	url := "redis-sentinel://:" + pw + "@" + ss[0].Addr() + "," + ss[1].Addr() + "," + ss[2].Addr() + "/qcmaster"
	var logs testenv.Logs
	r := openT(t, Options{URL: url, NodeID: "a", TTL: time.Minute, Logger: logs.Logger()})
	if r.Mode() != ModeSentinel || !r.Healthy() {
		t.Fatalf("Mode %s, Healthy %t; want sentinel and healthy", r.Mode(), r.Healthy())
	}
	ctx := t.Context()
	if _, err := r.Claim(ctx, Broadcast{Name: "s/cam", Relay: "127.0.0.1:1", Publishing: true}, false); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := r.LogGroup(ctx, "s/cam", Group{Seq: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	// WAIT: both replicas have every write before the master dies.
	if n, err := r.Client().Do(ctx, "WAIT", 2, 1000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT = %d, %v", n, err)
	}
	killed := time.Now()
	master.Stop()
	var recovered time.Duration
	testenv.WaitFor(t, 20*time.Second, "a write on the promoted replica", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if r.LogGroup(cctx, "s/cam", Group{Seq: 6}) != nil {
			return false
		}
		recovered = time.Since(killed)
		return true
	})
	t.Logf("master killed; first successful write %s later", recovered.Round(time.Millisecond))
	now, err := ss[0].MasterAddr(ctx)
	if err != nil || now == master.Addr() {
		t.Errorf("sentinel's master is %s (%v), want a promoted replica", now, err)
	}
	// Until every sentinel learnt of the new master (their hello messages
	// run every 2 s) a new connection may still be sent to the dead one.
	var gs []Group
	testenv.WaitFor(t, 10*time.Second, "the group log read back", func() bool {
		var err error
		gs, err = r.Groups(ctx, "s/cam", 0)
		return err == nil
	})
	if len(gs) != 6 {
		t.Fatalf("group log after failover: %d entries, want 6", len(gs))
	}
	for i, g := range gs {
		if g.Seq != uint64(i+1) {
			t.Errorf("entry %d is group %d", i, g.Seq)
		}
	}
	if b, err := r.Lookup(ctx, "s/cam"); err != nil || b.Origin != "a" {
		t.Errorf("Lookup after failover = %+v, %v", b, err)
	}
	if all := strings.Join(logs.Lines(), "\n"); strings.Contains(all, pw) {
		t.Errorf("the password leaked into the logs:\n%s", all)
	}
}

// TestTLSSentinelAndCluster: rediss-sentinel:// (sentinels and servers
// over TLS) and rediss-cluster:// (a 3-master cluster over TLS) with
// -redis-ca-file reach the master; the wrong CA is refused.
func TestTLSSentinelAndCluster(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "redis test CA")
	other := testenv.NewCA(t, "another CA")
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		master := testenv.StartRedis(t, testenv.RedisTLS(ca), testenv.RedisPassword("pw-tls-s"))
		testenv.StartRedis(t, testenv.RedisReplicaOf(master))
		s := testenv.StartSentinel(t, master, "qcmaster", 1)
		url := "rediss-sentinel://:pw-tls-s@" + s.Addr() + "/qcmaster"
		r := openT(t, Options{URL: url, NodeID: "a", TLS: TLSFiles{CA: ca.File}})
		if _, err := r.Claim(t.Context(), Broadcast{Name: "tls/s"}, false); err != nil || r.Mode() != ModeSentinel {
			t.Fatalf("Claim over rediss-sentinel:// = %v (mode %s)", err, r.Mode())
		}
		bad := openT(t, Options{URL: url, NodeID: "b", TLS: TLSFiles{CA: other.File}})
		if _, err := bad.Lookup(t.Context(), "tls/s"); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Lookup with the wrong CA = %v, want a certificate error", err)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		cl := testenv.StartRedisCluster(t, 3, 0, testenv.RedisTLS(ca))
		r := openT(t, Options{URL: cl.URL(), NodeID: "a", TLS: TLSFiles{CA: ca.File}})
		for _, name := range []string{"tls/c1", "tls/c2", "tls/c3", "tls/c4"} {
			if _, err := r.Claim(t.Context(), Broadcast{Name: name}, false); err != nil || r.Mode() != ModeCluster {
				t.Fatalf("Claim %s over rediss-cluster:// = %v (mode %s)", name, err, r.Mode())
			}
		}
		if l, err := r.List(t.Context()); err != nil || len(l) != 4 {
			t.Errorf("List over rediss-cluster:// = %d broadcasts, %v; want 4", len(l), err)
		}
		bad := openT(t, Options{URL: cl.URL(), NodeID: "b", TLS: TLSFiles{CA: other.File}})
		if _, err := bad.Lookup(t.Context(), "tls/c1"); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Lookup with the wrong CA = %v, want a certificate error", err)
		}
	})
}
