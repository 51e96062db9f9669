package tokens_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"aidanwoods.dev/go-paseto"

	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
)

var (
	issuedAt = time.Date(2026, 9, 30, 14, 5, 0, 0, time.UTC)
	expires  = issuedAt.Add(24 * time.Hour)
	now      = issuedAt.Add(time.Minute)
)

const (
	digest = "fad508d1225aceb3591ca45aa87040223cacc4379c545e93efdeeaf9284982e7"
	app    = "finance-agent"
	action = "post_journal_entry"
)

// gatewayKey derives a fixed Ed25519 key from name, so that tokens (and the
// fuzz corpus) are the same bytes on every run: Ed25519 and PASETO
// v4.public signing are deterministic.
func gatewayKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("uapk-proxy tokens test key: " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func newIssuer(tb testing.TB, name string) *tokens.Issuer {
	tb.Helper()
	i, err := tokens.NewIssuer(gatewayKey(name))
	if err != nil {
		tb.Fatal(err)
	}
	return i
}

func capability() *tokens.Claims {
	return &tokens.Claims{Kind: tokens.KindCapability, ID: "tok_0123456789abcdef0123456789abcdef", ApprovalID: "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa",
		Action: action, App: app, Digest: digest, IssuedAt: issuedAt, Expires: expires}
}

func override() *tokens.Claims {
	return &tokens.Claims{Kind: tokens.KindOverride, ID: "tok_fedcba9876543210fedcba9876543210", ApprovalID: "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
		Action: action, App: app, IssuedAt: issuedAt, Expires: issuedAt.Add(4 * time.Hour)}
}

// handmade signs a token with the gateway key the way Issue does, then lets
// edit change it: for tokens Issue would never make.
func handmade(name string, edit func(*paseto.Token), implicit []byte) string {
	sk, err := paseto.NewV4AsymmetricSecretKeyFromEd25519(gatewayKey(name))
	if err != nil {
		panic(err)
	}
	t := paseto.NewToken()
	t.SetIssuer("uapk-proxy")
	t.SetJti("tok_handmade")
	t.SetIssuedAt(issuedAt)
	t.SetNotBefore(issuedAt.Add(-time.Minute))
	t.SetExpiration(expires)
	t.SetString("kind", tokens.KindCapability)
	t.SetString("approval_id", "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa")
	t.SetString("action", action)
	t.SetString("app", app)
	t.SetString("digest", digest)
	if edit != nil {
		edit(&t)
	}
	return t.V4Sign(sk, implicit)
}

// without removes a claim by rebuilding the token without it.
func without(claim string) func(*paseto.Token) {
	return func(t *paseto.Token) {
		claims := t.Claims()
		delete(claims, claim)
		nt, err := paseto.MakeToken(claims, nil)
		if err != nil {
			panic(err)
		}
		*t = *nt
	}
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	i := newIssuer(t, "gateway")
	for _, c := range []*tokens.Claims{capability(), override()} {
		t.Run(c.Kind, func(t *testing.T) {
			want := *c
			tok := i.Issue(c)
			if !strings.HasPrefix(tok, "v4.public.") {
				t.Fatalf("token %q is not PASETO v4.public", tok)
			}
			got, err := i.Verify(tok, c.Kind, now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if *got != want {
				t.Errorf("claims\n got %+v\nwant %+v", *got, want)
			}
			if err := got.Bind(app, action, digest); err != nil {
				t.Errorf("Bind to its own request: %v", err)
			}

			// Anyone with the public key (GET /v1/keys/gateway) can check it.
			pub, err := paseto.NewV4AsymmetricPublicKeyFromEd25519(gatewayKey("gateway").Public().(ed25519.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			if pub.ExportHex() != i.PublicKey().ExportHex() {
				t.Errorf("PublicKey() is not the gateway key's public half")
			}
			if _, err := paseto.NewParserWithoutExpiryCheck().ParseV4Public(pub, tok, nil); err != nil {
				t.Errorf("a third party cannot verify the token: %v", err)
			}
		})
	}
}

func TestIssueFillsID(t *testing.T) {
	i := newIssuer(t, "gateway")
	seen := map[string]bool{}
	for range 100 {
		c := capability()
		c.ID = ""
		tok := i.Issue(c)
		if !strings.HasPrefix(c.ID, "tok_") || len(c.ID) != 4+32 {
			t.Fatalf("Issue set ID %q, want tok_ and 32 hex digits", c.ID)
		}
		if seen[c.ID] {
			t.Fatalf("repeated token id %s", c.ID)
		}
		seen[c.ID] = true
		got, err := i.Verify(tok, tokens.KindCapability, now)
		if err != nil || got.ID != c.ID {
			t.Fatalf("Verify: %+v, %v; want id %s", got, err, c.ID)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	i := newIssuer(t, "gateway")
	capTok := i.Issue(capability())
	ovTok := i.Issue(override())
	noDigest := capability()
	noDigest.Digest = ""
	subSecond := capability()
	subSecond.Expires = expires.Add(500 * time.Millisecond)

	cases := []struct {
		name  string
		token string
		kind  string
		at    time.Time
		want  error
	}{
		{"empty", "", tokens.KindCapability, now, tokens.ErrInvalid},
		{"garbage", "not a token", tokens.KindCapability, now, tokens.ErrInvalid},
		{"header only", "v4.public.", tokens.KindCapability, now, tokens.ErrInvalid},
		{"a JWT", "eyJhbGciOiJFZERTQSJ9.eyJraW5kIjoiY2FwYWJpbGl0eSJ9.c2ln", tokens.KindCapability, now, tokens.ErrInvalid},
		{"v4.local header", "v4.local" + strings.TrimPrefix(capTok, "v4.public"), tokens.KindCapability, now, tokens.ErrInvalid},
		{"v2.public header", "v2.public" + strings.TrimPrefix(capTok, "v4.public"), tokens.KindCapability, now, tokens.ErrInvalid},
		{"truncated", capTok[:len(capTok)-4], tokens.KindCapability, now, tokens.ErrInvalid},
		{"one payload character changed", flip(capTok, len("v4.public.")+5), tokens.KindCapability, now, tokens.ErrInvalid},
		{"signature character changed", flip(capTok, len(capTok)-10), tokens.KindCapability, now, tokens.ErrInvalid},
		{"trailing footer added", capTok + ".Zm9vdGVy", tokens.KindCapability, now, tokens.ErrInvalid},
		{"surrounding space", " " + capTok, tokens.KindCapability, now, tokens.ErrInvalid},
		{"signed by another key", newIssuer(t, "another gateway").Issue(capability()), tokens.KindCapability, now, tokens.ErrInvalid},
		{"override presented as capability", ovTok, tokens.KindCapability, now, tokens.ErrInvalid},
		{"capability presented as override", capTok, tokens.KindOverride, now, tokens.ErrInvalid},
		{"unknown kind asked for", capTok, "admin", now, tokens.ErrInvalid},
		{"signed with an implicit assertion", handmade("gateway", nil, []byte("other context")), tokens.KindCapability, now, tokens.ErrInvalid},
		{"another issuer", handmade("gateway", func(t *paseto.Token) { t.SetIssuer("someone-else") }, nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no issuer", handmade("gateway", without("iss"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no kind", handmade("gateway", without("kind"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"empty kind", handmade("gateway", func(t *paseto.Token) { t.SetString("kind", "") }, nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"kind not a string", handmade("gateway", func(t *paseto.Token) { t.Set("kind", 1) }, nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no approval_id", handmade("gateway", without("approval_id"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no action", handmade("gateway", without("action"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no app", handmade("gateway", without("app"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no jti", handmade("gateway", without("jti"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"jti not a string", handmade("gateway", func(t *paseto.Token) { t.Set("jti", 7) }, nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"no exp", handmade("gateway", without("exp"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"exp not a time", handmade("gateway", func(t *paseto.Token) { t.SetString("exp", "tomorrow") }, nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"capability without digest", handmade("gateway", without("digest"), nil), tokens.KindCapability, now, tokens.ErrInvalid},
		{"capability issued without digest", i.Issue(noDigest), tokens.KindCapability, now, tokens.ErrInvalid},
		{"another key, also expired", newIssuer(t, "another gateway").Issue(capability()), tokens.KindCapability, expires.Add(time.Hour), tokens.ErrInvalid},

		// Expiry: a token is dead from its expiry instant on.
		{"at exactly its expiry", capTok, tokens.KindCapability, expires, tokens.ErrExpired},
		{"a nanosecond after its expiry", capTok, tokens.KindCapability, expires.Add(time.Nanosecond), tokens.ErrExpired},
		{"a year after its expiry", capTok, tokens.KindCapability, expires.AddDate(1, 0, 0), tokens.ErrExpired},
		{"override at exactly its expiry", ovTok, tokens.KindOverride, issuedAt.Add(4 * time.Hour), tokens.ErrExpired},
		// exp is RFC 3339 to the second: a sub-second expiry is cut to the
		// second before it, never after.
		{"sub-second expiry is truncated", i.Issue(subSecond), tokens.KindCapability, expires, tokens.ErrExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := i.Verify(c.token, c.kind, c.at)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", got)
			}
			if got != nil {
				t.Errorf("Verify returned claims with an error: %+v", got)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if r := tokens.Reason(err); string(r) != c.want.Error() {
				t.Errorf("Reason = %q, want %q", r, c.want.Error())
			}
		})
	}
}

// flip changes the character at i of a base64url token to another valid one.
func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestVerifyJustBeforeExpiry(t *testing.T) {
	i := newIssuer(t, "gateway")
	for _, at := range []time.Time{issuedAt.Add(-time.Hour), issuedAt, expires.Add(-time.Nanosecond)} {
		if _, err := i.Verify(i.Issue(capability()), tokens.KindCapability, at); err != nil {
			t.Errorf("at %s: %v", at.Format(time.RFC3339Nano), err)
		}
	}
}

func TestBind(t *testing.T) {
	cases := []struct {
		name                string
		claims              *tokens.Claims
		app, action, digest string
		want                error // nil: bound
	}{
		{"capability for this request", capability(), app, action, digest, nil},
		{"capability, another app", capability(), "other-agent", action, digest, tokens.ErrApp},
		{"capability, app in another case", capability(), "Finance-Agent", action, digest, tokens.ErrApp},
		{"capability, another action", capability(), app, "pay_vendor", digest, tokens.ErrAction},
		{"capability, another request body", capability(), app, action, strings.Repeat("0", 64), tokens.ErrDigest},
		{"capability, no digest given", capability(), app, action, "", tokens.ErrDigest},
		{"capability, digest in upper case", capability(), app, action, strings.ToUpper(digest), tokens.ErrDigest},
		{"capability, everything wrong: app is reported first", capability(), "other-agent", "pay_vendor", "x", tokens.ErrApp},
		{"capability, action and digest wrong: action first", capability(), app, "pay_vendor", "x", tokens.ErrAction},
		{"override, any digest", override(), app, action, strings.Repeat("0", 64), nil},
		{"override, no digest", override(), app, action, "", nil},
		{"override, another app", override(), "other-agent", action, "", tokens.ErrApp},
		{"override, another action", override(), app, "pay_vendor", "", tokens.ErrAction},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.claims.Bind(c.app, c.action, c.digest)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Bind: %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Bind error %v, want %v", err, c.want)
			}
			if r := tokens.Reason(err); string(r) != c.want.Error() {
				t.Errorf("Reason = %q, want %q", r, c.want.Error())
			}
		})
	}

	// The same through a real token: the override's digest claim, if any,
	// plays no part.
	i := newIssuer(t, "gateway")
	ov := override()
	ov.Digest = digest
	got, err := i.Verify(i.Issue(ov), tokens.KindOverride, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != "" {
		t.Errorf("override claims carry digest %q", got.Digest)
	}
	if err := got.Bind(app, action, "anything"); err != nil {
		t.Errorf("override Bind: %v", err)
	}
}

func TestReason(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{tokens.ErrInvalid, "invalid_token"},
		{tokens.ErrExpired, "expired"},
		{tokens.ErrDigest, "digest_mismatch"},
		{tokens.ErrApp, "app_mismatch"},
		{tokens.ErrAction, "action_mismatch"},
		{tokens.ErrConsumed, "consumed"},
		{fmt.Errorf("capability: %w", fmt.Errorf("%w: token tok_1 was already used", tokens.ErrConsumed)), "consumed"},
		{errors.New("disk on fire"), "invalid_token"}, // anything else fails closed
		{nil, "invalid_token"},
	}
	for _, c := range cases {
		if got := tokens.Reason(c.err); string(got) != c.want {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestNewIssuerRejectsBadKey(t *testing.T) {
	for _, k := range []ed25519.PrivateKey{nil, make(ed25519.PrivateKey, 31)} {
		if _, err := tokens.NewIssuer(k); err == nil {
			t.Errorf("NewIssuer(%d-byte key) accepted it", len(k))
		}
	}
}
