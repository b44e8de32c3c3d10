package testenv

import (
	"bufio"
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
)

// Redis is a real redis-server started for one test: loopback only, no
// persistence, in the test's temporary directory, stopped in t.Cleanup.
type Redis struct {
	t        testing.TB
	bin      string
	dir      string
	port     int
	password string

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

// StartRedis starts redis-server on a free loopback port and returns once
// it answers. Without redis-server it fails or skips as RequireTool.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: RequireTool(t, "redis-server"), dir: t.TempDir()}
	for _, o := range opts {
		o(r)
	}
	t.Cleanup(r.Stop)
	var err error
	for attempt := 0; attempt < 3; attempt++ { // the free port can be taken before redis binds it
		r.port, err = freePort()
		if err != nil {
			t.Fatalf("redis: free port: %v", err)
		}
		if err = r.start(); err == nil {
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

// URL is the go-redis URL of the server, database 0, with the password if
// one is required.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr(), Path: "/0"}
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
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", data,
		"--daemonize", "no", "--loglevel", "warning",
	}
	if r.password != "" {
		args = append(args, "--requirepass", r.password)
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := answers(r.Addr(), r.password, cmd.Process.Pid); err == nil {
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
// server of another test that took the port does not count.
func answers(addr, password string, pid int) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
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
