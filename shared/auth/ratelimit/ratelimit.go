// Package ratelimit bounds how often one client address may be authorised
// (connect to publish or play, or fetch LL-HLS): a token bucket per IP, in
// a map of bounded size.
package ratelimit

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/auth/cidr"
	"github.com/quiccast/quiccast/shared/wire"
)

// Limiter is an auth.Authorizer (a gate) limiting requests per IP.
type Limiter struct {
	rate    float64 // tokens per second
	burst   float64
	max     int
	actions []auth.Action
	now     func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New allows each IP burst requests at once and perSecond after, for the
// actions given (publish and play when none). At most maxIPs addresses are
// tracked; when full, full buckets (idle addresses) are dropped, then any.
// IPv6 addresses are limited per /64.
func New(perSecond float64, burst, maxIPs int, actions ...auth.Action) *Limiter {
	if burst < 1 {
		burst = 1
	}
	if maxIPs <= 0 {
		maxIPs = 65536
	}
	if len(actions) == 0 {
		actions = []auth.Action{auth.Publish, auth.Play}
	}
	return &Limiter{rate: perSecond, burst: float64(burst), max: maxIPs, actions: actions, now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// Method is "ratelimit".
func (*Limiter) Method() string { return "ratelimit" }

// Guards is true for the limited actions.
func (l *Limiter) Guards(a auth.Action) bool {
	for _, x := range l.actions {
		if x == a {
			return true
		}
	}
	return false
}

// Len is the number of addresses tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Authorize takes a token from r's address bucket, or refuses with
// CodeRateLimited.
func (l *Limiter) Authorize(_ context.Context, r auth.Request) error {
	ip, ok := cidr.Addr(r.Remote)
	if !ok {
		return nil // not an IP (a unix socket, a test): nothing to key on
	}
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[ip] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return wire.Errorf(wire.CodeRateLimited, "%s %q: too many connections from %s; retry in a few seconds", r.Action, r.Broadcast, ip)
	}
	b.tokens--
	return nil
}

// evict drops buckets that have refilled (their address is idle); if none
// has, it drops one at random (map order) so the map stays bounded.
func (l *Limiter) evict(now time.Time) {
	for ip, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, ip)
		}
	}
	for ip := range l.buckets {
		if len(l.buckets) < l.max {
			return
		}
		delete(l.buckets, ip)
	}
}
