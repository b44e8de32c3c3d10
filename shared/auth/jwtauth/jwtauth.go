// Package jwtauth authorises publish and play requests with JSON Web Tokens:
// HS256/384/512 with a shared secret, and RS/PS/ES/EdDSA with keys from a
// JWKS URL (cached, refreshed, and re-fetched, rate-limited, when a token
// names a kid the cache does not hold). The claim format is in claims.go.
package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

// HMAC and public-key algorithms accepted by default. "none" is never.
var (
	HMACAlgs   = []string{"HS256", "HS384", "HS512"}
	PublicAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// Config configures a Verifier. Secret, JWKSURL or both must be set.
type Config struct {
	// Secret verifies HS256/384/512 tokens.
	Secret []byte
	// JWKSURL is fetched for RS/PS/ES/EdDSA keys.
	JWKSURL string
	// Algorithms is the allow-list; default HMACAlgs when Secret is set
	// plus PublicAlgs when JWKSURL is. HS algorithms verify only with
	// Secret, the others only with JWKS keys (never an "oct" JWKS key).
	Algorithms []string
	// Leeway tolerates clock skew on exp, nbf and iat (default 30s).
	Leeway time.Duration
	// MaxSize bounds a token before it is parsed (default 4096 bytes).
	MaxSize int
	// Issuer and Audience, when set, must match iss and aud.
	Issuer, Audience string
	// RefreshInterval is how often the JWKS is re-fetched (default 1h).
	RefreshInterval time.Duration
	// RefreshUnknownKID is the least time between two fetches caused by
	// tokens naming an unknown kid (default 30s).
	RefreshUnknownKID time.Duration
	// HTTPClient fetches the JWKS; default one with a 10s timeout.
	HTTPClient *http.Client
	// Actions it guards (default publish and play; relay keeps the
	// cluster token).
	Actions []auth.Action
	Logger  *slog.Logger
}

// Verifier is an auth.Authorizer (and auth.Decider) for JWTs.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
	jwks   keyfunc.Keyfunc
}

var (
	errNoSecret  = errors.New("HS tokens are not accepted here (no -jwt-secret)")
	errNoJWKS    = errors.New("public-key tokens are not accepted here (no -jwt-jwks)")
	errOctInJWKS = errors.New("the JWKS key is a shared secret, which is not accepted from a JWKS")
)

// New returns a Verifier; with a JWKS URL, its refresh runs until ctx ends.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("jwt: neither a secret nor a JWKS URL")
	}
	if len(cfg.Secret) > 0 && len(cfg.Secret) < 32 {
		return nil, fmt.Errorf("jwt: the HS secret has %d bytes; use at least 32 (openssl rand -hex 32)", len(cfg.Secret))
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 4096
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Hour
	}
	if cfg.RefreshUnknownKID <= 0 {
		cfg.RefreshUnknownKID = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if len(cfg.Actions) == 0 {
		cfg.Actions = []auth.Action{auth.Publish, auth.Play}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Algorithms) == 0 {
		if len(cfg.Secret) > 0 {
			cfg.Algorithms = append(cfg.Algorithms, HMACAlgs...)
		}
		if cfg.JWKSURL != "" {
			cfg.Algorithms = append(cfg.Algorithms, PublicAlgs...)
		}
	}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(HMACAlgs, a) && !slices.Contains(PublicAlgs, a) {
			return nil, fmt.Errorf("jwt: algorithm %q is not supported (use %s)", a, strings.Join(append(slices.Clone(HMACAlgs), PublicAlgs...), ", "))
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v := &Verifier{cfg: cfg, parser: jwt.NewParser(opts...)}
	if cfg.JWKSURL != "" {
		noErr := true
		log := cfg.Logger
		k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
			Client:                    cfg.HTTPClient,
			HTTPTimeout:               cfg.HTTPClient.Timeout,
			NoErrorReturnFirstHTTPReq: &noErr, // start while the JWKS server is down; tokens fail until it answers
			RefreshInterval:           cfg.RefreshInterval,
			RefreshUnknownKID:         rate.NewLimiter(rate.Every(cfg.RefreshUnknownKID), 1),
			// keyfunc (jwkset v0.11.4) bounds the wait for the rate
			// limit and the refresh's HTTP request with this one
			// deadline: it must allow the fetch (a millisecond made
			// every refresh of a JWKS not on this host fail). Over the
			// limit a token is still refused at once: rate.Limiter.Wait
			// returns at once when its reservation lies beyond the
			// deadline, so at most one token per RefreshUnknownKID
			// waits for the next refresh, and never longer than this.
			RateLimitWaitMax: cfg.HTTPClient.Timeout,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(_ context.Context, err error) {
					log.Warn("JWKS refresh failed; keeping the keys already fetched", "url", auth.Redact(u), "err", err)
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("jwt: JWKS %s: %w", auth.Redact(cfg.JWKSURL), err)
		}
		v.jwks = k
		// The first fetch runs in the background: wait for it (bounded),
		// so the first tokens do not spend the unknown-kid refresh.
		deadline := time.Now().Add(cfg.HTTPClient.Timeout)
		for {
			keys, err := k.Storage().KeyReadAll(ctx)
			if err == nil && len(keys) > 0 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				cfg.Logger.Warn("JWKS not fetched yet; tokens signed with its keys are refused until it is", "url", auth.Redact(cfg.JWKSURL))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return v, nil
}

// Method is "jwt".
func (*Verifier) Method() string { return "jwt" }

// Guards is true for the configured actions.
func (v *Verifier) Guards(a auth.Action) bool { return slices.Contains(v.cfg.Actions, a) }

// Authorize is Decide without the grant.
func (v *Verifier) Authorize(ctx context.Context, r auth.Request) error {
	_, err := v.Decide(ctx, r)
	return err
}

// Decide verifies r.Token and checks that its claims allow r.Action on
// r.Broadcast. The grant expires with the token (exp plus the leeway).
func (v *Verifier) Decide(ctx context.Context, r auth.Request) (auth.Grant, error) {
	if r.Token == "" {
		return auth.Grant{}, wire.Errorf(wire.CodeUnauthorized, "%s %q needs a token (?token= or Authorization: Bearer)", r.Action, r.Broadcast)
	}
	if len(r.Token) > v.cfg.MaxSize {
		return auth.Grant{}, wire.Errorf(wire.CodeUnauthorized, "%s %q: token over %d bytes", r.Action, r.Broadcast, v.cfg.MaxSize)
	}
	if strings.Count(r.Token, ".") != 2 {
		return auth.Grant{}, wire.Errorf(wire.CodeUnauthorized, "%s %q: token not accepted (not a JWT)", r.Action, r.Broadcast)
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(r.Token, &c, v.keyfunc(ctx))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return auth.Grant{}, &wire.Error{Code: wire.CodeTokenExpired, Msg: fmt.Sprintf("%s %q: token expired; get a fresh one", r.Action, r.Broadcast), Err: auth.ErrExpired}
	case err != nil:
		return auth.Grant{}, wire.Errorf(wire.CodeUnauthorized, "%s %q: token not accepted: %s", r.Action, r.Broadcast, reason(err))
	}
	if !c.Allows(r.Action, r.Broadcast) {
		return auth.Grant{}, wire.Errorf(wire.CodeForbidden, "%s %q: the token does not allow this", r.Action, r.Broadcast)
	}
	// The token is accepted until exp plus the leeway, so the session
	// lasts as long.
	return auth.Grant{Expires: c.ExpiresAt.Time.Add(v.cfg.Leeway)}, nil
}

// reason is a short, safe description of a parse error (never the token).
func reason(err error) string {
	for _, e := range []error{jwt.ErrTokenNotValidYet, jwt.ErrTokenSignatureInvalid, jwt.ErrTokenUnverifiable,
		jwt.ErrTokenMalformed, jwt.ErrTokenRequiredClaimMissing, jwt.ErrTokenInvalidIssuer, jwt.ErrTokenInvalidAudience,
		jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenInvalidClaims} {
		if errors.Is(err, e) {
			msg := e.Error()
			switch {
			case errors.Is(err, errNoSecret):
				msg += ": " + errNoSecret.Error()
			case errors.Is(err, errNoJWKS):
				msg += ": " + errNoJWKS.Error()
			case errors.Is(err, errOctInJWKS):
				msg += ": " + errOctInJWKS.Error()
			case errors.Is(err, keyfunc.ErrKeyfunc):
				msg += ": unknown key (kid)"
			case strings.Contains(err.Error(), "signing method"):
				msg += ": algorithm not allowed"
			}
			return msg
		}
	}
	return "invalid token"
}

// keyfunc gives HS tokens the secret and the others a JWKS key, so a
// token cannot pick its verification key type (alg confusion).
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if _, hs := t.Method.(*jwt.SigningMethodHMAC); hs {
			if len(v.cfg.Secret) == 0 {
				return nil, errNoSecret
			}
			return v.cfg.Secret, nil
		}
		if v.jwks == nil {
			return nil, errNoJWKS
		}
		k, err := v.jwks.KeyfuncCtx(ctx)(t)
		if err != nil {
			return nil, err
		}
		switch k := k.(type) {
		case []byte:
			return nil, errOctInJWKS
		case jwt.VerificationKeySet:
			keys := k.Keys[:0:0]
			for _, key := range k.Keys {
				if _, oct := key.([]byte); !oct {
					keys = append(keys, key)
				}
			}
			return jwt.VerificationKeySet{Keys: keys}, nil
		}
		return k, nil
	}
}
