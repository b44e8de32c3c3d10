package publish

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/testenv"
)

// Issue 9, finding 10: `quiccast publish` logged its URL with ?token=.
func TestPublishDoesNotLogTheToken(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	// Nothing listens here: the first attempt fails and is logged.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, url := range []string{
		"ws" + strings.TrimPrefix(srv.URL, "http") + "/publish/cam?token=s3cret-token",
		"ws://" + dead + "/publish/cam?token=s3cret-token",
	} {
		logs := &testenv.Logs{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{URL: url, Stream: bytes.NewReader(clip.DemoBytes()), Logger: logs.Logger(), MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
		}()
		testenv.WaitFor(t, 10*time.Second, "the URL logged", func() bool {
			return len(logs.Lines("publishing")) > 0 || len(logs.Lines("reconnecting")) > 0
		})
		cancel()
		<-done
		for _, l := range logs.Lines("") {
			if strings.Contains(l, "s3cret") {
				t.Errorf("token in the log: %s", l)
			}
		}
		if len(logs.Lines("token=REDACTED")) == 0 {
			t.Errorf("no redacted URL logged for %s", url)
		}
	}
}
