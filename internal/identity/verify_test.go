package identity

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestVerifyValid(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.all()...)
	for _, s := range k.all() {
		t.Run(string(s.alg), func(t *testing.T) {
			c, err := f.v.Verify(context.Background(), mint(t, s, claims()))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Caller{
				ID:      "alice@example.test",
				Subject: "user-42",
				JTI:     "jti-1",
				Issuer:  testIssuer,
				KeyID:   s.kid,
				Alg:     string(s.alg),
				Expiry:  t0.Add(5 * time.Minute),
			}
			if !c.Expiry.Equal(want.Expiry) {
				t.Errorf("Expiry = %v, want %v", c.Expiry, want.Expiry)
			}
			c.Expiry = want.Expiry
			if c != want {
				t.Errorf("Caller = %+v\nwant     %+v", c, want)
			}
		})
	}
}

func TestVerifyClaimOption(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.ed)
	cfg := serverConfig(f.srv, f.clk, f.log)
	cfg.Claim = "preferred_username"
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), mint(t, k.ed, claims(map[string]any{"preferred_username": "alice", "jti": nil})))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "alice" || c.JTI != "" {
		t.Errorf("Caller = %+v, want ID alice and no JTI", c)
	}
	if _, err := v.Verify(context.Background(), mint(t, k.ed, claims())); !errors.Is(err, ErrClaim) {
		t.Errorf("token without preferred_username: %v, want ErrClaim", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.all()...)
	other := newECSigner(t, k.ec.kid) // same kid as a key of the set, other key
	valid := mint(t, k.rsa, claims())
	at := func(d time.Duration) int64 { return t0.Add(d).Unix() }
	// pad makes a token of about n bytes.
	pad := func(n int) string {
		return mint(t, k.ed, claims(map[string]any{"pad": strings.Repeat("x", n*3/4-300)}))
	}

	if n := len(pad(MaxTokenBytes + 100)); n <= MaxTokenBytes {
		t.Fatalf("oversized token is %d bytes", n)
	}
	if n := len(pad(MaxTokenBytes - 400)); n > MaxTokenBytes || n < MaxTokenBytes-1000 {
		t.Fatalf("large token is %d bytes", n)
	}

	tests := []struct {
		name  string
		token string
		want  error // nil: the token passes
	}{
		{"expired beyond leeway", mint(t, k.rsa, claims(map[string]any{"exp": at(-61 * time.Second)})), ErrExpired},
		{"expired within leeway", mint(t, k.rsa, claims(map[string]any{"exp": at(-59 * time.Second)})), nil},
		{"no exp", mint(t, k.rsa, claims(map[string]any{"exp": nil})), ErrExpired},
		{"nbf beyond leeway", mint(t, k.ec, claims(map[string]any{"nbf": at(61 * time.Second)})), ErrNotYetValid},
		{"nbf within leeway", mint(t, k.ec, claims(map[string]any{"nbf": at(59 * time.Second)})), nil},
		{"iat beyond leeway", mint(t, k.ec, claims(map[string]any{"iat": at(2 * time.Minute)})), ErrNotYetValid},
		{"iat within leeway", mint(t, k.ec, claims(map[string]any{"iat": at(30 * time.Second)})), nil},
		{"wrong iss", mint(t, k.ed, claims(map[string]any{"iss": "https://evil.example.test"})), ErrIssuer},
		{"no iss", mint(t, k.ed, claims(map[string]any{"iss": nil})), ErrIssuer},
		{"wrong aud", mint(t, k.ed, claims(map[string]any{"aud": "other-service"})), ErrAudience},
		{"aud list without ours", mint(t, k.ed, claims(map[string]any{"aud": []string{"a", "b"}})), ErrAudience},
		{"aud list with ours", mint(t, k.ed, claims(map[string]any{"aud": []string{"a", testAudience}})), nil},
		{"no aud", mint(t, k.ed, claims(map[string]any{"aud": nil})), ErrAudience},
		{"alg none", unsigned(t, map[string]any{"alg": "none", "typ": "JWT", "kid": k.rsa.kid}, claims()), ErrAlgorithm},
		{"alg None", unsigned(t, map[string]any{"alg": "None", "kid": k.rsa.kid}, claims()), ErrAlgorithm},
		{"no alg", unsigned(t, map[string]any{"kid": k.rsa.kid}, claims()), ErrAlgorithm},
		{"HS256 with the RSA public key PEM as secret",
			mintWith(t, jose.SigningKey{Algorithm: jose.HS256, Key: k.rsaPublicPEM(t)},
				(&jose.SignerOptions{}).WithHeader("kid", k.rsa.kid), claims()), ErrAlgorithm},
		{"HS384 with the RSA public key PEM as secret",
			mintWith(t, jose.SigningKey{Algorithm: jose.HS384, Key: k.rsaPublicPEM(t)},
				(&jose.SignerOptions{}).WithHeader("kid", k.rsa.kid), claims()), ErrAlgorithm},
		{"HS512 with the RSA public key PEM as secret",
			mintWith(t, jose.SigningKey{Algorithm: jose.HS512, Key: k.rsaPublicPEM(t)},
				(&jose.SignerOptions{}).WithHeader("kid", k.rsa.kid), claims()), ErrAlgorithm},
		{"RS512", mintWith(t, jose.SigningKey{Algorithm: jose.RS512, Key: jose.JSONWebKey{Key: k.rsa.priv, KeyID: k.rsa.kid}}, nil, claims()), ErrAlgorithm},
		{"PS256", mintWith(t, jose.SigningKey{Algorithm: jose.PS256, Key: jose.JSONWebKey{Key: k.rsa.priv, KeyID: k.rsa.kid}}, nil, claims()), ErrAlgorithm},
		{"ES256 under an RSA key's kid", mint(t, signer{kid: k.rsa.kid, alg: jose.ES256, priv: k.ec.priv}, claims()), ErrAlgorithm},
		{"tampered payload", tamper(t, valid, claims(map[string]any{"email": "mallory@example.test"})), ErrSignature},
		{"tampered payload, same claims re-encoded", tamperRaw(valid, []byte(strings.ReplaceAll(string(mustJSON(t, claims())), ",", ", "))), ErrSignature},
		{"signed by another key under a known kid", mint(t, other, claims()), ErrSignature},
		{"signature cut", valid[:strings.LastIndexByte(valid, '.')+1], ErrSignature},
		{"oversized", pad(MaxTokenBytes + 100), ErrTooLarge},
		{"large but under the limit", pad(MaxTokenBytes - 400), nil},
		{"no claim", mint(t, k.rsa, claims(map[string]any{"email": nil})), ErrClaim},
		{"claim a number", mint(t, k.rsa, claims(map[string]any{"email": 42})), ErrClaim},
		{"claim a list", mint(t, k.rsa, claims(map[string]any{"email": []string{"alice@example.test"}})), ErrClaim},
		{"claim empty", mint(t, k.rsa, claims(map[string]any{"email": ""})), ErrClaim},
		{"claims not an object", signRaw(t, k.ed, []byte(`["alice"]`)), ErrMalformed},
		{"claims not JSON", signRaw(t, k.ed, []byte(`alice`)), ErrMalformed},
		{"exp not a number", mint(t, k.ed, claims(map[string]any{"exp": "tomorrow"})), ErrMalformed},
		{"crit header", mintWith(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: k.ed.priv, KeyID: k.ed.kid}},
			(&jose.SignerOptions{}).WithHeader("crit", []string{"exp"}), claims()), ErrMalformed},
		{"empty", "", ErrMalformed},
		{"garbage", "garbage", ErrMalformed},
		{"bearer prefix", "Bearer " + valid, ErrMalformed},
		{"newline in payload", strings.Replace(valid, ".", ".\n", 1), ErrMalformed},
		{"padded base64", strings.Replace(valid, ".", "=.", 1), ErrMalformed},
		{"two parts", valid[:strings.LastIndexByte(valid, '.')], ErrMalformed},
		{"four parts", valid + ".AAAA", ErrMalformed},
		{"five parts (JWE shape)", "eyJhbGciOiJSU0EtT0FFUCJ9.AAAA.AAAA.AAAA.AAAA", ErrMalformed},
		{"header not JSON", b64([]byte("not json")) + "." + b64([]byte("{}")) + ".AAAA", ErrMalformed},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if seen[tt.name] {
				t.Fatalf("duplicate case name")
			}
			seen[tt.name] = true
			c, err := f.v.Verify(context.Background(), tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v, want success", err)
				}
				if c.ID == "" {
					t.Fatalf("Caller = %+v, want an ID", c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
			for _, other := range sentinels {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %v is also %v", err, other)
				}
			}
			if c != (Caller{}) {
				t.Errorf("refused, yet Caller = %+v", c)
			}
			if leaks(err, tt.token) {
				t.Errorf("error %q holds part of the token", err)
			}
		})
	}
	if got := f.srv.hits.Load(); got != 1 {
		t.Errorf("JWKS fetched %d times, want 1 (no case has an unknown kid)", got)
	}
	logs := f.log.String()
	for _, tt := range tests {
		if leaks(errors.New(logs), tt.token) {
			t.Errorf("%s: the log holds part of the token", tt.name)
		}
	}
}

// An unknown kid refetches once; then, within RefetchInterval, no more, even
// under 50 concurrent verifies; after it, once more.
func TestUnknownKIDRefetchIsBounded(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.rsa)
	stranger := mint(t, newEdSigner(t, "stranger"), claims())
	if got := f.srv.hits.Load(); got != 1 {
		t.Fatalf("New fetched %d times, want 1", got)
	}

	if _, err := f.v.Verify(context.Background(), stranger); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify: %v, want ErrUnknownKey", err)
	}
	if got := f.srv.hits.Load(); got != 2 {
		t.Fatalf("after an unknown kid: %d fetches, want 2", got)
	}

	f.clk.Advance(RefetchInterval - time.Second)
	verifyConcurrently(t, f.v, stranger, 50, ErrUnknownKey)
	if got := f.srv.hits.Load(); got != 2 {
		t.Fatalf("50 more unknown kids within the interval: %d fetches, want still 2", got)
	}

	f.clk.Advance(time.Second)
	verifyConcurrently(t, f.v, stranger, 50, ErrUnknownKey)
	if got := f.srv.hits.Load(); got != 3 {
		t.Fatalf("50 unknown kids after the interval: %d fetches, want 3", got)
	}
	if _, err := f.v.Verify(context.Background(), mint(t, k.rsa, claims())); err != nil {
		t.Fatalf("known key after refetches: %v", err)
	}
}

// A key the IdP rotates in is picked up by the refetch its first token
// causes; 50 concurrent first tokens share that one fetch.
func TestRotatedKeyPickedUpOnce(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.rsa)
	rotated := newECSigner(t, "ec-2")
	token := mint(t, rotated, claims())

	arrived, release := f.srv.holdNext()
	f.srv.set(jwksOf(t, k.rsa, rotated))
	done := make(chan struct{})
	go func() {
		defer close(done)
		verifyConcurrently(t, f.v, token, 50, nil)
	}()
	<-arrived // one refetch is under way; the others join it or find the key
	close(release)
	<-done
	if got := f.srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2 (start, one refetch)", got)
	}
	if !strings.Contains(f.log.String(), `"kids":["ec-2","rsa-1"]`) {
		t.Errorf("log does not show the new key set:\n%s", f.log)
	}
}

// verifyConcurrently runs n Verifies at once and wants each to end in want.
func verifyConcurrently(t *testing.T, v *Verifier, token string, n int, want error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = v.Verify(context.Background(), token)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("verify %d: %v, want %v", i, err, want)
		}
	}
}

// A refetch that fails keeps the old keys and says so in the log.
func TestRefreshFailureKeepsKeys(t *testing.T) {
	k := loadKeys(t)
	tests := []struct {
		name  string
		fail  func(*jwksServer)
		warns string
	}{
		{"server error", func(s *jwksServer) { s.status.Store(500) }, "status 500"},
		{"not JSON", func(s *jwksServer) { s.set([]byte("<html>")) }, "not a JWK set"},
		{"no usable key", func(s *jwksServer) { s.set(mustJSON(t, map[string]any{"keys": []any{}})) }, ErrNoKeys.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, k.rsa)
			tt.fail(f.srv)
			stranger := mint(t, newEdSigner(t, "stranger"), claims())
			if _, err := f.v.Verify(context.Background(), stranger); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("unknown kid: %v, want ErrUnknownKey", err)
			}
			if got := f.srv.hits.Load(); got != 2 {
				t.Fatalf("%d fetches, want 2", got)
			}
			if _, err := f.v.Verify(context.Background(), mint(t, k.rsa, claims())); err != nil {
				t.Fatalf("old key after a failed refresh: %v", err)
			}
			logs := f.log.String()
			if !strings.Contains(logs, `"level":"warn"`) || !strings.Contains(logs, tt.warns) {
				t.Errorf("log lacks a warning with %q:\n%s", tt.warns, logs)
			}
			if strings.Contains(logs, stranger) {
				t.Errorf("log holds the token")
			}
		})
	}
}

// An https set is refetched once it is older than staleAfter, so that a key
// the IdP withdrew stops verifying without a restart.
func TestStaleSetRefetched(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.rsa, k.ec)
	token := mint(t, k.rsa, claims(map[string]any{"exp": t0.Add(time.Hour).Unix()}))
	f.srv.set(jwksOf(t, k.ec)) // the IdP withdraws rsa-1

	f.clk.Advance(staleAfter - time.Second)
	if _, err := f.v.Verify(context.Background(), token); err != nil {
		t.Fatalf("before staleAfter: %v", err)
	}
	waitReload(f.v)
	if got := f.srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches before staleAfter, want 1", got)
	}

	f.clk.Advance(time.Second)
	// Starts the background refetch. A token of the key that stays: with
	// the withdrawn one, a refetch done before its key is looked up makes
	// it an unknown kid, and that is one fetch more.
	_, _ = f.v.Verify(context.Background(), mint(t, k.ec, claims(map[string]any{"exp": t0.Add(time.Hour).Unix()})))
	waitReload(f.v)
	if got := f.srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches after staleAfter, want 2", got)
	}
	if _, err := f.v.Verify(context.Background(), token); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("withdrawn key: %v, want ErrUnknownKey", err)
	}
}

// A caller that gives up waiting for a reload another started gets
// ErrUnknownKey and its context's error; the reload itself goes on.
func TestVerifyContextEndsWait(t *testing.T) {
	k := loadKeys(t)
	f := newFixture(t, k.rsa)
	rotated := newEdSigner(t, "ed-2")
	arrived, release := f.srv.holdNext()
	f.srv.set(jwksOf(t, k.rsa, rotated))

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := f.v.Verify(ctx, mint(t, rotated, claims()))
		errc <- err
	}()
	<-arrived
	cancel()
	err := <-errc
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify: %v, want ErrUnknownKey and context.Canceled", err)
	}
	close(release)
	waitReload(f.v)
	if _, err := f.v.Verify(context.Background(), mint(t, rotated, claims())); err != nil {
		t.Fatalf("after the reload finished: %v", err)
	}
}
