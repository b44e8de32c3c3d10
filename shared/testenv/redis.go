package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a real redis-server started for one test: loopback only, no
// persistence, in the test's temporary directory, stopped in t.Cleanup.
type Redis struct {
	t        testing.TB
	bin      string
	dir      string
	port     int
	password string
	ca       *CA         // TLS only, on the port (RedisTLS)
	auth     bool        // TLS clients must show a certificate (RedisTLSClientAuth)
	probe    *tls.Config // how answers dials a TLS server
	master   *Redis      // RedisReplicaOf
	extra    []string
	cl       *redis.Client // client(), made once

	mu  sync.Mutex
	cmd *exec.Cmd
	log string // the current run's log file
	run int
}

// RedisOption configures StartRedis.
type RedisOption func(*Redis)

// RedisPassword makes the server require a password (--requirepass).
func RedisPassword(pw string) RedisOption {
	return func(r *Redis) { r.password = pw }
}

// RedisTLS makes the server speak only TLS on its port, with a
// certificate for 127.0.0.1 and localhost issued by ca (replication over
// TLS too).
func RedisTLS(ca *CA) RedisOption {
	return func(r *Redis) { r.ca = ca }
}

// RedisTLSClientAuth (with RedisTLS) makes the server require a client
// certificate issued by its CA (tls-auth-clients yes).
func RedisTLSClientAuth() RedisOption {
	return func(r *Redis) { r.auth = true }
}

// RedisReplicaOf makes the server a replica of master (with its password
// and TLS, and the same password of its own, as a Sentinel set wants).
func RedisReplicaOf(master *Redis) RedisOption {
	return func(r *Redis) {
		r.master, r.password, r.ca, r.auth = master, master.password, master.ca, master.auth
	}
}

// RedisArgs adds command-line options to redis-server.
func RedisArgs(args ...string) RedisOption {
	return func(r *Redis) { r.extra = append(r.extra, args...) }
}

// StartRedis starts redis-server on a free loopback port and returns once
// it answers. Without redis-server it fails or skips as RequireTool.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: RequireTool(t, "redis-server"), dir: t.TempDir()}
	for _, o := range opts {
		o(r)
	}
	if r.ca != nil {
		cert, key := r.ca.Issue(t, "127.0.0.1", "localhost")
		r.probe = r.ca.ClientTLS()
		r.probe.Certificates = []tls.Certificate{mustKeyPair(t, cert, key)}
		r.extra = append(r.extra, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", r.ca.File,
			"--tls-replication", "yes", "--tls-cluster", "yes", "--tls-auth-clients", map[bool]string{true: "yes", false: "no"}[r.auth])
		if r.auth { // a replica shows a certificate to its master
			r.extra = append(r.extra, "--tls-client-cert-file", cert, "--tls-client-key-file", key)
		}
	}
	if r.master != nil {
		r.extra = append(r.extra, "--replicaof", "127.0.0.1", strconv.Itoa(r.master.port))
		if r.password != "" {
			r.extra = append(r.extra, "--masterauth", r.password)
		}
	}
	t.Cleanup(r.Stop)
	var err error
	for attempt := 0; attempt < 3; attempt++ { // the free port can be taken before redis binds it
		r.port, err = freePort()
		if err != nil {
			t.Fatalf("redis: free port: %v", err)
		}
		if err = r.start(); err == nil {
			if r.master != nil {
				r.waitLinkUp()
			}
			return r
		}
	}
	t.Fatalf("redis: %v", err)
	return nil
}

// Addr is the server's host:port.
func (r *Redis) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// Port is the server's port.
func (r *Redis) Port() int { return r.port }

// Password is the password the server requires ("" for none).
func (r *Redis) Password() string { return r.password }

// Running reports whether the server runs (it was not stopped).
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// URL is the go-redis URL of the server, database 0, with the password if
// one is required; rediss:// for a TLS server.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr(), Path: "/0"}
	if r.ca != nil {
		u.Scheme = "rediss"
	}
	if r.password != "" {
		u.User = url.UserPassword("", r.password)
	}
	return u.String()
}

// Start starts the server again, on the same port, with no data (after
// Stop; a no-op while it runs).
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("redis: restart: %v", err)
	}
}

// Stop kills the server and waits for it to exit; its data is gone.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill() // SIGKILL ends a paused server too
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Pause freezes the server (SIGSTOP): the kernel still accepts connections
// but nothing answers, as with a hung or partitioned Redis.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume undoes Pause (SIGCONT).
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatalf("redis: %v: not running", sig)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("redis: %v: %v", sig, err)
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	r.run++
	data := filepath.Join(r.dir, fmt.Sprintf("data%d", r.run))
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	r.log = filepath.Join(r.dir, fmt.Sprintf("redis%d.log", r.run))
	logf, err := os.Create(r.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	port := []string{"--port", strconv.Itoa(r.port)}
	if r.ca != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(r.port)}
	}
	args := append(port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", data,
		"--daemonize", "no", "--loglevel", "warning")
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	args = append(args, r.extra...)
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := answers(r.Addr(), r.password, r.probe, cmd.Process.Pid); err == nil {
			r.cmd = cmd
			return nil
		} else if time.Now().After(deadline) || exited(cmd.Process.Pid) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			out, _ := os.ReadFile(r.log)
			return fmt.Errorf("redis-server on port %d did not answer (%v); its log:\n%s", r.port, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answers checks that the redis-server with process id pid serves addr:
// it asks INFO server (after AUTH if needed) for process_id, so that a
// server of another test that took the port does not count. With tc it
// speaks TLS.
func answers(addr, password string, tc *tls.Config, pid int) error {
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, tc)
	} else {
		c, err = net.DialTimeout("tcp", addr, time.Second)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	rd := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password); err != nil {
			return err
		}
		if line, err := rd.ReadString('\n'); err != nil {
			return err
		} else if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("AUTH: %q", strings.TrimSpace(line))
		}
	}
	if _, err := c.Write([]byte("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")); err != nil {
		return err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil {
		return fmt.Errorf("INFO: %q", strings.TrimSpace(line))
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(rd, info); err != nil {
		return err
	}
	if !strings.Contains(string(info), fmt.Sprintf("\nprocess_id:%d\r", pid)) {
		return fmt.Errorf("%s is served by another process", addr)
	}
	return nil
}

// exited reports whether the (not yet reaped) child has exited: it is a
// zombie, or gone.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func mustKeyPair(t testing.TB, cert, key string) tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// ClientCert issues a client certificate from the server's CA (RedisTLS)
// and returns its files.
func (r *Redis) ClientCert() (certFile, keyFile string) {
	r.t.Helper()
	return r.ca.Issue(r.t, "quiccast-client")
}

// Info returns the server's INFO section.
func (r *Redis) Info(ctx context.Context, section string) (string, error) {
	return r.client().Info(ctx, section).Result()
}

// waitLinkUp waits until a replica has synced with its master.
func (r *Redis) waitLinkUp() {
	r.t.Helper()
	WaitFor(r.t, 20*time.Second, "replica "+r.Addr()+" in sync with its master", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := r.Info(ctx, "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
}
