package tokens_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"aidanwoods.dev/go-paseto"

	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
)

// fuzzNow is after every token the gateway key signed in the corpus has
// expired, so no input can verify: a genuine token fails with expired, and
// anything else with invalid_token.
var fuzzNow = expires.Add(time.Hour)

// FuzzVerify feeds arbitrary strings to Verify. They must never panic, never
// verify, fail with invalid_token or expired only, and reach expired only
// when the signature is the gateway's. The committed corpus
// (testdata/fuzz/FuzzVerify) holds real tokens: expired ones by the gateway
// key, live ones by another key, and ones with missing claims; run with
//
//	go test ./tokens/ -run '^$' -fuzz FuzzVerify -fuzztime 30s
func FuzzVerify(f *testing.F) {
	i := newIssuer(f, "gateway")
	f.Add(i.Issue(capability()))
	f.Add(i.Issue(override()))
	f.Add(newIssuer(f, "another gateway").Issue(capability()))
	f.Add(handmade("gateway", without("digest"), nil))
	f.Add("v4.public.")
	f.Add("")

	pub, err := paseto.NewV4AsymmetricPublicKeyFromEd25519(gatewayKey("gateway").Public().(ed25519.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for _, kind := range []string{tokens.KindCapability, tokens.KindOverride} {
			c, err := i.Verify(token, kind, fuzzNow)
			if err == nil || c != nil {
				t.Fatalf("Verify(%q, %s) = %+v, %v: verified", token, kind, c, err)
			}
			switch r := tokens.Reason(err); r {
			case "invalid_token":
			case "expired":
				if _, perr := paseto.NewParserWithoutExpiryCheck().ParseV4Public(pub, token, nil); perr != nil {
					t.Fatalf("expired, yet the gateway did not sign %q: %v", token, perr)
				}
			default:
				t.Fatalf("Verify failed with reason %q (%v); want invalid_token or expired", r, err)
			}
		}
	})
}
