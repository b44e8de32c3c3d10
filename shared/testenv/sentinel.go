package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a Redis Sentinel (redis-server --sentinel) started for one
// test, monitoring one master: loopback only, stopped in t.Cleanup.
type Sentinel struct {
	t      testing.TB
	port   int
	master string
	probe  *tls.Config // TLS sentinels (a TLS master)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Sentinel timing of StartSentinel: a master that does not answer for
// SentinelDownAfter is down; a failover that stalls is retried after
// twice SentinelFailoverTimeout.
const (
	SentinelDownAfter       = 500 * time.Millisecond
	SentinelFailoverTimeout = 5 * time.Second
)

// StartSentinel starts a sentinel monitoring master under name, which
// quorum sentinels must agree is down before a failover. It returns once
// the sentinel answers.
func StartSentinel(t testing.TB, master *Redis, name string, quorum int) *Sentinel {
	t.Helper()
	bin := RequireTool(t, "redis-server")
	dir := t.TempDir()
	s := &Sentinel{t: t, master: name}
	t.Cleanup(s.Stop)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("sentinel: free port: %v", err)
		}
		s.port = port
		conf := filepath.Join(dir, fmt.Sprintf("sentinel%d.conf", attempt))
		cfg := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
loglevel warning
sentinel resolve-hostnames no
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 2
`, port, dir, name, master.port, quorum, name, SentinelDownAfter.Milliseconds(), name, SentinelFailoverTimeout.Milliseconds(), name)
		if master.ca != nil { // TLS only, to clients and to the servers
			cert, key := master.ca.Issue(t, "127.0.0.1", "localhost")
			cfg = strings.Replace(cfg, fmt.Sprintf("port %d\n", port), fmt.Sprintf("port 0\ntls-port %d\n", port), 1)
			cfg += fmt.Sprintf("tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-replication yes\ntls-auth-clients no\n", cert, key, master.ca.File)
			if master.auth {
				cfg += fmt.Sprintf("tls-client-cert-file %s\ntls-client-key-file %s\n", cert, key)
			}
			s.probe = master.ca.ClientTLS()
		}
		if master.password != "" {
			cfg += fmt.Sprintf("sentinel auth-pass %s %s\n", name, master.password)
		}
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("sentinel%d.log", attempt)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf, "--sentinel")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("sentinel: %v", err)
		}
		logf.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if lastErr = answers(s.Addr(), "", s.probe, cmd.Process.Pid); lastErr == nil {
				s.mu.Lock()
				s.cmd = cmd
				s.mu.Unlock()
				return s
			}
			if time.Now().After(deadline) || exited(cmd.Process.Pid) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return fatalf(t, "sentinel did not start: %v", lastErr)
}

func fatalf(t testing.TB, format string, args ...any) *Sentinel {
	t.Helper()
	t.Fatalf(format, args...)
	return nil
}

// Addr is the sentinel's host:port.
func (s *Sentinel) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop kills the sentinel.
func (s *Sentinel) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Master is what the sentinel says about its master (SENTINEL MASTER).
func (s *Sentinel) Master(ctx context.Context) (map[string]string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.probe, DisableIdentity: true, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	return c.Master(ctx, s.master).Result()
}

// MasterAddr is the master's address as the sentinel sees it now.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.probe, DisableIdentity: true, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	a, err := c.GetMasterAddrByName(ctx, s.master).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// WaitSentinelSet waits until every sentinel knows the others and the
// master's replicas (Sentinel discovers them over the master's hello
// channel every 2 s): only then can the set agree on a failover.
func WaitSentinelSet(t testing.TB, ss []*Sentinel, replicas int) {
	t.Helper()
	WaitFor(t, 30*time.Second, "every sentinel knowing the others and the replicas", func() bool {
		for _, s := range ss {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, err := s.Master(ctx)
			cancel()
			if err != nil || m["num-other-sentinels"] != strconv.Itoa(len(ss)-1) || m["num-slaves"] != strconv.Itoa(replicas) {
				return false
			}
		}
		return true
	})
}
