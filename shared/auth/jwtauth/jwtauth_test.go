package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/wire"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func claims(exp time.Duration, perms ...Permission) Claims {
	return Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(exp))}, Permissions: perms}
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hsVerifier(t testing.TB) *Verifier {
	t.Helper()
	v, err := New(context.Background(), Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func expectCode(t *testing.T, what string, err error, want wire.Code) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: %v, want allowed", what, err)
		}
		return
	}
	if err == nil || wire.CodeOf(err) != want {
		t.Errorf("%s: %v, want %s", what, err, want)
	}
}

func TestHMACScopes(t *testing.T) {
	v := hsVerifier(t)
	ctx := context.Background()
	playA := sign(t, jwt.SigningMethodHS256, secret, "", claims(time.Hour, Permission{"play", "live/a"}))
	pubPrefix := sign(t, jwt.SigningMethodHS384, secret, "", claims(time.Hour, Permission{"publish", "studio/*"}))
	all := sign(t, jwt.SigningMethodHS512, secret, "", claims(time.Hour, Permission{"play", ""}))
	mtx := sign(t, jwt.SigningMethodHS256, secret, "", Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		MediaMTX: []Permission{{"read", "cam"}, {"publish", "~^cam"}}})
	for _, c := range []struct {
		what string
		r    auth.Request
		want wire.Code
	}{
		{"play A with a play-A token", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: playA}, 0},
		{"play B with a play-A token", auth.Request{Action: auth.Play, Broadcast: "live/b", Token: playA}, wire.CodeForbidden},
		{"play live/ab with a play-A token", auth.Request{Action: auth.Play, Broadcast: "live/ab", Token: playA}, wire.CodeForbidden},
		{"publish A with a play-A token", auth.Request{Action: auth.Publish, Broadcast: "live/a", Token: playA}, wire.CodeForbidden},
		{"publish B with a play-A token", auth.Request{Action: auth.Publish, Broadcast: "live/b", Token: playA}, wire.CodeForbidden},
		{"relay with a play-A token", auth.Request{Action: auth.Relay, Broadcast: "live/a", Token: playA}, wire.CodeForbidden},
		{"publish in the prefix", auth.Request{Action: auth.Publish, Broadcast: "studio/x", Token: pubPrefix}, 0},
		{"publish outside the prefix", auth.Request{Action: auth.Publish, Broadcast: "studiox", Token: pubPrefix}, wire.CodeForbidden},
		{"play with a publish token", auth.Request{Action: auth.Play, Broadcast: "studio/x", Token: pubPrefix}, wire.CodeForbidden},
		{"play anything", auth.Request{Action: auth.Play, Broadcast: "any/thing", Token: all}, 0},
		{"mediamtx read is play", auth.Request{Action: auth.Play, Broadcast: "cam", Token: mtx}, 0},
		{"mediamtx regexp paths match nothing", auth.Request{Action: auth.Publish, Broadcast: "cam", Token: mtx}, wire.CodeForbidden},
		{"no token", auth.Request{Action: auth.Play, Broadcast: "live/a"}, wire.CodeUnauthorized},
		{"not a JWT", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: "static-token"}, wire.CodeUnauthorized},
		{"garbage JWT", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: "a.b.c"}, wire.CodeUnauthorized},
		{"wrong secret", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), "", claims(time.Hour, Permission{"play", "live/a"}))}, wire.CodeUnauthorized},
		{"expired", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, secret, "", claims(-time.Hour, Permission{"play", "live/a"}))}, wire.CodeTokenExpired},
		{"expired within the leeway", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, secret, "", claims(-10*time.Second, Permission{"play", "live/a"}))}, 0},
		{"no exp", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, secret, "", Claims{Permissions: []Permission{{"play", "live/a"}}})}, wire.CodeUnauthorized},
		{"not valid yet", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, secret, "", Claims{RegisteredClaims: jwt.RegisteredClaims{
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(2 * time.Hour)), NotBefore: jwt.NewNumericDate(time.Now().Add(time.Hour))}, Permissions: []Permission{{"play", "live/a"}}})}, wire.CodeUnauthorized},
		{"alg none", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims(time.Hour, Permission{"play", "live/a"}))}, wire.CodeUnauthorized},
		{"oversized", auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(t, jwt.SigningMethodHS256, secret, "", Claims{RegisteredClaims: jwt.RegisteredClaims{
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), Subject: strings.Repeat("s", 5000)}, Permissions: []Permission{{"play", "live/a"}}})}, wire.CodeUnauthorized},
	} {
		g, err := v.Decide(ctx, c.r)
		expectCode(t, c.what, err, c.want)
		if err != nil && strings.Contains(err.Error(), c.r.Token) && c.r.Token != "" {
			t.Errorf("%s: the token is echoed in %q", c.what, err)
		}
		if err == nil && time.Until(g.Expires) < 30*time.Minute && c.what != "expired within the leeway" {
			t.Errorf("%s: grant expires %v, want the token's exp", c.what, g.Expires)
		}
	}
}

// jwksServer serves a JWKS that the test can swap, counting fetches.
type jwksServer struct {
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
	delay   atomic.Int64 // each answer waits this long (ns)
	*httptest.Server
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		time.Sleep(time.Duration(s.delay.Load()))
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(t *testing.T, keys map[string]any) {
	t.Helper()
	st := jwkset.NewMemoryStorage()
	for kid, k := range keys {
		j, err := jwkset.NewJWKFromKey(k, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}, Marshal: jwkset.JWKMarshalOptions{Private: true}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.KeyWrite(context.Background(), j); err != nil {
			t.Fatal(err)
		}
	}
	b, err := st.JSONPrivate(context.Background()) // keeps an "oct" key; the others are public keys
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

func keys(t testing.TB) (*rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return rk, ek, dk
}

func TestJWKSAlgorithmsAndConfusion(t *testing.T) {
	rk, ek, dk := keys(t)
	srv := newJWKSServer(t)
	srv.set(t, map[string]any{"rsa": rk.Public(), "ec": ek.Public(), "ed": dk.Public(), "oct": secret})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := New(ctx, Config{JWKSURL: srv.URL, RefreshUnknownKID: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := claims(time.Hour, Permission{"play", "live/a"})
	r := auth.Request{Action: auth.Play, Broadcast: "live/a"}
	pubDER, _ := x509.MarshalPKIXPublicKey(rk.Public())
	for _, ca := range []struct {
		what  string
		token string
		want  wire.Code
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, rk, "rsa", c), 0},
		{"PS256", sign(t, jwt.SigningMethodPS256, rk, "rsa", c), 0},
		{"ES256", sign(t, jwt.SigningMethodES256, ek, "ec", c), 0},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, dk, "ed", c), 0},
		{"RS256 without a kid (every key tried)", sign(t, jwt.SigningMethodRS256, rk, "", c), 0},
		{"ES256 under the RSA kid", sign(t, jwt.SigningMethodES256, ek, "rsa", c), wire.CodeUnauthorized},
		{"HS256 with the JWKS oct key", sign(t, jwt.SigningMethodHS256, secret, "oct", c), wire.CodeUnauthorized},
		{"HS256 with the RSA public key as the secret", sign(t, jwt.SigningMethodHS256, pubDER, "rsa", c), wire.CodeUnauthorized},
		{"RS256 signed by another key", sign(t, jwt.SigningMethodRS256, mustRSA(t), "rsa", c), wire.CodeUnauthorized},
	} {
		r.Token = ca.token
		_, err := v.Decide(ctx, r)
		expectCode(t, ca.what, err, ca.want)
	}
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestJWKSKidRotationIsRateLimited(t *testing.T) {
	_, ek, _ := keys(t)
	srv := newJWKSServer(t)
	srv.set(t, map[string]any{"k1": ek.Public()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := New(ctx, Config{JWKSURL: srv.URL, RefreshUnknownKID: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := claims(time.Hour, Permission{"play", ""})
	r := auth.Request{Action: auth.Play, Broadcast: "x", Token: sign(t, jwt.SigningMethodES256, ek, "k1", c)}
	if _, err := v.Decide(ctx, r); err != nil {
		t.Fatal(err)
	}
	before := srv.fetches.Load()
	// The issuer rotates to k2: the first token naming k2 fetches the set again.
	ek2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv.set(t, map[string]any{"k1": ek.Public(), "k2": ek2.Public()})
	// A JWKS server across the Internet takes tens of milliseconds to
	// answer: the refresh must not be bounded by how long a token may
	// wait for the rate limit (keyfunc uses one deadline for both).
	srv.delay.Store(int64(50 * time.Millisecond))
	r.Token = sign(t, jwt.SigningMethodES256, ek2, "k2", c)
	if _, err := v.Decide(ctx, r); err != nil {
		t.Fatalf("a token with the new kid: %v", err)
	}
	if got := srv.fetches.Load(); got != before+1 {
		t.Fatalf("%d fetches for the new kid, want 1", got-before)
	}
	// Unknown kids beyond the rate limit are refused without a fetch.
	for i := range 20 {
		r.Token = sign(t, jwt.SigningMethodES256, ek2, "bogus"+string(rune('a'+i)), c)
		if _, err := v.Decide(ctx, r); wire.CodeOf(err) != wire.CodeUnauthorized {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if got := srv.fetches.Load(); got > before+2 {
		t.Fatalf("%d fetches for 20 unknown kids in the limit window, want at most 1", got-before-1)
	}
}

func TestHSRefusedWithOnlyJWKS(t *testing.T) {
	_, ek, _ := keys(t)
	srv := newJWKSServer(t)
	srv.set(t, map[string]any{"k1": ek.Public()})
	v, err := New(context.Background(), Config{JWKSURL: srv.URL, Algorithms: []string{"HS256", "ES256"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Decide(context.Background(), auth.Request{Action: auth.Play, Token: sign(t, jwt.SigningMethodHS256, secret, "k1", claims(time.Hour, Permission{"play", ""}))})
	expectCode(t, "HS token without a secret", err, wire.CodeUnauthorized)
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{}, {Secret: []byte("short")}, {Secret: secret, Algorithms: []string{"none"}}} {
		if _, err := New(context.Background(), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func FuzzClaimsAllows(f *testing.F) {
	f.Add([]byte(`{"exp":1,"quiccast_permissions":[{"action":"play","path":"live/*"}]}`), "play", "live/a")
	f.Add([]byte(`{"mediamtx_permissions":[{"action":"read","path":""}]}`), "play", "x")
	f.Fuzz(func(t *testing.T, raw []byte, action, name string) {
		var c Claims
		if json.Unmarshal(raw, &c) != nil {
			return
		}
		if c.Allows(auth.Action(action), name) {
			ok := false
			for _, p := range append(c.Permissions, c.MediaMTX...) {
				if p.Action == action || (action == "play" && p.Action == "read") {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("%s allowed %s without a permission naming it", raw, action)
			}
		}
	})
}

func benchVerify(b *testing.B, m jwt.SigningMethod, key any, pub crypto.PublicKey) {
	ctx := context.Background()
	var v *Verifier
	if pub == nil {
		v = hsVerifier(b)
	} else {
		st := jwkset.NewMemoryStorage()
		j, _ := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k"}})
		st.KeyWrite(ctx, j)
		body, _ := st.JSONPublic(ctx)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }))
		defer srv.Close()
		var err error
		if v, err = New(ctx, Config{JWKSURL: srv.URL}); err != nil {
			b.Fatal(err)
		}
	}
	r := auth.Request{Action: auth.Play, Broadcast: "live/a", Token: sign(b, m, key, "k", claims(time.Hour, Permission{"play", "live/a"}))}
	if _, err := v.Decide(ctx, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Decide(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the cost of one connection's JWT check, by algorithm,
// beside a static token's (the control), in one run:
// go test -run '^$' -bench Verify -benchtime 2s ./shared/auth/jwtauth/
func BenchmarkVerify(b *testing.B) {
	rk, ek, dk := keys(b)
	b.Run("static-token-control", func(b *testing.B) { // what -play-tokens costs: the control
		a := auth.Tokens{auth.Play: {"a-static-play-token-of-some-length"}}
		r := auth.Request{Action: auth.Play, Broadcast: "live/a", Token: "a-static-play-token-of-some-length"}
		b.ReportAllocs()
		for b.Loop() {
			if err := a.Authorize(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("HS256", func(b *testing.B) { benchVerify(b, jwt.SigningMethodHS256, secret, nil) })
	b.Run("RS256", func(b *testing.B) { benchVerify(b, jwt.SigningMethodRS256, rk, rk.Public()) })
	b.Run("ES256", func(b *testing.B) { benchVerify(b, jwt.SigningMethodES256, ek, ek.Public()) })
	b.Run("EdDSA", func(b *testing.B) { benchVerify(b, jwt.SigningMethodEdDSA, dk, dk.Public()) })
}
