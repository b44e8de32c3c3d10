package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/auth/authconfig"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

var jwtSecret = strings.Repeat("s", 32)

// mint signs an HS256 token allowing action on path until exp.
func mint(t *testing.T, action, path string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(),
		"quiccast_permissions": []map[string]string{{"action": action, "path": path}}}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTViewerScopeAndExpiry(t *testing.T) {
	forEachWriter(t, func(t *testing.T, writer string) {
		src := newFakeSource()
		for _, name := range []string{"live/a", "live/b"} {
			src.add(t, name).object(t, true, 10)
		}
		n, logs := startEdge(t, Config{Source: src, WSWriter: writer, AuthFlags: authconfig.Config{JWTSecret: jwtSecret, JWTLeeway: time.Second}})
		ctx := context.Background()
		short := mint(t, "play", "live/a", time.Now().Add(3*time.Second))
		long := mint(t, "play", "live/a", time.Now().Add(time.Hour))
		for _, ca := range []struct {
			name, token string
			code        wire.Code
			reason      string
		}{
			{"live/b", long, wire.CodeForbidden, `play "live/b": the token does not allow this`},
			{"live/a", mint(t, "publish", "live/a", time.Now().Add(time.Hour)), wire.CodeForbidden, "does not allow"},
			{"live/a", mint(t, "play", "live/a", time.Now().Add(-time.Minute)), wire.CodeTokenExpired, "token expired"},
			{"live/a", "", wire.CodeUnauthorized, "needs a token"},
		} {
			c, err := viewer.DialWith(ctx, testTLS, wsURL(n, ca.name), ca.token)
			if err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c, ca.code, ca.reason)
			c.Close()
		}
		keep, err := viewer.DialWith(ctx, testTLS, wsURL(n, "live/a"), long)
		if err != nil {
			t.Fatal(err)
		}
		defer keep.Close()
		c, err := viewer.DialWith(ctx, testTLS, wsURL(n, "live/a"), short)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		next(t, c) // admitted: the catalog
		start := time.Now()
		expectClosed(t, c, wire.CodeTokenExpired, "token expired")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("closed %s after admission, the token lived 3s (+1s leeway)", d)
		}
		// The viewer with a valid token is still served.
		next(t, keep)
		testenv.WaitFor(t, time.Second, "the decision metric", func() bool {
			return testenv.Metric(t, n.Registry(), "quiccast_auth_decisions_total", "action", "play", "method", "jwt", "result", "allowed") >= 2
		})
		if l := logs.Lines(short); len(l) > 0 {
			t.Errorf("a token is logged: %s", l[0])
		}
	})
}

func TestJWTHLSRequestsFailAfterExpiry(t *testing.T) {
	src := newFakeSource()
	f := src.add(t, "live/a")
	f.object(t, true, 10)
	n, _ := startEdge(t, Config{Source: src, AuthFlags: authconfig.Config{JWTSecret: jwtSecret, JWTLeeway: time.Second}})
	get := func(token string) int {
		resp, err := http.Get(fmt.Sprintf("http://%s/hls/live/a/index.m3u8?token=%s", n.Addr(), token))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tok := mint(t, "play", "live/a", time.Now().Add(4*time.Second))
	if s := get(tok); s == http.StatusUnauthorized || s == http.StatusForbidden {
		t.Fatalf("a valid token: HTTP %d", s)
	}
	if s := get(mint(t, "play", "live/b", time.Now().Add(time.Hour))); s != http.StatusForbidden {
		t.Fatalf("a token for another broadcast: HTTP %d, want 403", s)
	}
	testenv.WaitFor(t, 10*time.Second, "the token to expire", func() bool { return get(tok) == http.StatusUnauthorized })
}

func TestJWTWebTransportViewerIsClosedWhenItsTokenExpires(t *testing.T) {
	src := newFakeSource()
	src.add(t, "live/a").object(t, true, 10)
	src.add(t, "live/b").object(t, true, 10)
	n, _ := startWTEdge(t, Config{Source: src, AuthFlags: authconfig.Config{JWTSecret: jwtSecret, JWTLeeway: time.Second}})
	hashes := certHashes(t, n).Hashes
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, rsp, err := dialWT(ctx, n, hashes, "live/b?token="+mint(t, "play", "live/a", time.Now().Add(time.Hour)), nil); err == nil || rsp == nil || rsp.StatusCode != http.StatusForbidden {
		t.Fatalf("a play-A token for B over WebTransport: %v %v, want 403", rsp, err)
	}
	closedExpired := func(sess *webtransport.Session, what string) {
		t.Helper()
		select {
		case <-sess.Context().Done():
		case <-ctx.Done():
			t.Fatalf("%s: the session outlived its token", what)
		}
		_, err := sess.OpenStream()
		var se *webtransport.SessionError
		if !errors.As(err, &se) || wire.Code(se.ErrorCode) != wire.CodeTokenExpired || !strings.Contains(se.Message, "token expired") {
			t.Fatalf("%s: session closed with %v, want 4401 token expired", what, err)
		}
	}
	v, err := watchWT(ctx, n, hashes, "live/a", mint(t, "play", "live/a", time.Now().Add(4*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	closedExpired(v.sess, "a token that expires while watching")
	// A token that had expired before the session: a browser sees no HTTP
	// status of a refused WebTransport request, so the session is opened
	// and closed with 4401, which the player turns into tokenexpired (a
	// 401 left it retrying with the stale token).
	sess, _, err := dialWT(ctx, n, hashes, "live/a?token="+mint(t, "play", "live/a", time.Now().Add(-time.Minute)), nil)
	if err != nil {
		t.Fatalf("an expired token: %v, want a session closed with 4401", err)
	}
	closedExpired(sess, "a token expired before the session")
}

// TestWebhookAddressRulesAndRateLimitsForViewers: on_play over the
// PostgreSQL key service, a denied network and the per-IP rate limit, each
// refusing a WebSocket viewer with its code.
func TestWebhookAddressRulesAndRateLimitsForViewers(t *testing.T) {
	k := testenv.StartKeyServer(t)
	src := newFakeSource()
	src.add(t, "cam").object(t, true, 10)
	ctx := context.Background()
	dial := func(n *Node, path string) *viewer.Conn {
		c, err := viewer.DialWith(ctx, testTLS, wsURL(n, path), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	n, _ := startEdge(t, Config{Source: src, AuthFlags: authconfig.Config{OnPlay: k.URL + "/on_play", OnDone: k.URL + "/on_done"}})
	ok := dial(n, "cam?key=good")
	next(t, ok)
	expectClosed(t, dial(n, "cam?key=bad"), wire.CodeForbidden, "refused by the authorisation service (HTTP 403)")
	ok.Close()
	testenv.WaitFor(t, 10*time.Second, "on_done for the viewer", func() bool {
		for _, f := range k.Forms() {
			if f.Get("call") == "done" && f.Get("key") == "good" && f.Get("app") == "ws" {
				return true
			}
		}
		return false
	})

	denied, _ := startEdge(t, Config{Source: src, AuthFlags: authconfig.Config{DenyPlay: "127.0.0.0/8"}})
	expectClosed(t, dial(denied, "cam"), wire.CodeForbidden, `play "cam": not allowed from 127.0.0.1`)

	limited, _ := startEdge(t, Config{Source: src, AuthFlags: authconfig.Config{ConnRate: 0.01, ConnBurst: 2}})
	next(t, dial(limited, "cam"))
	next(t, dial(limited, "cam"))
	expectClosed(t, dial(limited, "cam"), wire.CodeRateLimited, "too many connections from 127.0.0.1")
}
