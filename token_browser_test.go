package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestChromiumAsksForAFreshTokenWhenItExpires: the demo's edge takes JWT
// play tokens that live 8 s (long enough for a busy machine to start
// playing within one, or every fresh token would expire before it plays). The player in Chromium, given one, plays;
// when the edge closes with 4401 it emits tokenexpired, the page fetches a
// fresh token from ?tokenurl= and the player plays on with it, over
// WebSocket and over WebTransport.
func TestChromiumAsksForAFreshTokenWhenItExpires(t *testing.T) {
	requireBrowser(t)
	secret := strings.Repeat("k", 32)
	mint := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(8 * time.Second).Unix(),
			"quiccast_permissions": []map[string]string{{"action": "play", "path": "demo"}}}).SignedString([]byte(secret))
		if err != nil {
			t.Error(err)
		}
		return s
	}
	var issued atomic.Int32
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		issued.Add(1)
		fmt.Fprint(w, mint())
	}))
	defer tokens.Close()
	d := startDemoProcess(t, buildBinary(t), "-jwt-secret", secret, "-jwt-leeway", "1s")
	for _, transport := range []string{"websocket", "webtransport"} {
		t.Run(transport, func(t *testing.T) {
			before := issued.Load()
			page := fmt.Sprintf("%s?transport=%s&token=%s&tokenurl=%s", d.url, transport, mint(), url.QueryEscape(tokens.URL+"/token"))
			w := startWatch(t, page, "chromium-token-refresh-"+transport, 0, 0)
			w.waitState("playing")
			exp := w.waitEvent("tokenexpired", func(e playerEvent) bool { return e.Type == "tokenexpired" })
			w.waitEvent("a connection after the fresh token", func(e playerEvent) bool { return e.Type == "connected" && e.At >= exp.At })
			// Played on past a second expiry: the refreshed token expired
			// too and was replaced again.
			w.waitEvent("a second tokenexpired", func(e playerEvent) bool { return e.Type == "tokenexpired" && e.At > exp.At })
			from, to := w.waitPlayed(2)
			rep := w.report()
			if got := issued.Load() - before; got < 2 {
				t.Fatalf("%d fresh tokens fetched, want at least 2", got)
			}
			if to.CurrentTime-from.CurrentTime < 1 || rep.Last.Stats.Transport != transport {
				t.Fatalf("after the refreshes: played %.1f s over %q", to.CurrentTime-from.CurrentTime, rep.Last.Stats.Transport)
			}
			for _, e := range rep.Events {
				if e.Type == "state" && (e.Detail == "refused" || e.Detail == "stopped") {
					t.Fatalf("the player went %v", e.Detail)
				}
			}
		})
	}
}
