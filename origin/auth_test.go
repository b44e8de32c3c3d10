package origin

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/quiccast/quiccast/shared/auth/authconfig"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// hasGroups waits until broadcast name holds media.
func hasGroups(t *testing.T, n *Node, name string) {
	t.Helper()
	testenv.WaitFor(t, 15*time.Second, name+" to have groups", func() bool {
		b, ok := n.Lookup(name)
		if !ok {
			return false
		}
		gs, _ := groupsOf(b)
		return len(gs) > 0
	})
}

func formWith(forms []url.Values, kv ...string) url.Values {
	for _, f := range forms {
		ok := true
		for i := 0; i < len(kv); i += 2 {
			ok = ok && f.Get(kv[i]) == kv[i+1]
		}
		if ok {
			return f
		}
	}
	return nil
}

// TestWebhookWithPostgresForRTMPAndWebSocket: an on_publish service that
// keeps stream keys in PostgreSQL accepts one key, refuses another and
// renames a third, for ffmpeg over RTMP and for WebSocket publishers.
func TestWebhookWithPostgresForRTMPAndWebSocket(t *testing.T) {
	k := testenv.StartKeyServer(t)
	n, logs := startRTMPOrigin(t, Config{AuthFlags: authconfig.Config{OnPublish: k.URL + "/on_publish", OnDone: k.URL + "/on_done"}})

	// RTMP: the accepted key publishes; the refused one is turned away; the
	// renaming one publishes under the Location name.
	if err, stderr := startFFmpeg(t, rtmpURL(n, "cam?key=good"), 2).wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffmpeg with the good key: %v\n%s", err, stderr)
	}
	hasGroups(t, n, "cam")
	if err, _ := startFFmpeg(t, rtmpURL(n, "cam?key=bad"), 2).wait(t, 30*time.Second); err == nil {
		t.Fatal("ffmpeg with the bad key published")
	}
	testenv.WaitFor(t, 5*time.Second, "the refusal logged", func() bool { return len(logs.Lines("4003", "refused by the authorisation service")) > 0 })
	if err, stderr := startFFmpeg(t, rtmpURL(n, "cam?key=alias"), 2).wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffmpeg with the renaming key: %v\n%s", err, stderr)
	}
	hasGroups(t, n, "renamed")
	forms := k.Forms()
	f := formWith(forms, "call", "publish", "key", "good")
	if f == nil {
		t.Fatalf("no on_publish form for the good key in %v", forms)
	}
	if f.Get("app") != "live" || f.Get("name") != "cam" || f.Get("addr") != "127.0.0.1" || f.Get("type") != "live" ||
		!strings.HasPrefix(f.Get("tcurl"), "rtmp://") || strings.Contains(f.Get("tcurl"), "good") || f.Get("flashver") == "" || f.Get("clientid") == "" {
		t.Errorf("RTMP on_publish form %v", f)
	}
	testenv.WaitFor(t, 10*time.Second, "on_done for the RTMP publishers", func() bool {
		fs := k.Forms()
		return formWith(fs, "call", "done", "name", "cam", "key", "good") != nil && formWith(fs, "call", "done", "name", "renamed") != nil
	})

	// WebSocket publishers, the same keys.
	c := demoClip(t)
	good := dialPublish(t, n, "cam?key=good", nil)
	expectReady(t, good)
	send(good, c.Init.Data)
	expectClose(t, dialPublish(t, n, "cam?key=bad", nil), wire.CodeForbidden, "refused by the authorisation service (HTTP 403)")
	expectClose(t, dialPublish(t, n, "cam?key=unknown", nil), wire.CodeForbidden, "HTTP 403")
	alias := dialPublish(t, n, "cam?key=alias", nil)
	expectReady(t, alias)
	send(alias, c.Init.Data)
	testenv.WaitFor(t, 5*time.Second, "the renamed WebSocket publisher", func() bool {
		b, ok := n.Lookup("renamed")
		return ok && b.Catalog() != nil && len(logs.Lines("publish renamed by the authoriser", "renamed")) >= 2
	})
	if f := formWith(k.Forms(), "call", "publish", "key", "alias", "app", "ws"); f == nil || f.Get("name") != "cam" {
		t.Errorf("WebSocket on_publish form %v", f)
	}
}

var jwtSecret = strings.Repeat("s", 32)

func mint(t *testing.T, action, path string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(),
		"quiccast_permissions": []map[string]string{{"action": action, "path": path}}}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWTPublisherScopeAndExpiry: a play token cannot publish, a publish
// token only its broadcasts, and a publisher whose token expires is
// disconnected: 4401 over WebSocket, an RTMP error status for ffmpeg.
func TestJWTPublisherScopeAndExpiry(t *testing.T) {
	n, logs := startRTMPOrigin(t, Config{AuthFlags: authconfig.Config{JWTSecret: jwtSecret, JWTLeeway: time.Second}})
	hour := time.Now().Add(time.Hour)
	expectClose(t, dialPublish(t, n, "a?token="+mint(t, "play", "a", hour), nil), wire.CodeForbidden, `publish "a": the token does not allow this`)
	expectClose(t, dialPublish(t, n, "b?token="+mint(t, "publish", "a", hour), nil), wire.CodeForbidden, "does not allow")
	expectClose(t, dialPublish(t, n, "a?token="+mint(t, "publish", "a", time.Now().Add(-time.Minute)), nil), wire.CodeTokenExpired, "token expired")
	expectReady(t, dialPublish(t, n, "studio/x?token="+mint(t, "publish", "studio/*", hour), nil))

	ws := dialPublish(t, n, "a?token="+mint(t, "publish", "a", time.Now().Add(4*time.Second)), nil)
	expectReady(t, ws)
	send(ws, demoClip(t).Init.Data)
	expectClose(t, ws, wire.CodeTokenExpired, `publish "a": token expired`)

	start := time.Now()
	ff := startFFmpeg(t, rtmpURL(n, "r?key="+mint(t, "publish", "r", time.Now().Add(3*time.Second))), 0)
	err, _ := ff.wait(t, 30*time.Second)
	if err == nil {
		t.Fatal("ffmpeg ended normally")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the RTMP publisher lasted %s with a 3s token", d)
	}
	testenv.WaitFor(t, 5*time.Second, "the expiry logged", func() bool { return len(logs.Lines("4401", `publish \"r\": token expired`)) > 0 })
	for _, l := range logs.Lines("eyJ") {
		t.Errorf("a token is logged: %s", l)
	}
}
