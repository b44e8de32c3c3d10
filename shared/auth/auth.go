// Package auth is the one seam through which every publish, play and relay
// request is authorised. Nodes ask an Authorizer; which one is plugged in
// (allow-all, static tokens, later JWT or a webhook) is configuration.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/quiccast/quiccast/shared/wire"
)

// Action is what a request wants to do.
type Action string

const (
	Publish Action = "publish"
	Play    Action = "play"
	Relay   Action = "relay"
)

// Request is one request to authorise.
type Request struct {
	Action    Action
	Broadcast string
	Token     string // from ?token= or Authorization: Bearer
	Remote    string // peer address, for logs and webhooks

	// What webhooks forward (nginx-rtmp's fields), when the protocol
	// has them: the RTMP app ("live"; "ws" for WebSocket, "wt" for
	// WebTransport, "hls"), the tcUrl or request URL (token redacted), the
	// RTMP flashVer, and the query arguments of the stream key or URL.
	App      string
	URL      string
	FlashVer string
	Args     url.Values
}

// Authorizer decides. A refusal is a *wire.Error with CodeUnauthorized or
// CodeForbidden, so it reaches the client as a close code and a message.
type Authorizer interface {
	Authorize(ctx context.Context, r Request) error
}

// AllowAll allows everything; it is the default until tokens are set.
type AllowAll struct{}

// Authorize allows r.
func (AllowAll) Authorize(context.Context, Request) error { return nil }

// Tokens allows an action when the request carries one of the action's
// tokens. An action with no tokens configured is allowed for anyone.
type Tokens map[Action][]string

// Authorize checks r's token in constant time.
func (t Tokens) Authorize(_ context.Context, r Request) error {
	want := t[r.Action]
	if len(want) == 0 {
		return nil
	}
	ok := 0
	for _, w := range want {
		ok |= Equal(w, r.Token)
	}
	if ok == 1 {
		return nil
	}
	if r.Token == "" {
		return wire.Errorf(wire.CodeUnauthorized, "%s %q needs a token (?token= or Authorization: Bearer)", r.Action, r.Broadcast)
	}
	return wire.Errorf(wire.CodeUnauthorized, "%s %q: token not accepted", r.Action, r.Broadcast)
}

// FromConfig returns AllowAll when no token is configured, else Tokens.
// Each argument is a comma-separated token list for that action.
func FromConfig(publish, play, relay string) Authorizer {
	t := Tokens{}
	for a, s := range map[Action]string{Publish: publish, Play: play, Relay: relay} {
		for _, tok := range strings.Split(s, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				t[a] = append(t[a], tok)
			}
		}
	}
	if len(t) == 0 {
		return AllowAll{}
	}
	return t
}

// TokenFromRequest returns the token of an HTTP request: the token query
// parameter, else an Authorization: Bearer header.
func TokenFromRequest(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// Equal is 1 when a and b are the same secret, else 0, in a time that
// tells nothing about either: it compares their SHA-256 digests, so not
// even the length of the expected token leaks (subtle.ConstantTimeCompare
// returns at once on a length mismatch).
func Equal(a, b string) int {
	da, db := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(da[:], db[:])
}

// secretParam matches a token-bearing query parameter in any text.
var secretParam = regexp.MustCompile(`(?i)\b(token|key|access_token)=[^&\s"'#]*`)

// Redact hides the values of token, key and access_token parameters in s
// (a URL, or an error message quoting one), for logs and messages.
func Redact(s string) string {
	return secretParam.ReplaceAllString(s, "$1=REDACTED")
}

// RedactURL is u for logs: its password and token parameters hidden.
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return Redact(u.Redacted())
}
