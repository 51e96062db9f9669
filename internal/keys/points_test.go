package keys_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// Public keys that crypto/ed25519 accepts and ParsePublic must not.
//
// The eight small-order points are those listed in "Taming the many
// EdDSAs" (Chalkias, Garillot, Nikolaenko; SSR 2020, and the test vectors
// of its ed25519-speccheck repository), the same list as libsodium's
// blocklist: the canonical encodings of the points of order 1, 2, 4 and 8.
//
// The non-canonical encodings break RFC 8032 section 5.1.3 (decoding):
// step 1, "if the y coordinate is >= p, decoding fails", or step 4, "if
// x = 0 and x_0 = 1, decoding fails". Each y >= p is p + k; reproduce with
//
//	python3 -c 'p=2**255-19; print((p+3).to_bytes(32,"little").hex())'
//
// ((p+3) | 1<<255 for the same with the sign bit). y = 3 is on the curve, of
// large order: only the canonical-encoding check refuses that one.
var unsafeKeys = []struct {
	name, hex  string
	smallOrder bool // else: non-canonical
}{
	{"identity (order 1)", "0100000000000000000000000000000000000000000000000000000000000000", true},
	{"y = -1 (order 2)", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", true},
	{"y = 0, all zero (order 4)", "0000000000000000000000000000000000000000000000000000000000000000", true},
	{"y = 0, x negative (order 4)", "0000000000000000000000000000000000000000000000000000000000000080", true},
	{"order 8, first", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", true},
	{"order 8, first negated", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", true},
	{"order 8, second", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", true},
	{"order 8, second negated", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", true},

	{"y = p (is y = 0, order 4)", "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", false},
	{"y = p+1 (is the identity)", "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", false},
	{"y = p+3, large order", "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", false},
	{"y = p+3, sign bit set, large order", "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", false},
	{"y = 2^255-1 (p+18), large order", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", false},
	{"identity with x = -0", "0100000000000000000000000000000000000000000000000000000000000080", false},
	{"y = -1 with x = -0", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", false},
}

// pkixDER wraps 32 raw bytes as an Ed25519 PKIX key; x509 checks only the length.
func pkixDER(t *testing.T, raw []byte) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(raw))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pkixPEM(t *testing.T, raw []byte) []byte { return pemOf("PUBLIC KEY", pkixDER(t, raw)) }

func TestParsePublicRefusesUnsafePoints(t *testing.T) {
	for _, c := range unsafeKeys {
		t.Run(c.name, func(t *testing.T) {
			raw, err := hex.DecodeString(c.hex)
			if err != nil || len(raw) != ed25519.PublicKeySize {
				t.Fatalf("bad vector %q", c.hex)
			}
			// The standard library takes it: the check has to be ours.
			if _, err := x509.ParsePKIXPublicKey(pkixDER(t, raw)); err != nil {
				t.Fatalf("x509 refuses it already (%v); the vector tests nothing", err)
			}
			k, err := keys.ParsePublic(pkixPEM(t, raw))
			if err == nil {
				t.Fatalf("accepted %x", k)
			}
			if !errors.Is(err, keys.ErrUnsafeKey) || errors.Is(err, keys.ErrNotEd25519) {
				t.Errorf("error %v: want ErrUnsafeKey (and not ErrNotEd25519)", err)
			}
			want := "not the canonical encoding"
			if c.smallOrder {
				want = "small-order point"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			if err := keys.CheckPublic(raw); !errors.Is(err, keys.ErrUnsafeKey) {
				t.Errorf("CheckPublic = %v, want ErrUnsafeKey", err)
			}
		})
	}
}

// TestCheckPublic: what is not a point at all, or not 32 bytes, is refused
// too; real keys (generated, OpenSSL's) pass.
func TestCheckPublic(t *testing.T) {
	// y = 2 is not the y of any point: (y²-1)/(dy²+1) is not a square.
	notOnCurve, _ := hex.DecodeString("0200000000000000000000000000000000000000000000000000000000000000")
	for name, k := range map[string][]byte{"not on the curve": notOnCurve, "31 bytes": make([]byte, 31), "empty": nil} {
		if err := keys.CheckPublic(k); !errors.Is(err, keys.ErrUnsafeKey) {
			t.Errorf("%s: CheckPublic = %v, want ErrUnsafeKey", name, err)
		}
	}
	for range 64 {
		pub, _, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if err := keys.CheckPublic(pub); err != nil {
			t.Fatalf("generated key %x refused: %v", pub, err)
		}
	}
	pub, err := keys.ParsePublic(readTestdata(t, "openssl-ed25519.pub"))
	if err != nil || keys.CheckPublic(pub) != nil {
		t.Errorf("OpenSSL's key refused: %v", err)
	}
}

// TestAllZeroKeyForgery shows what the check prevents: with the all-zero
// public key (order 4), the signature 01 00..00 || 32 zero bytes (R the
// identity, S = 0) verifies with crypto/ed25519 for about one message in
// four, with no private key anywhere.
func TestAllZeroKeyForgery(t *testing.T) {
	zero := make(ed25519.PublicKey, ed25519.PublicKeySize)
	forged := make([]byte, ed25519.SignatureSize)
	forged[0] = 1
	verified := 0
	for i := range 64 {
		if ed25519.Verify(zero, []byte{byte(i)}, forged) {
			verified++
		}
	}
	if verified == 0 {
		t.Fatal("the forged signature verified for none of 64 messages; the vector shows nothing")
	}
	if _, err := keys.ParsePublic(pkixPEM(t, zero)); !errors.Is(err, keys.ErrUnsafeKey) {
		t.Errorf("ParsePublic(all-zero key) = %v, want ErrUnsafeKey", err)
	}
}
