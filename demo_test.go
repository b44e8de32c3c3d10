package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// buildBinary builds quiccast once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quiccast")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startDemoProcess runs `quiccast demo` on free ports and returns the watch
// URL it printed and how long it took until the page was served.
func startDemoProcess(t *testing.T, bin string) (string, time.Duration, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-origin-listen", "127.0.0.1:0", "-rtmp-listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
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
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatalf("demo printed nothing: %s", stderr.String())
	}
	url, ok := strings.CutPrefix(lines.Text(), "watch: ")
	if !ok {
		t.Fatalf("first line %q, want the watch URL", lines.Text())
	}
	go io.Copy(io.Discard, out)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && bytes.Contains(body, []byte("/player.js")) {
				return url, time.Since(start), cmd
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
	_, took, cmd := startDemoProcess(t, bin)
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

// TestDemoPlaysInChromium loads the demo's page in headless Chromium
// (through Playwright) and checks that video.currentTime advances and
// frames are decoded. The screenshot is kept in artifacts/.
func TestDemoPlaysInChromium(t *testing.T) {
	testenv.RequireTool(t, "chromium")
	testenv.RequireTool(t, "node")
	testenv.RequireFile(t, "client-js/node_modules/playwright-core/package.json", "run `go tool task deps` (npm ci in client-js)")
	bin := buildBinary(t)
	url, _, _ := startDemoProcess(t, bin)
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	shot, _ := filepath.Abs("artifacts/demo-chromium.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test/browser/watch.mjs", url, shot, "3")
	cmd.Dir = "client-js"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("browser check failed: %v\n%s\n%s", err, out, stderr.String())
	}
	var rep struct {
		First, Last struct {
			CurrentTime float64
			Frames      int
			Stats       struct {
				Transport string
				LatencyMs float64
			}
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	if rep.Last.CurrentTime-rep.First.CurrentTime < 1.5 || rep.Last.Frames-rep.First.Frames < 30 {
		t.Fatalf("playback did not advance: %+v", rep)
	}
	if rep.Last.Stats.Transport != "websocket" || rep.Last.Stats.LatencyMs <= 0 || rep.Last.Stats.LatencyMs > 3000 {
		t.Fatalf("player stats %+v, want websocket with a plausible latency", rep.Last.Stats)
	}
	t.Logf("Chromium played %.1f s (%d frames), latency %.0f ms; screenshot %s",
		rep.Last.CurrentTime-rep.First.CurrentTime, rep.Last.Frames-rep.First.Frames, rep.Last.Stats.LatencyMs, shot)
}

func TestHelpListsFlagsWithEnvTwinsAndDefaults(t *testing.T) {
	for _, ca := range []struct {
		cmd  string
		want []string
	}{
		{"origin", []string{"-listen", "env QC_ORIGIN_LISTEN, default \":7000\"", "QC_ORIGIN_MAX_RATE", "QC_LOG_LEVEL"}},
		{"edge", []string{"env QC_EDGE_LISTEN, default \":8080\"", "QC_EDGE_WRITE_TIMEOUT", "QC_EDGE_UNSENT_LIMIT"}},
		{"demo", []string{"QC_DEMO_LISTEN", "QC_DEMO_NAME"}},
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
	code := run(context.Background(), []string{"demo"}, io.Discard, &stderr)
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
