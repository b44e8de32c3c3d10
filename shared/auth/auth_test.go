package auth

import (
	"context"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/quiccast/quiccast/shared/wire"
)

func TestTokens(t *testing.T) {
	a := Tokens{Publish: {"pub-1", "pub-2"}, Relay: {"cluster"}}
	ctx := context.Background()
	for _, ca := range []struct {
		r    Request
		ok   bool
		says string
	}{
		{Request{Action: Publish, Broadcast: "live/a", Token: "pub-1"}, true, ""},
		{Request{Action: Publish, Broadcast: "live/a", Token: "pub-2"}, true, ""},
		{Request{Action: Publish, Broadcast: "live/a", Token: "pub-3"}, false, `publish "live/a": token not accepted`},
		{Request{Action: Publish, Broadcast: "live/a", Token: "pub-1 "}, false, "token not accepted"},
		{Request{Action: Publish, Broadcast: "live/a", Token: "pub-"}, false, "token not accepted"},
		{Request{Action: Publish, Broadcast: "live/a", Token: "cluster"}, false, "token not accepted"}, // another action's token
		{Request{Action: Publish, Broadcast: "live/a"}, false, `publish "live/a" needs a token`},
		{Request{Action: Play, Broadcast: "live/a"}, true, ""}, // no play tokens: open
		{Request{Action: Play, Broadcast: "live/a", Token: "anything"}, true, ""},
		{Request{Action: Relay, Broadcast: "live/a", Token: "cluster"}, true, ""},
		{Request{Action: Relay, Broadcast: "live/a", Token: "pub-1"}, false, `relay "live/a": token not accepted`},
	} {
		err := a.Authorize(ctx, ca.r)
		if (err == nil) != ca.ok {
			t.Errorf("%+v: %v, want ok=%v", ca.r, err, ca.ok)
			continue
		}
		if err == nil {
			continue
		}
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.CodeUnauthorized || wire.CodeOf(err) != wire.CodeUnauthorized {
			t.Errorf("%+v: %#v is not a CodeUnauthorized *wire.Error", ca.r, err)
		}
		if !strings.Contains(wire.Reason(err), ca.says) {
			t.Errorf("%+v: reason %q, want %q", ca.r, wire.Reason(err), ca.says)
		}
		if ca.r.Token != "" && strings.Contains(err.Error(), ca.r.Token) {
			t.Errorf("%+v: the refused token is echoed: %q", ca.r, err)
		}
	}
}

func TestAllowAll(t *testing.T) {
	for _, act := range []Action{Publish, Play, Relay, "other"} {
		if err := (AllowAll{}).Authorize(context.Background(), Request{Action: act}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFromConfig(t *testing.T) {
	if a := FromConfig("", "", ""); a != (AllowAll{}) {
		t.Fatalf("no tokens: %#v, want AllowAll", a)
	}
	if a := FromConfig(" , ,", "  ", ","); a != (AllowAll{}) {
		t.Fatalf("only separators: %#v, want AllowAll", a)
	}
	a := FromConfig(" p1, p2 ,,p3", "", "r1")
	want := Tokens{Publish: {"p1", "p2", "p3"}, Relay: {"r1"}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("FromConfig = %#v, want %#v", a, want)
	}
	ctx := context.Background()
	if err := a.Authorize(ctx, Request{Action: Publish, Token: "p2"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Authorize(ctx, Request{Action: Publish, Token: " p2 "}); err == nil {
		t.Fatal("untrimmed token accepted")
	}
	if err := a.Authorize(ctx, Request{Action: Play}); err != nil {
		t.Fatalf("play without play tokens: %v", err)
	}
	if err := a.Authorize(ctx, Request{Action: Relay, Token: "p1"}); wire.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("relay with a publish token: %v", err)
	}
	b := FromConfig("", "v", "")
	if err := b.Authorize(ctx, Request{Action: Publish}); err != nil {
		t.Fatalf("publish when only play is guarded: %v", err)
	}
	if err := b.Authorize(ctx, Request{Action: Play}); err == nil {
		t.Fatal("play without a token allowed")
	}
}

func TestTokenFromRequest(t *testing.T) {
	for _, ca := range []struct {
		url, auth, want string
	}{
		{"/ws/live?token=abc", "", "abc"},
		{"/ws/live?token=a%20b%2Bc", "", "a b+c"},
		{"/ws/live?x=1&token=q", "Bearer h", "q"}, // the query wins
		{"/ws/live", "Bearer h.e.y", "h.e.y"},
		{"/ws/live", "bearer lower", "lower"},
		{"/ws/live", "BEARER upper", "upper"},
		{"/ws/live", "Bearer   padded  ", "padded"},
		{"/ws/live?token=", "Bearer h", "h"}, // an empty query token is none
		{"/ws/live", "Bearer ", ""},
		{"/ws/live", "Bearer", ""},
		{"/ws/live", "Basic dXNlcjpwYXNz", ""},
		{"/ws/live", "Bearerxyz", ""},
		{"/ws/live", "", ""},
	} {
		r := httptest.NewRequest("GET", "http://edge"+ca.url, nil)
		if ca.auth != "" {
			r.Header.Set("Authorization", ca.auth)
		}
		if got := TokenFromRequest(r); got != ca.want {
			t.Errorf("%s with %q: %q, want %q", ca.url, ca.auth, got, ca.want)
		}
	}
}

func TestEqualAndRedact(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"s3cret", "s3cret", 1}, {"s3cret", "s3cre", 0}, {"s3cret", "s3cret!", 0}, {"", "", 1}, {"", "x", 0}, {"abc", "abd", 0}} {
		if got := Equal(c.a, c.b); got != c.want {
			t.Errorf("Equal(%q, %q) = %d", c.a, c.b, got)
		}
	}
	for in, want := range map[string]string{
		"wss://o:7000/publish/cam?token=s3cret":                    "wss://o:7000/publish/cam?token=REDACTED",
		"rtmp://h/live/cam?key=abc&x=1":                            "rtmp://h/live/cam?key=REDACTED&x=1",
		`parse "rtmp://h/live/cam?Key=abc%zz": invalid URL escape`: `parse "rtmp://h/live/cam?Key=REDACTED": invalid URL escape`,
		"no secrets here":                                          "no secrets here",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
