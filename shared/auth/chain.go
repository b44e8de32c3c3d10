package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/wire"
)

// Grant is what an allowed request was given.
type Grant struct {
	// Expires is when the grant ends (a token's exp); zero: never. A
	// session still open then is closed with wire.CodeTokenExpired.
	Expires time.Time
	// Name, when set, is the broadcast name to publish under instead of
	// the one asked for (a webhook's 3xx Location).
	Name string
	// Method names the authoriser that allowed it, for logs and metrics
	// only: protocols never branch on it.
	Method string
}

// Decider is an Authorizer that also says what it granted. Implementations
// of Decider implement Authorize as Decide with the grant dropped.
type Decider interface {
	Decide(ctx context.Context, r Request) (Grant, error)
}

// Decide asks a, returning its grant when a is a Decider.
func Decide(ctx context.Context, a Authorizer, r Request) (Grant, error) {
	if d, ok := a.(Decider); ok {
		return d.Decide(ctx, r)
	}
	return Grant{}, a.Authorize(ctx, r)
}

// Scoped is implemented by authorisers that guard only some actions. An
// authoriser that is not Scoped guards every action.
type Scoped interface {
	Guards(Action) bool
}

// Guards reports whether a can refuse action at all.
func Guards(a Authorizer, action Action) bool {
	if s, ok := a.(Scoped); ok {
		return s.Guards(action)
	}
	_, open := a.(AllowAll)
	return !open
}

// Method names an authoriser for metrics: its Method() if it has one.
func Method(a Authorizer) string {
	if m, ok := a.(interface{ Method() string }); ok {
		return m.Method()
	}
	return "other"
}

// Guards is true for actions with tokens configured.
func (t Tokens) Guards(a Action) bool { return len(t[a]) > 0 }

// Method is "tokens".
func (Tokens) Method() string { return "tokens" }

// Guards is false: AllowAll refuses nothing.
func (AllowAll) Guards(Action) bool { return false }

// Method is "open".
func (AllowAll) Method() string { return "open" }

// Chain composes authorisers. Every gate (address rules, rate limits) must
// allow; then, of the credential checkers (static tokens, JWT, webhook)
// that guard the action, one must allow. When none guards it the action is
// open, as with no tokens configured. The grant expires at the earliest
// expiry among those that allowed. Protocols see one Authorizer and a
// refusal as a *wire.Error; they never learn which member answered.
type Chain struct {
	Gates       []Authorizer
	Credentials []Authorizer
	decisions   *prometheus.CounterVec
}

// NewChain returns a chain with its decision counter
// (quiccast_auth_decisions_total{action,method,result}).
func NewChain(gates, credentials []Authorizer) *Chain {
	return &Chain{Gates: gates, Credentials: credentials, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quiccast_auth_decisions_total",
		Help: "Authorisation decisions by action, the method that answered (tokens, jwt, webhook, cidr, ratelimit, open) and result (allowed, or the refusal's close-code name).",
	}, []string{"action", "method", "result"})}
}

// Describe and Collect make the chain's counter registrable.
func (c *Chain) Describe(ch chan<- *prometheus.Desc) { c.decisions.Describe(ch) }

// Collect collects the decision counter.
func (c *Chain) Collect(ch chan<- prometheus.Metric) { c.decisions.Collect(ch) }

// Guards is true when a gate or a credential checker guards a.
func (c *Chain) Guards(a Action) bool {
	for _, m := range c.Gates {
		if Guards(m, a) {
			return true
		}
	}
	for _, m := range c.Credentials {
		if Guards(m, a) {
			return true
		}
	}
	return false
}

// Authorize is Decide without the grant.
func (c *Chain) Authorize(ctx context.Context, r Request) error {
	_, err := c.Decide(ctx, r)
	return err
}

// Decide runs the gates, then the credential checkers that guard r.Action.
func (c *Chain) Decide(ctx context.Context, r Request) (Grant, error) {
	var g Grant
	for _, m := range c.Gates {
		if !Guards(m, r.Action) {
			continue
		}
		mg, err := Decide(ctx, m, r)
		if err != nil {
			c.count(r.Action, Method(m), err)
			return Grant{}, err
		}
		g.Expires = earliest(g.Expires, mg.Expires)
	}
	var first error
	asked := false
	for _, m := range c.Credentials {
		if !Guards(m, r.Action) {
			continue
		}
		asked = true
		mg, err := Decide(ctx, m, r)
		if err == nil {
			mg.Expires = earliest(g.Expires, mg.Expires)
			mg.Method = Method(m)
			c.count(r.Action, mg.Method, nil)
			return mg, nil
		}
		// A forbidden (a valid token for something else) says more than
		// an unauthorized (a token this member does not know).
		if first == nil || (wire.CodeOf(err) == wire.CodeForbidden && wire.CodeOf(first) != wire.CodeForbidden) {
			first = err
		}
	}
	if !asked {
		g.Method = "open"
		c.count(r.Action, g.Method, nil)
		return g, nil
	}
	c.count(r.Action, "chain", first)
	return Grant{}, first
}

func (c *Chain) count(a Action, method string, err error) {
	if c.decisions == nil {
		return
	}
	result := "allowed"
	if err != nil {
		result = strings.ReplaceAll(wire.CodeOf(err).String(), " ", "_")
	}
	c.decisions.WithLabelValues(string(a), method, result).Inc()
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// ErrExpired is the cause carried by a session closed because its grant
// expired.
var ErrExpired = errors.New("token expired")

// ExpiredError is the error a session ends with when its grant expires.
func ExpiredError(r Request) error {
	return &wire.Error{Code: wire.CodeTokenExpired, Msg: string(r.Action) + " " + quote(r.Broadcast) + ": token expired; reconnect with a fresh token", Err: ErrExpired}
}

func quote(s string) string { return `"` + s + `"` }

// Ender is implemented by authorisers told when an allowed session ends
// (a webhook's on_done).
type Ender interface {
	Done(r Request)
}

// Done tells a (and, in a chain, each member) that the session r ends.
// It must not block: implementations do their work in the background.
func Done(a Authorizer, r Request) {
	if e, ok := a.(Ender); ok {
		e.Done(r)
	}
}

// Done tells every member that is an Ender.
func (c *Chain) Done(r Request) {
	for _, m := range append(append([]Authorizer(nil), c.Gates...), c.Credentials...) {
		Done(m, r)
	}
}
