package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
)

var updateCorpus = flag.Bool("update", false, "rewrite testdata/fuzz/FuzzVerify")

// fuzzVerifier verifies against a file set of the three committed keys at t0.
func fuzzVerifier(t testing.TB) (*Verifier, testKeys) {
	t.Helper()
	k := loadKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, jwksOf(t, k.all()...))
	v, err := New(context.Background(), Config{JWKS: path, Issuer: testIssuer, Audience: testAudience, Now: newClock().Now, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return v, k
}

// corpus is the committed seed corpus: each name starts with what Verify
// must answer (valid, or the sentinel's name).
func corpus(t testing.TB, k testKeys) map[string]string {
	valid := mint(t, k.rsa, claims())
	return map[string]string{
		"valid-rs256":                   valid,
		"valid-es256":                   mint(t, k.ec, claims()),
		"valid-eddsa":                   mint(t, k.ed, claims(map[string]any{"aud": []string{"x", testAudience}, "nbf": t0.Unix()})),
		"algorithm-none":                unsigned(t, map[string]any{"alg": "none", "kid": k.rsa.kid}, claims()),
		"algorithm-hs256-rsa-pem":       mintWith(t, jose.SigningKey{Algorithm: jose.HS256, Key: k.rsaPublicPEM(t)}, (&jose.SignerOptions{}).WithHeader("kid", k.rsa.kid), claims()),
		"algorithm-es256-under-rsa-kid": mint(t, signer{kid: k.rsa.kid, alg: jose.ES256, priv: k.ec.priv}, claims()),
		"signature-tampered":            tamper(t, valid, claims(map[string]any{"email": "mallory@example.test"})),
		"malformed-newline":             strings.Replace(valid, ".", ".\n", 1),
		"malformed-noncanonical-base64": noncanonical(valid),
		"malformed-claims-list":         signRaw(t, k.ed, []byte(`[]`)),
		"toolarge":                      mint(t, k.ed, claims(map[string]any{"pad": strings.Repeat("x", MaxTokenBytes)})),
		"expired":                       mint(t, k.ec, claims(map[string]any{"exp": t0.Add(-time.Hour).Unix()})),
		"notyetvalid":                   mint(t, k.ec, claims(map[string]any{"nbf": t0.Add(time.Hour).Unix()})),
		"issuer":                        mint(t, k.ed, claims(map[string]any{"iss": "https://evil.example.test"})),
		"audience":                      mint(t, k.ed, claims(map[string]any{"aud": "other"})),
		"claim-number":                  mint(t, k.rsa, claims(map[string]any{"email": 7})),
		"unknownkey":                    mint(t, signer{kid: "stranger", alg: jose.EdDSA, priv: k.ed.priv}, claims()),
		"malformed-empty":               "",
		"malformed-dots":                "..",
		"signature-empty":               valid[:strings.LastIndexByte(valid, '.')+1],
	}
}

// noncanonical changes the claims part's last character to one that decodes
// to the same bytes (other trailing bits), which a lax decoder accepts.
func noncanonical(token string) string {
	parts := strings.Split(token, ".")
	p := parts[1]
	if len(p)%4 == 0 {
		return token + "x" // no trailing bits to vary: make it malformed anyway
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, p[len(p)-1])
	parts[1] = p[:len(p)-1] + string(alphabet[i^1])
	return strings.Join(parts, ".")
}

var byName = map[string]error{
	"malformed": ErrMalformed, "toolarge": ErrTooLarge, "algorithm": ErrAlgorithm, "unknownkey": ErrUnknownKey,
	"signature": ErrSignature, "expired": ErrExpired, "notyetvalid": ErrNotYetValid, "issuer": ErrIssuer,
	"audience": ErrAudience, "claim": ErrClaim,
}

// TestFuzzCorpus checks that each committed corpus input still gets the
// answer its name says (so the corpus keeps real, verifying tokens), and
// with -update rewrites the corpus:
//
//	go test ./internal/identity/ -run TestFuzzCorpus -update
func TestFuzzCorpus(t *testing.T) {
	v, k := fuzzVerifier(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, token := range corpus(t, k) {
			writeFile(t, filepath.Join(dir, name), []byte("go test fuzz v1\nstring("+strconv.Quote(token)+")\n"))
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < len(corpus(t, k)) {
		t.Fatalf("%d corpus files, want at least %d", len(entries), len(corpus(t, k)))
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			token, err := corpusString(b)
			if err != nil {
				t.Fatal(err)
			}
			kind, _, _ := strings.Cut(e.Name(), "-")
			_, err = v.Verify(context.Background(), token)
			if kind == "valid" {
				if err != nil {
					t.Fatalf("Verify: %v, want success", err)
				}
				return
			}
			want, ok := byName[kind]
			if !ok {
				return // a file the fuzzer added: FuzzVerify's property covers it
			}
			if !errors.Is(err, want) {
				t.Fatalf("Verify: %v, want %v", err, want)
			}
		})
	}
}

// corpusString reads a one-string corpus file.
func corpusString(b []byte) (string, error) {
	s, ok := strings.CutPrefix(string(b), "go test fuzz v1\n")
	if !ok {
		return "", errors.New("not a fuzz corpus file")
	}
	s = strings.TrimSpace(s)
	s, ok = strings.CutPrefix(s, "string(")
	if !ok || !strings.HasSuffix(s, ")") {
		return "", errors.New("not a single string")
	}
	return strconv.Unquote(strings.TrimSuffix(s, ")"))
}

// FuzzVerify feeds arbitrary strings to Verify. It must never panic, must
// fail only with one of the package's sentinels and with no part of the
// token in the error, and may pass only a token that an independent
// verifier (below: stdlib crypto and encoding/json, no go-jose) also finds
// well-formed, signed by a key of the set and valid at t0. Run with
//
//	go test ./internal/identity/ -run '^$' -fuzz FuzzVerify -fuzztime 200000x
func FuzzVerify(f *testing.F) {
	v, k := fuzzVerifier(f)
	for _, token := range corpus(f, k) {
		f.Add(token)
		// Mutations of each: one character changed in each part.
		parts := strings.Split(token, ".")
		for i := range parts {
			if parts[i] == "" {
				continue
			}
			m := append([]string(nil), parts...)
			m[i] = "A" + m[i][1:]
			f.Add(strings.Join(m, "."))
		}
	}
	keys := map[string]crypto.PublicKey{}
	for _, s := range k.all() {
		keys[s.kid] = s.priv.Public()
	}

	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			var matched int
			for _, s := range sentinels {
				if errors.Is(err, s) {
					matched++
				}
			}
			if matched != 1 {
				t.Fatalf("Verify: %v matches %d sentinels, want exactly 1", err, matched)
			}
			if leaks(err, token) {
				t.Fatalf("error %q holds part of the token", err)
			}
			if c != (Caller{}) {
				t.Fatalf("refused, yet Caller = %+v", c)
			}
			return
		}
		want, ierr := independentVerify(token, keys, t0)
		if ierr != nil {
			t.Fatalf("Verify passed %q, the independent verifier refuses it: %v", token, ierr)
		}
		if c.ID != want.ID || c.KeyID != want.KeyID || c.Alg != want.Alg || c.Issuer != want.Issuer {
			t.Fatalf("Caller = %+v, independent verifier says %+v", c, want)
		}
	})
}

// independentVerify checks a token from RFC 7515 and RFC 7519 alone.
func independentVerify(token string, keys map[string]crypto.PublicKey, now time.Time) (Caller, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > MaxTokenBytes {
		return Caller{}, errors.New("not three parts, or too long")
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
			return Caller{}, fmt.Errorf("part %d is not canonical base64url", i)
		}
		raw[i] = b
	}
	var hdr map[string]any
	if err := json.Unmarshal(raw[0], &hdr); err != nil {
		return Caller{}, err
	}
	alg, _ := hdr["alg"].(string)
	kid, _ := hdr["kid"].(string)
	pub, ok := keys[kid]
	if !ok {
		return Caller{}, errors.New("unknown kid")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch key := pub.(type) {
	case *rsa.PublicKey:
		if alg != "RS256" || rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], raw[2]) != nil {
			return Caller{}, errors.New("not an RS256 signature by the kid's key")
		}
	case *ecdsa.PublicKey:
		if alg != "ES256" || len(raw[2]) != 64 ||
			!ecdsa.Verify(key, digest[:], new(big.Int).SetBytes(raw[2][:32]), new(big.Int).SetBytes(raw[2][32:])) {
			return Caller{}, errors.New("not an ES256 signature by the kid's key")
		}
	case ed25519.PublicKey:
		if alg != "EdDSA" || !ed25519.Verify(key, []byte(parts[0]+"."+parts[1]), raw[2]) {
			return Caller{}, errors.New("not an EdDSA signature by the kid's key")
		}
	default:
		return Caller{}, fmt.Errorf("key type %T", pub)
	}
	var c map[string]any
	if err := json.Unmarshal(raw[1], &c); err != nil {
		return Caller{}, err
	}
	if c["iss"] != testIssuer {
		return Caller{}, errors.New("iss")
	}
	switch aud := c["aud"].(type) {
	case string:
		if aud != testAudience {
			return Caller{}, errors.New("aud")
		}
	case []any:
		found := false
		for _, a := range aud {
			found = found || a == testAudience
		}
		if !found {
			return Caller{}, errors.New("aud")
		}
	default:
		return Caller{}, errors.New("aud")
	}
	at := func(name string) (time.Time, bool) {
		n, ok := c[name].(float64)
		return time.Unix(int64(n), 0), ok
	}
	exp, ok := at("exp")
	if !ok || now.Add(-Leeway).After(exp) {
		return Caller{}, errors.New("exp")
	}
	for _, name := range []string{"nbf", "iat"} {
		if _, present := c[name]; !present {
			continue
		}
		if ts, ok := at(name); !ok || now.Add(Leeway).Before(ts) {
			return Caller{}, errors.New(name)
		}
	}
	email, _ := c["email"].(string)
	if email == "" {
		return Caller{}, errors.New("email")
	}
	iss, _ := c["iss"].(string)
	return Caller{ID: email, KeyID: kid, Alg: alg, Issuer: iss}, nil
}
