// Package cidr allows or denies publish and play requests by the client's
// address: per action, a deny list (checked first) and an allow list (when
// set, only its networks may).
package cidr

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

// Rules is an auth.Authorizer on the remote address.
type Rules struct {
	allow, deny map[auth.Action][]netip.Prefix
}

// Parse reads comma-separated CIDR lists (a bare address is its /32 or
// /128) per action.
func Parse(allow, deny map[auth.Action]string) (*Rules, error) {
	r := &Rules{allow: map[auth.Action][]netip.Prefix{}, deny: map[auth.Action][]netip.Prefix{}}
	for _, side := range []struct {
		in  map[auth.Action]string
		out map[auth.Action][]netip.Prefix
	}{{allow, r.allow}, {deny, r.deny}} {
		for a, list := range side.in {
			for _, s := range strings.Split(list, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				p, err := netip.ParsePrefix(s)
				if err != nil {
					addr, aerr := netip.ParseAddr(s)
					if aerr != nil {
						return nil, fmt.Errorf("%s list: %q is not a CIDR (10.0.0.0/8, 2001:db8::/32) or an address", a, s)
					}
					p = netip.PrefixFrom(addr, addr.BitLen())
				}
				side.out[a] = append(side.out[a], p.Masked())
			}
		}
	}
	return r, nil
}

// Empty is true when no rule is set.
func (r *Rules) Empty() bool { return len(r.allow) == 0 && len(r.deny) == 0 }

// Method is "cidr".
func (*Rules) Method() string { return "cidr" }

// Guards is true for actions with a rule.
func (r *Rules) Guards(a auth.Action) bool { return len(r.allow[a])+len(r.deny[a]) > 0 }

// Authorize refuses a denied address, or one outside a set allow list.
func (r *Rules) Authorize(_ context.Context, q auth.Request) error {
	if !r.Guards(q.Action) {
		return nil
	}
	ip, ok := Addr(q.Remote)
	if !ok {
		return wire.Errorf(wire.CodeForbidden, "%s %q: the client address is unknown", q.Action, q.Broadcast)
	}
	for _, p := range r.deny[q.Action] {
		if p.Contains(ip) {
			return wire.Errorf(wire.CodeForbidden, "%s %q: not allowed from %s", q.Action, q.Broadcast, ip)
		}
	}
	if len(r.allow[q.Action]) == 0 {
		return nil
	}
	for _, p := range r.allow[q.Action] {
		if p.Contains(ip) {
			return nil
		}
	}
	return wire.Errorf(wire.CodeForbidden, "%s %q: not allowed from %s", q.Action, q.Broadcast, ip)
}

// Addr is the IP of a Request.Remote ("host:port" or a bare address),
// IPv4-mapped IPv6 unmapped, zone dropped.
func Addr(remote string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	a, err := netip.ParseAddr(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
