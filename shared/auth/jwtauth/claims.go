package jwtauth

import (
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/quiccast/quiccast/shared/auth"
)

// Claims are a quiccast token's claims: the registered ones (exp is
// required; nbf, iat, iss, aud are checked when present) and a list of
// permissions, in MediaMTX's shape so one token issuer can serve both:
//
//	{"exp": 1767225600,
//	 "quiccast_permissions": [
//	   {"action": "publish", "path": "live/cam1"},
//	   {"action": "play",    "path": "live/*"}]}
//
// "mediamtx_permissions" is read too (its "read" action is play). A path is
// a broadcast name, a prefix ending in "*", or empty for every broadcast.
// MediaMTX's regular-expression paths ("~…") match nothing here.
type Claims struct {
	jwt.RegisteredClaims
	Permissions []Permission `json:"quiccast_permissions,omitempty"`
	MediaMTX    []Permission `json:"mediamtx_permissions,omitempty"`
}

// Permission allows one action on the broadcasts Path names.
type Permission struct {
	Action string `json:"action"`
	Path   string `json:"path"`
}

// maxPermissions bounds the permissions looked at per token.
const maxPermissions = 256

// Allows reports whether the claims permit action on broadcast.
func (c *Claims) Allows(action auth.Action, broadcast string) bool {
	n := 0
	for _, list := range [][]Permission{c.Permissions, c.MediaMTX} {
		for _, p := range list {
			if n++; n > maxPermissions {
				return false
			}
			if p.allows(action, broadcast) {
				return true
			}
		}
	}
	return false
}

func (p Permission) allows(action auth.Action, broadcast string) bool {
	switch {
	case p.Action == string(action):
	case action == auth.Play && p.Action == "read":
	default:
		return false
	}
	path := strings.TrimPrefix(p.Path, "/")
	switch {
	case path == "":
		return true
	case strings.HasPrefix(path, "~"):
		return false
	case strings.HasSuffix(path, "*"):
		return strings.HasPrefix(broadcast, path[:len(path)-1])
	}
	return path == broadcast
}
