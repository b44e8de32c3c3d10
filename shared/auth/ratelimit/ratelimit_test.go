package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

func TestBucketPerIP(t *testing.T) {
	l := New(2, 3, 100)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	try := func(remote string) error {
		return l.Authorize(ctx, auth.Request{Action: auth.Play, Broadcast: "b", Remote: remote})
	}
	for i := range 3 {
		if err := try("192.0.2.1:1"); err != nil {
			t.Fatalf("burst request %d: %v", i, err)
		}
	}
	if err := try("192.0.2.1:2"); wire.CodeOf(err) != wire.CodeRateLimited {
		t.Fatalf("4th at once: %v, want rate limited", err)
	}
	if err := try("192.0.2.2:1"); err != nil {
		t.Fatalf("another IP: %v", err)
	}
	if err := try("[2001:db8::1]:1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		try("[2001:db8::2]:1") // same /64
	}
	if err := try("[2001:db8::3]:1"); wire.CodeOf(err) != wire.CodeRateLimited {
		t.Fatalf("IPv6 /64 not limited together: %v", err)
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if err := try("192.0.2.1:3"); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	if err := try("192.0.2.1:3"); err == nil {
		t.Fatal("second after one refill allowed")
	}
	if err := l.Authorize(ctx, auth.Request{Action: auth.Relay, Remote: "192.0.2.1:1"}); err != nil && l.Guards(auth.Relay) {
		t.Fatal("relay limited")
	}
}

func TestMapIsBounded(t *testing.T) {
	l := New(1, 1, 50)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for i := range 10000 {
		l.Authorize(context.Background(), auth.Request{Action: auth.Play, Remote: fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)})
		if n := l.Len(); n > 50 {
			t.Fatalf("%d addresses tracked, limit 50", n)
		}
	}
}
