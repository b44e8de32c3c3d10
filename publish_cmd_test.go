package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/publish"
	"github.com/quiccast/quiccast/shared/testenv"
)

// Issue 13, item 2: `quiccast publish` retried forever, at WARN, on
// refusals that never go away. Each must end the command with exit 1 and
// one line saying what to change.
func TestPublishCommandStopsOnPermanentRefusals(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	logs := &testenv.Logs{}
	o, err := origin.New(origin.Config{Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", PublishTokens: "right", Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, o.Run)
	addr := o.Addr().String()

	// Someone already publishes "taken".
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go publish.Run(ctx, publish.Config{URL: "ws://" + addr + "/publish/taken", Token: "right", Size: "160x90", Bitrate: "100k", Logger: logs.Logger()})
	testenv.WaitFor(t, 20*time.Second, "the first publisher of taken", func() bool {
		b, ok := o.Lookup("taken")
		return ok && b.Latest(0) != nil
	})

	for _, tc := range []struct {
		name, url, token, want string
	}{
		{"token", "ws://" + addr + "/publish/cam", "wrong", "set -token"},
		{"no token", "ws://" + addr + "/publish/cam", "", "set -token"},
		{"name taken", "ws://" + addr + "/publish/taken", "right", "publish under another name"},
		{"bad name", "ws://" + addr + "/publish/bad~name", "right", "change the name"},
		{"http URL", "http://" + addr + "/publish/cam", "right", "starts with ws:// or wss://"},
		{"HTTP 404", "ws://" + addr + "/watch/cam", "right", "HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{"publish", "-url", tc.url, "-token", tc.token, "-size", "160x90", "-bitrate", "100k", "-min-backoff", "10ms", "-max-backoff", "20ms"}, &stdout, &stderr)
			if ctx.Err() != nil {
				t.Fatalf("still retrying after 30 s:\n%s", stderr.String())
			}
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			out := strings.TrimSpace(stderr.String())
			lines := strings.Split(out, "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "quiccast publish: ") || !strings.Contains(last, tc.want) {
				t.Errorf("last line %q, want quiccast publish: … %s", last, tc.want)
			}
			if strings.Contains(out, "reconnecting") {
				t.Errorf("retried a permanent refusal:\n%s", out)
			}
			t.Logf("%s", last)
		})
	}
}
