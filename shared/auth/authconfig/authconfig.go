// Package authconfig declares the authentication flags every node shares
// and composes the auth.Chain they describe: static tokens, JWT, webhooks
// (credential checkers: one must allow) and CIDR rules and per-IP rate
// limits (gates: all must allow).
package authconfig

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/auth/cidr"
	"github.com/quiccast/quiccast/shared/auth/jwtauth"
	"github.com/quiccast/quiccast/shared/auth/ratelimit"
	"github.com/quiccast/quiccast/shared/auth/webhook"
	"github.com/quiccast/quiccast/shared/config"
)

// Config is the authentication settings beyond the static token lists.
type Config struct {
	JWTSecret    string
	JWTJWKS      string
	JWTAlgs      string
	JWTLeeway    time.Duration
	JWTIssuer    string
	JWTAudience  string
	JWTMaxSize   int
	JWKSRefresh  time.Duration
	OnPublish    string
	OnPlay       string
	OnDone       string
	HookTimeout  time.Duration
	HookCache    time.Duration
	HookFailOpen bool
	AllowPublish string
	DenyPublish  string
	AllowPlay    string
	DenyPlay     string
	ConnRate     float64
	ConnBurst    int
	ConnRateIPs  int
}

// Flags declares the settings on s.
func (c *Config) Flags(s *config.Set) {
	s.String(&c.JWTSecret, "jwt-secret", "", "HS256/384/512 secret (at least 32 bytes) that signs publish and play JWTs; prefer the env twin to the flag")
	s.String(&c.JWTJWKS, "jwt-jwks", "", "URL of a JWKS with the RS/PS/ES/EdDSA keys that sign publish and play JWTs (cached; fetched again hourly and when a token names an unknown kid, at most every 30s)")
	s.String(&c.JWTAlgs, "jwt-algs", "", "comma-separated JWT algorithms accepted; default HS256,HS384,HS512 with -jwt-secret and RS*,PS*,ES*,EdDSA with -jwt-jwks (never none)")
	s.Duration(&c.JWTLeeway, "jwt-leeway", 30*time.Second, "clock skew tolerated on a JWT's exp, nbf and iat")
	s.String(&c.JWTIssuer, "jwt-issuer", "", "when set, a JWT's iss must equal it")
	s.String(&c.JWTAudience, "jwt-audience", "", "when set, a JWT's aud must include it")
	s.Int(&c.JWTMaxSize, "jwt-max-size", 4096, "longest token read, bytes; longer ones are refused before parsing")
	s.Duration(&c.JWKSRefresh, "jwks-refresh", time.Hour, "how often -jwt-jwks is fetched again")
	s.String(&c.OnPublish, "on-publish", "", "nginx-rtmp style on_publish URL: POSTed form fields per publisher; 2xx allows, 3xx renames to Location, else refused")
	s.String(&c.OnPlay, "on-play", "", "nginx-rtmp style on_play URL, POSTed per viewer connection (and per LL-HLS request not in the cache)")
	s.String(&c.OnDone, "on-done", "", "nginx-rtmp style on_done URL, POSTed (call=done) when a publisher or viewer admitted by the chain leaves")
	s.Duration(&c.HookTimeout, "hook-timeout", 5*time.Second, "how long a webhook may take; then the request is refused (see -hook-fail-open)")
	s.Duration(&c.HookCache, "hook-cache", 10*time.Second, "how long a webhook's allow is reused for the same action, name, token and address; 0 disables")
	s.Bool(&c.HookFailOpen, "hook-fail-open", false, "allow when a webhook cannot be reached or times out (default: refuse)")
	s.String(&c.AllowPublish, "allow-publish", "", "comma-separated CIDRs publishers may connect from; empty: any")
	s.String(&c.DenyPublish, "deny-publish", "", "comma-separated CIDRs publishers may not connect from (checked first)")
	s.String(&c.AllowPlay, "allow-play", "", "comma-separated CIDRs viewers may connect from; empty: any")
	s.String(&c.DenyPlay, "deny-play", "", "comma-separated CIDRs viewers may not connect from (checked first)")
	s.Float64(&c.ConnRate, "conn-rate", 0, "publish and play authorisations per second per client IP (IPv6: per /64), LL-HLS requests included; 0: no limit")
	s.Int(&c.ConnBurst, "conn-burst", 20, "burst of -conn-rate")
	s.Int(&c.ConnRateIPs, "conn-rate-ips", 65536, "client addresses -conn-rate tracks at most")
}

// Build composes the chain: tokens first among the credential checkers,
// then JWT, then the webhook. With nothing but tokens it returns them as
// they are. ctx bounds the JWKS refresh.
func (c Config) Build(ctx context.Context, tokens auth.Authorizer, log *slog.Logger) (auth.Authorizer, error) {
	var gates, creds []auth.Authorizer
	if tokens != nil {
		if _, open := tokens.(auth.AllowAll); !open {
			creds = append(creds, tokens)
		}
	}
	if c.JWTSecret != "" || c.JWTJWKS != "" {
		var algs []string
		for _, a := range strings.Split(c.JWTAlgs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				algs = append(algs, a)
			}
		}
		v, err := jwtauth.New(ctx, jwtauth.Config{Secret: []byte(c.JWTSecret), JWKSURL: c.JWTJWKS, Algorithms: algs, Leeway: c.JWTLeeway,
			MaxSize: c.JWTMaxSize, Issuer: c.JWTIssuer, Audience: c.JWTAudience, RefreshInterval: c.JWKSRefresh, Logger: log})
		if err != nil {
			return nil, err
		}
		creds = append(creds, v)
	}
	if c.OnPublish != "" || c.OnPlay != "" || c.OnDone != "" {
		ttl := c.HookCache
		if ttl <= 0 {
			ttl = -1
		}
		h, err := webhook.New(webhook.Config{OnPublish: c.OnPublish, OnPlay: c.OnPlay, OnDone: c.OnDone, Timeout: c.HookTimeout,
			CacheTTL: ttl, FailOpen: c.HookFailOpen, Logger: log})
		if err != nil {
			return nil, err
		}
		creds = append(creds, h)
	}
	rules, err := cidr.Parse(map[auth.Action]string{auth.Publish: c.AllowPublish, auth.Play: c.AllowPlay},
		map[auth.Action]string{auth.Publish: c.DenyPublish, auth.Play: c.DenyPlay})
	if err != nil {
		return nil, fmt.Errorf("-allow-/-deny-: %w", err)
	}
	if !rules.Empty() {
		gates = append(gates, rules)
	}
	if c.ConnRate > 0 {
		gates = append(gates, ratelimit.New(c.ConnRate, c.ConnBurst, c.ConnRateIPs))
	}
	if len(gates) == 0 && c.JWTSecret == "" && c.JWTJWKS == "" && c.OnPublish == "" && c.OnPlay == "" && c.OnDone == "" {
		if tokens == nil {
			return auth.AllowAll{}, nil
		}
		return tokens, nil // as before this package: no chain
	}
	return auth.NewChain(gates, creds), nil
}
