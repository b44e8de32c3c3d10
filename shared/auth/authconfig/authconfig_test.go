package authconfig

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/wire"
)

func parse(t *testing.T, env map[string]string, args ...string) Config {
	var c Config
	s := config.New("edge", "")
	s.SetLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	c.Flags(s)
	if err := s.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestComposedFromFlagsAndEnv(t *testing.T) {
	secret := strings.Repeat("k", 32)
	c := parse(t, map[string]string{"QC_EDGE_JWT_SECRET": secret}, "-deny-play", "192.0.2.0/24")
	a, err := c.Build(context.Background(), auth.FromConfig("", "static-play", "cluster"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(),
		"quiccast_permissions": []map[string]string{{"action": "play", "path": "live/a"}}}).SignedString([]byte(secret))
	ctx := context.Background()
	for _, ca := range []struct {
		r    auth.Request
		want wire.Code
	}{
		{auth.Request{Action: auth.Play, Broadcast: "live/a", Token: tok, Remote: "198.51.100.1:1"}, 0},
		{auth.Request{Action: auth.Play, Broadcast: "live/b", Token: tok, Remote: "198.51.100.1:1"}, wire.CodeForbidden},
		{auth.Request{Action: auth.Publish, Broadcast: "live/a", Token: tok, Remote: "198.51.100.1:1"}, wire.CodeForbidden},
		{auth.Request{Action: auth.Play, Broadcast: "live/b", Token: "static-play", Remote: "198.51.100.1:1"}, 0},
		{auth.Request{Action: auth.Play, Broadcast: "live/a", Token: tok, Remote: "192.0.2.9:1"}, wire.CodeForbidden},
		{auth.Request{Action: auth.Relay, Token: "cluster", Remote: "192.0.2.9:1"}, 0},
		{auth.Request{Action: auth.Relay, Token: tok}, wire.CodeUnauthorized},
	} {
		err := a.Authorize(ctx, ca.r)
		if (ca.want == 0) != (err == nil) || err != nil && wire.CodeOf(err) != ca.want {
			t.Errorf("%s %s from %s: %v, want %v", ca.r.Action, ca.r.Broadcast, ca.r.Remote, err, ca.want)
		}
	}
	if g, _ := auth.Decide(ctx, a, auth.Request{Action: auth.Play, Broadcast: "live/a", Token: tok, Remote: "198.51.100.1:1"}); time.Until(g.Expires) < 50*time.Minute {
		t.Errorf("the grant does not carry the token's expiry: %v", g.Expires)
	}
}

func TestNothingConfiguredKeepsTokens(t *testing.T) {
	c := parse(t, nil)
	tokens := auth.FromConfig("p", "", "")
	a, err := c.Build(context.Background(), tokens, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.(auth.Tokens); !ok {
		t.Fatalf("%T, want the tokens as they were", a)
	}
	if a, _ := c.Build(context.Background(), nil, nil); a != (auth.AllowAll{}) {
		t.Fatalf("%T", a)
	}
}

func TestBadSettings(t *testing.T) {
	for _, args := range [][]string{{"-jwt-secret", "short"}, {"-allow-play", "10.0.0.0/99"}, {"-on-publish", "nowhere"}, {"-jwt-secret", strings.Repeat("k", 32), "-jwt-algs", "none"}} {
		if _, err := parse(t, nil, args...).Build(context.Background(), nil, nil); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
