package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBin is where Debian's postgresql package puts its programs.
var PostgresBin = "/usr/lib/postgresql/15/bin"

// Postgres is a real PostgreSQL cluster started for one test: initdb in a
// temporary directory, the server on a free loopback port (trust auth, no
// fsync), stopped and removed in t.Cleanup. As root, it runs as the
// "postgres" user, which PostgreSQL requires.
type Postgres struct {
	Port int
	dir  string
	cmd  *exec.Cmd
}

// StartPostgres starts a cluster and returns once it accepts connections.
// Without Debian's postgresql it skips (or fails in CI, as RequireTool).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	RequireFile(t, filepath.Join(PostgresBin, "postgres"), "apt-get install postgresql (see .ci/install-deps)")
	dir, err := os.MkdirTemp("", "qc-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("postgres: running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(PostgresBin, name), args...)
		c.Dir = dir
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p := &Postgres{dir: dir}
	for attempt := 0; attempt < 3; attempt++ {
		if p.Port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("postgres%d.log", attempt)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := run("postgres", "-D", data, "-p", strconv.Itoa(p.Port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatal(err)
		}
		logf.Close()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := pgx.Connect(context.Background(), p.URL())
			if err == nil {
				c.Close(context.Background())
				p.cmd = cmd
				t.Cleanup(p.stop)
				return p
			}
			if time.Now().After(deadline) || exited(cmd.Process.Pid) {
				cmd.Process.Kill()
				cmd.Wait()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "postgres2.log"))
	t.Fatalf("postgres did not start; its log:\n%s", log)
	return nil
}

// URL is the connection URL of the "postgres" database as user postgres.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

func (p *Postgres) stop() {
	p.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}
