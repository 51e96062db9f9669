package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"
)

const (
	testIssuer   = "https://idp.example.test"
	testAudience = "uapk-proxy"
)

// t0 is the fixed "now" of every test: tokens minted for it stay valid in
// the committed fuzz corpus for as long as the tests run at t0.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is the Verifier's Now; tests move it instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signer is a key the tests mint tokens with.
type signer struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func (s signer) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: s.priv.Public(), KeyID: s.kid, Algorithm: string(s.alg), Use: "sig"}
}

// The committed test keys were made with
//
//	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out testdata/keys/rsa-2048.key
//	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out testdata/keys/p256.key
//	openssl genpkey -algorithm ed25519 -out testdata/keys/ed25519.key
//
// They are committed rather than generated so that the fuzz corpus holds
// tokens that really verify, and because RSA generation is slow under -race.
func loadSigner(t testing.TB, file, kid string, alg jose.SignatureAlgorithm) signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "keys", file))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return signer{kid: kid, alg: alg, priv: k.(crypto.Signer)}
}

type testKeys struct{ rsa, ec, ed signer }

func loadKeys(t testing.TB) testKeys {
	return testKeys{
		rsa: loadSigner(t, "rsa-2048.key", "rsa-1", jose.RS256),
		ec:  loadSigner(t, "p256.key", "ec-1", jose.ES256),
		ed:  loadSigner(t, "ed25519.key", "ed-1", jose.EdDSA),
	}
}

func (k testKeys) all() []signer { return []signer{k.rsa, k.ec, k.ed} }

// rsaPublicPEM is the RSA public key as an IdP would publish it in PEM: the
// bytes an HMAC-confusion attacker uses as the HS256 secret.
func (k testKeys) rsaPublicPEM(t testing.TB) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.rsa.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func newECSigner(t testing.TB, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: jose.ES256, priv: k}
}

func newEdSigner(t testing.TB, kid string) signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: jose.EdDSA, priv: k}
}

func jwksOf(t testing.TB, keys ...signer) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk())
	}
	return mustJSON(t, set)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims are valid at t0; each edit changes or (with nil) removes one.
func claims(edits ...map[string]any) map[string]any {
	c := map[string]any{
		"iss":   testIssuer,
		"aud":   testAudience,
		"sub":   "user-42",
		"email": "alice@example.test",
		"jti":   "jti-1",
		"iat":   t0.Add(-10 * time.Second).Unix(),
		"exp":   t0.Add(5 * time.Minute).Unix(),
	}
	for _, e := range edits {
		for k, v := range e {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
	}
	return c
}

func mint(t testing.TB, s signer, c map[string]any) string {
	t.Helper()
	return mintWith(t, jose.SigningKey{Algorithm: s.alg, Key: jose.JSONWebKey{Key: s.priv, KeyID: s.kid}}, nil, c)
}

func mintWith(t testing.TB, key jose.SigningKey, opts *jose.SignerOptions, c map[string]any) string {
	t.Helper()
	if opts == nil {
		opts = &jose.SignerOptions{}
	}
	sig, err := jose.NewSigner(key, opts.WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRaw signs an arbitrary payload, for claims that are not an object.
func signRaw(t testing.TB, s signer, payload []byte) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: jose.JSONWebKey{Key: s.priv, KeyID: s.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// unsigned is an alg-none token: header and claims, empty signature.
func unsigned(t testing.TB, header, c map[string]any) string {
	return b64(mustJSON(t, header)) + "." + b64(mustJSON(t, c)) + "."
}

// tamper swaps a token's claims for others, keeping its header and signature.
func tamper(t testing.TB, token string, c map[string]any) string {
	return tamperRaw(token, mustJSON(t, c))
}

func tamperRaw(token string, payload []byte) string {
	parts := strings.Split(token, ".")
	return parts[0] + "." + b64(payload) + "." + parts[2]
}

// jwksServer serves a JWK Set over TLS on 127.0.0.1 and counts requests.
type jwksServer struct {
	*httptest.Server
	hits   atomic.Int64
	body   atomic.Pointer[[]byte]
	status atomic.Int32
	// hold, when set, makes the next request wait: it says it arrived on
	// arrived, then waits for hold to close.
	mu      sync.Mutex
	hold    chan struct{}
	arrived chan struct{}
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(body)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		hold, arrived := s.hold, s.arrived
		s.hold, s.arrived = nil, nil
		s.mu.Unlock()
		if hold != nil {
			close(arrived)
			<-hold
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.status.Load()))
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte) { s.body.Store(&body) }

// holdNext makes the next request wait; close the returned release channel
// to let it go on.
func (s *jwksServer) holdNext() (arrived <-chan struct{}, release chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.arrived = make(chan struct{}), make(chan struct{})
	return s.arrived, s.hold
}

// logBuffer collects a Verifier's log lines; safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type fixture struct {
	v   *Verifier
	srv *jwksServer
	clk *clock
	log *logBuffer
}

func serverConfig(srv *jwksServer, clk *clock, log *logBuffer) Config {
	return Config{
		JWKS:       srv.URL,
		Issuer:     testIssuer,
		Audience:   testAudience,
		HTTPClient: srv.Client(),
		Now:        clk.Now,
		Logger:     zerolog.New(log),
	}
}

// newFixture starts a JWKS server with keys and a Verifier on it.
func newFixture(t testing.TB, keys ...signer) fixture {
	t.Helper()
	f := fixture{srv: newJWKSServer(t, jwksOf(t, keys...)), clk: newClock(), log: &logBuffer{}}
	v, err := New(context.Background(), serverConfig(f.srv, f.clk, f.log))
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

// waitReload waits for the reload under way, if any.
func waitReload(v *Verifier) {
	v.mu.Lock()
	f := v.flight
	v.mu.Unlock()
	if f != nil {
		<-f.done
	}
}

// leaks reports whether err's text holds the token or a part of it. A part
// counts if it is 8 bytes or more and has an upper-case letter or '_': every
// real token part has (base64 of JSON starts "eyJ"), and the fixed words of
// an error have no such run, so a fuzzed part that merely spells a word of
// the message is not taken for a leak.
func leaks(err error, token string) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, p := range append(strings.Split(token, "."), token) {
		if len(p) >= 8 && strings.ContainsAny(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") && strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// sentinels are every error Verify may wrap.
var sentinels = []error{ErrMalformed, ErrTooLarge, ErrAlgorithm, ErrUnknownKey, ErrSignature,
	ErrExpired, ErrNotYetValid, ErrIssuer, ErrAudience, ErrClaim}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
