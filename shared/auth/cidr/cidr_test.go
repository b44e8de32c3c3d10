package cidr

import (
	"context"
	"testing"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

func TestRules(t *testing.T) {
	r, err := Parse(map[auth.Action]string{auth.Publish: "10.0.0.0/8, 2001:db8::/32", auth.Play: ""},
		map[auth.Action]string{auth.Publish: "10.9.0.0/16", auth.Play: "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		a      auth.Action
		remote string
		ok     bool
	}{
		{auth.Publish, "10.1.2.3:5000", true},
		{auth.Publish, "[::ffff:10.1.2.3]:5000", true}, // IPv4-mapped
		{auth.Publish, "10.9.1.1:5000", false},         // denied inside the allowed /8
		{auth.Publish, "192.168.1.1:5000", false},      // outside the allow list
		{auth.Publish, "[2001:db8::1%eth0]:5000", true},
		{auth.Publish, "[2001:db9::1]:5000", false},
		{auth.Publish, "not an address", false},
		{auth.Play, "192.0.2.7:1", false},
		{auth.Play, "192.0.2.8:1", true}, // no allow list for play
		{auth.Relay, "192.0.2.7:1", true},
	} {
		err := r.Authorize(ctx, auth.Request{Action: c.a, Broadcast: "b", Remote: c.remote})
		if (err == nil) != c.ok || (err != nil && wire.CodeOf(err) != wire.CodeForbidden) {
			t.Errorf("%s from %s: %v, want ok=%v", c.a, c.remote, err, c.ok)
		}
	}
	if !r.Guards(auth.Publish) || !r.Guards(auth.Play) || r.Guards(auth.Relay) {
		t.Error("Guards")
	}
	if _, err := Parse(map[auth.Action]string{auth.Play: "10.0.0.0/33"}, nil); err == nil {
		t.Error("bad CIDR accepted")
	}
}
