package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// fake guards one action, allows one token and grants until exp.
type fake struct {
	action Action
	token  string
	exp    time.Time
	code   wire.Code
	name   string
}

func (f fake) Guards(a Action) bool { return a == f.action }
func (f fake) Method() string       { return f.name }
func (f fake) Authorize(ctx context.Context, r Request) error {
	_, err := f.Decide(ctx, r)
	return err
}
func (f fake) Decide(_ context.Context, r Request) (Grant, error) {
	if r.Token == f.token {
		return Grant{Expires: f.exp}, nil
	}
	return Grant{}, wire.Errorf(f.code, "%s refuses", f.name)
}

func TestChain(t *testing.T) {
	t0 := time.Unix(2000, 0)
	c := NewChain(
		[]Authorizer{fake{action: Publish, token: "pub-ok", code: wire.CodeForbidden, name: "cidr", exp: t0.Add(time.Hour)}},
		[]Authorizer{
			Tokens{Publish: {"pub-ok"}, Relay: {"cluster"}},
			fake{action: Play, token: "jwt-ok", code: wire.CodeUnauthorized, name: "jwt", exp: t0.Add(time.Minute)},
			fake{action: Play, token: "hook-ok", code: wire.CodeForbidden, name: "webhook"},
		})
	ctx := context.Background()
	g, err := c.Decide(ctx, Request{Action: Publish, Token: "pub-ok"})
	if err != nil || g.Method != "tokens" || !g.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("publish: %+v %v (the gate's expiry carries)", g, err)
	}
	if _, err := c.Decide(ctx, Request{Action: Publish, Token: "nope"}); wire.CodeOf(err) != wire.CodeForbidden || !strings.Contains(err.Error(), "cidr") {
		t.Fatalf("a gate refusal: %v", err)
	}
	if g, err := c.Decide(ctx, Request{Action: Play, Token: "jwt-ok"}); err != nil || !g.Expires.Equal(t0.Add(time.Minute)) {
		t.Fatalf("play by jwt: %+v %v", g, err)
	}
	if g, err := c.Decide(ctx, Request{Action: Play, Token: "hook-ok"}); err != nil || g.Method != "webhook" {
		t.Fatalf("play by webhook: %+v %v", g, err)
	}
	if _, err := c.Decide(ctx, Request{Action: Play, Token: "x"}); wire.CodeOf(err) != wire.CodeForbidden {
		t.Fatalf("all refuse: %v, want the forbidden (more specific) refusal", err)
	}
	if _, err := c.Decide(ctx, Request{Action: Play, Token: "pub-ok"}); err == nil {
		t.Fatal("a publish token played")
	}
	if g, err := c.Decide(ctx, Request{Action: "other"}); err != nil || g.Method != "open" {
		t.Fatalf("an unguarded action: %+v %v", g, err)
	}
	if !c.Guards(Play) || !c.Guards(Relay) || c.Guards("other") {
		t.Fatal("Guards")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if n := testenv.Metric(t, reg, "quiccast_auth_decisions_total", "action", "play", "method", "chain", "result", "forbidden"); n != 2 {
		t.Fatalf("refused plays counted %v", n)
	}
	if n := testenv.Metric(t, reg, "quiccast_auth_decisions_total", "action", "publish", "method", "cidr", "result", "forbidden"); n != 1 {
		t.Fatalf("gate refusals counted %v", n)
	}
	if n := testenv.Metric(t, reg, "quiccast_auth_decisions_total", "action", "play", "method", "jwt", "result", "allowed"); n != 1 {
		t.Fatalf("jwt allows counted %v", n)
	}
}

func TestDecideOnPlainAuthorizer(t *testing.T) {
	g, err := Decide(context.Background(), Tokens{Play: {"v"}}, Request{Action: Play, Token: "v"})
	if err != nil || !g.Expires.IsZero() {
		t.Fatal(g, err)
	}
	if Guards(AllowAll{}, Play) || !Guards(Tokens{Play: {"v"}}, Play) || Guards(Tokens{Play: {"v"}}, Publish) {
		t.Fatal("Guards")
	}
	if err := ExpiredError(Request{Action: Play, Broadcast: "b"}); wire.CodeOf(err) != wire.CodeTokenExpired {
		t.Fatal(err)
	}
}
