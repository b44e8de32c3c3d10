package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds quiccast once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "quiccast-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "quiccast")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// demoProc is a running `quiccast demo`.
type demoProc struct {
	url     string // the watch page it printed
	publish string // its origin's publish URL, {name} left in
	took    time.Duration
	cmd     *exec.Cmd
}

// launchDemo runs `quiccast demo` with args, kills it when the test
// ends (logging its stderr if the test failed), and returns the watch URL
// it printed first and its further output.
func launchDemo(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, url string, lines *bufio.Scanner) {
	t.Helper()
	cmd = exec.Command(bin, append([]string{"demo"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr.String())
		}
	})
	lines = bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatal("demo printed nothing")
	}
	url, ok := strings.CutPrefix(lines.Text(), "watch: ")
	if !ok {
		t.Fatalf("first line %q, want the watch URL", lines.Text())
	}
	return cmd, url, lines
}

// startDemoProcess runs `quiccast demo` on free ports (plus args) and
// returns the watch URL it printed and how long it took until the page was
// served.
func startDemoProcess(t *testing.T, bin string, args ...string) *demoProc {
	t.Helper()
	start := time.Now()
	cmd, url, lines := launchDemo(t, bin, append([]string{"-listen", "127.0.0.1:0", "-origin-listen", "127.0.0.1:0", "-rtmp-listen", "127.0.0.1:0"}, args...)...)
	d := &demoProc{url: url, cmd: cmd}
	for d.publish == "" && lines.Scan() {
		d.publish, _ = strings.CutPrefix(lines.Text(), "publish more: quiccast publish -url ")
	}
	go func() {
		for lines.Scan() {
		}
	}()
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && bytes.Contains(body, []byte("/player.js")) {
				d.took = time.Since(start)
				return d
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("page not served after 10 s: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDemoBinaryServesThePageFastAndStopsOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	d := startDemoProcess(t, bin)
	took, cmd := d.took, d.cmd
	if took > 2*time.Second {
		t.Errorf("demo took %s to serve its page, want under 2 s", took)
	}
	t.Logf("demo served its page %s after exec", took)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v after SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("demo still running 5 s after SIGTERM")
	}
}

func TestHelpListsFlagsWithEnvTwinsAndDefaults(t *testing.T) {
	for _, ca := range []struct {
		cmd  string
		want []string
	}{
		{"origin", []string{"-listen", "env QC_ORIGIN_LISTEN, default \":7000\"", "QC_ORIGIN_MAX_RATE", "QC_LOG_LEVEL"}},
		{"edge", []string{"env QC_EDGE_LISTEN, default \":8080\"", "QC_EDGE_WRITE_TIMEOUT", "QC_EDGE_UNSENT_LIMIT", "env QC_EDGE_WT_LISTEN, default \"same\"", "QC_EDGE_TLS_CERT", "QC_EDGE_TLS_KEY"}},
		{"demo", []string{"QC_DEMO_LISTEN", "QC_DEMO_NAME", "env QC_DEMO_WT_LISTEN, default \"same\""}},
		{"publish", []string{"QC_PUBLISH_URL", "QC_PUBLISH_INPUT", "default \"1s\""}},
	} {
		t.Run(ca.cmd, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), []string{ca.cmd, "-h"}, io.Discard, &stderr)
			usage := stderr.Bytes()
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			for _, s := range ca.want {
				if !bytes.Contains(usage, []byte(s)) {
					t.Errorf("usage lacks %q:\n%s", s, usage)
				}
			}
		})
	}
}

func TestEnvTwinSetsAFlag(t *testing.T) {
	t.Setenv("QC_DEMO_LISTEN", "not-an-address")
	var stderr bytes.Buffer
	// RTMP off: its fixed default port may be taken on a shared machine,
	// and would fail first.
	code := run(context.Background(), []string{"demo", "-rtmp-listen", ""}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "not-an-address") {
		t.Fatalf("exit %d, stderr %q: want the env value to be used (and fail to listen)", code, stderr.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"nope"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "nope"`) {
		t.Fatalf("exit %d, %q", code, stderr.String())
	}
}
