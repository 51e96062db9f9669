package passkey_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
)

func TestVerify(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rp := passkey.RP{ID: "desk.corp.example", Origin: "https://desk.corp.example"}
	ch := passkey.Challenge([]byte("uapk-approval-v1\napr_x\nd\napprove\ncfo@corp.example\n2026-12-01T10:00:00Z"))
	for name, priv := range map[string]crypto.Signer{"ES256": ec, "EdDSA": ed} {
		t.Run(name, func(t *testing.T) {
			au := passkeytest.New("")
			au.Priv = priv
			res, err := passkey.Verify(au.AssertWith(rp.ID, rp.Origin, ch, passkeytest.UP|passkeytest.UV, 0), priv.Public(), rp, ch)
			if err != nil || res.Counter != 1 || !res.UserVerified {
				t.Fatalf("%+v %v", res, err)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tampered := au.AssertWith(rp.ID, rp.Origin, ch, passkeytest.UP, 0)
			tampered.Signature = au.AssertWith(rp.ID, rp.Origin, passkey.Challenge([]byte("x")), passkeytest.UP, 0).Signature
			cases := []struct {
				name string
				a    passkey.Assertion
				key  crypto.PublicKey
				want error
			}{
				{"another challenge", au.AssertWith(rp.ID, rp.Origin, passkey.Challenge([]byte("another statement")), passkeytest.UP, 0), priv.Public(), passkey.ErrChallenge},
				{"another origin", au.AssertWith(rp.ID, "https://evil.example", ch, passkeytest.UP, 0), priv.Public(), passkey.ErrOrigin},
				{"another rp id", au.AssertWith("evil.example", rp.Origin, ch, passkeytest.UP, 0), priv.Public(), passkey.ErrOrigin},
				{"not present", au.AssertWith(rp.ID, rp.Origin, ch, 0, 0), priv.Public(), passkey.ErrFlags},
				{"another credential's key", au.AssertWith(rp.ID, rp.Origin, ch, passkeytest.UP, 0), other.Public(), passkey.ErrSignature},
				{"signature of another assertion", tampered, priv.Public(), passkey.ErrSignature},
				{"garbage", passkey.Assertion{AuthenticatorData: "!!", ClientDataJSON: "e30", Signature: "AA"}, priv.Public(), passkey.ErrMalformed},
				{"short auth data", passkey.Assertion{AuthenticatorData: passkey.Encode(make([]byte, 36)), ClientDataJSON: "e30", Signature: "AA"}, priv.Public(), passkey.ErrMalformed},
			}
			for _, c := range cases {
				if _, err := passkey.Verify(c.a, c.key, rp, ch); !errors.Is(err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, err, c.want)
				}
			}
		})
	}
	// A registration's client data is not an assertion's.
	au := passkeytest.New("")
	au.Priv = ec
	a := au.AssertWith(rp.ID, rp.Origin, ch, passkeytest.UP, 0)
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": passkey.Encode(ch), "origin": rp.Origin})
	a.ClientDataJSON = passkey.Encode(cd)
	if _, err := passkey.Verify(a, ec.Public(), rp, ch); !errors.Is(err, passkey.ErrClientData) {
		t.Errorf("webauthn.create: %v", err)
	}
}

func TestOriginOf(t *testing.T) {
	good := map[string]passkey.RP{
		"https://desk.corp.example":      {"desk.corp.example", "https://desk.corp.example"},
		"https://Desk.Corp.Example:443/": {"desk.corp.example", "https://desk.corp.example"},
		"https://desk.corp.example:8443": {"desk.corp.example", "https://desk.corp.example:8443"},
		"http://localhost:8090":          {"localhost", "http://localhost:8090"},
	}
	for in, want := range good {
		if got, err := passkey.OriginOf(in); err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"http://desk.corp.example", "https://10.0.0.1", "http://127.0.0.1:8090", "https://desk.corp.example/ui", "ftp://x", "https://u:p@desk.corp.example", ""} {
		if _, err := passkey.OriginOf(in); !errors.Is(err, passkey.ErrURL) {
			t.Errorf("%q: %v, want passkey.ErrURL", in, err)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, k := range []crypto.PublicKey{ec.Public(), pub} {
		pemText, err := passkey.PublicKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := passkey.ParsePublicKey([]byte(pemText)); err != nil {
			t.Errorf("%T: %v", k, err)
		}
	}
	pemText, _ := passkey.PublicKeyPEM(p384.Public())
	if _, err := passkey.ParsePublicKey([]byte(pemText)); !errors.Is(err, passkey.ErrKey) {
		t.Errorf("P-384: %v", err)
	}
}
