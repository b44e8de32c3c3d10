package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLandingPageInChromium opens the demo edge's landing page (/) in
// Chromium: it lists the demo broadcast with nobody watching, its own
// refresh shows "1 watching" once a watch page plays in another tab, the
// card leads to the watch page, and it fits at 360, 1280 and 3840 px wide
// (screenshots in artifacts/landing-{W}x{H}.png for a reviewer).
func TestLandingPageInChromium(t *testing.T) {
	requireBrowser(t)
	d, _ := runDemoFor(t, demoConfig{Name: "demo"})
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	prefix, _ := filepath.Abs(filepath.Join("artifacts", "landing"))
	ctx, cancel := context.WithTimeout(context.Background(), browserDeadline+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test/browser/landing.mjs", fmt.Sprintf("http://%s/", d.edge.Addr()), "demo", prefix)
	cmd.Dir = "client-js"
	cmd.Env = append(os.Environ(), fmt.Sprintf("QC_WATCH_PLAY_TIMEOUT=%d", int(browserDeadline/time.Second)))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("landing.mjs: %v\n%s\n%s", err, stderr.String(), stdout.String())
	}
	var rep struct {
		Status        int
		Before, After string
		Clicked       string
		Shots         []struct {
			Path                 string
			Width, Scroll, Inner int
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	t.Logf("landing page: %+v", rep)
	if rep.Status != 200 || rep.Before != "0 watching" || rep.After != "1 watching" || rep.Clicked != "/watch/demo" {
		t.Errorf("landing page: %+v", rep)
	}
	if len(rep.Shots) != 3 {
		t.Fatalf("screenshots: %+v", rep.Shots)
	}
	for _, s := range rep.Shots {
		if s.Scroll > s.Inner || !strings.HasSuffix(s.Path, ".png") {
			t.Errorf("at %d px: scrolls sideways (%d > %d)", s.Width, s.Scroll, s.Inner)
		}
		if _, err := os.Stat(s.Path); err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
}
