package passkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
)

// authenticator is a software authenticator: it makes assertions as a
// browser and a passkey would.
type authenticator struct {
	priv    crypto.Signer
	counter uint32
}

func (au *authenticator) assert(t testing.TB, rpID, origin string, challenge []byte, flags byte) Assertion {
	t.Helper()
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": Encode(challenge), "origin": origin, "crossOrigin": false})
	rp := sha256.Sum256([]byte(rpID))
	au.counter++
	ad := append(rp[:], flags)
	ad = binary.BigEndian.AppendUint32(ad, au.counter)
	ch := sha256.Sum256(cd)
	signed := append(append([]byte{}, ad...), ch[:]...)
	var sig []byte
	var err error
	switch k := au.priv.(type) {
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(signed)
		sig, err = ecdsa.SignASN1(rand.Reader, k, h[:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, signed)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Assertion{CredentialID: Encode([]byte("cred-1")), AuthenticatorData: Encode(ad), ClientDataJSON: Encode(cd), Signature: Encode(sig)}
}

func TestVerify(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rp := RP{ID: "desk.corp.example", Origin: "https://desk.corp.example"}
	ch := Challenge([]byte("uapk-approval-v1\napr_x\nd\napprove\ncfo@corp.example\n2026-12-01T10:00:00Z"))
	for name, priv := range map[string]crypto.Signer{"ES256": ec, "EdDSA": ed} {
		t.Run(name, func(t *testing.T) {
			au := &authenticator{priv: priv}
			res, err := Verify(au.assert(t, rp.ID, rp.Origin, ch, flagUP|flagUV), priv.Public(), rp, ch)
			if err != nil || res.Counter != 1 || !res.UserVerified {
				t.Fatalf("%+v %v", res, err)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tampered := au.assert(t, rp.ID, rp.Origin, ch, flagUP)
			tampered.Signature = au.assert(t, rp.ID, rp.Origin, Challenge([]byte("x")), flagUP).Signature
			cases := []struct {
				name string
				a    Assertion
				key  crypto.PublicKey
				want error
			}{
				{"another challenge", au.assert(t, rp.ID, rp.Origin, Challenge([]byte("another statement")), flagUP), priv.Public(), ErrChallenge},
				{"another origin", au.assert(t, rp.ID, "https://evil.example", ch, flagUP), priv.Public(), ErrOrigin},
				{"another rp id", au.assert(t, "evil.example", rp.Origin, ch, flagUP), priv.Public(), ErrOrigin},
				{"not present", au.assert(t, rp.ID, rp.Origin, ch, 0), priv.Public(), ErrFlags},
				{"another credential's key", au.assert(t, rp.ID, rp.Origin, ch, flagUP), other.Public(), ErrSignature},
				{"signature of another assertion", tampered, priv.Public(), ErrSignature},
				{"garbage", Assertion{AuthenticatorData: "!!", ClientDataJSON: "e30", Signature: "AA"}, priv.Public(), ErrMalformed},
				{"short auth data", Assertion{AuthenticatorData: Encode(make([]byte, 36)), ClientDataJSON: "e30", Signature: "AA"}, priv.Public(), ErrMalformed},
			}
			for _, c := range cases {
				if _, err := Verify(c.a, c.key, rp, ch); !errors.Is(err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, err, c.want)
				}
			}
		})
	}
	// A registration's client data is not an assertion's.
	au := &authenticator{priv: ec}
	a := au.assert(t, rp.ID, rp.Origin, ch, flagUP)
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": Encode(ch), "origin": rp.Origin})
	a.ClientDataJSON = Encode(cd)
	if _, err := Verify(a, ec.Public(), rp, ch); !errors.Is(err, ErrClientData) {
		t.Errorf("webauthn.create: %v", err)
	}
}

func TestOriginOf(t *testing.T) {
	good := map[string]RP{
		"https://desk.corp.example":      {"desk.corp.example", "https://desk.corp.example"},
		"https://Desk.Corp.Example:443/": {"desk.corp.example", "https://desk.corp.example"},
		"https://desk.corp.example:8443": {"desk.corp.example", "https://desk.corp.example:8443"},
		"http://localhost:8090":          {"localhost", "http://localhost:8090"},
	}
	for in, want := range good {
		if got, err := OriginOf(in); err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"http://desk.corp.example", "https://10.0.0.1", "http://127.0.0.1:8090", "https://desk.corp.example/ui", "ftp://x", "https://u:p@desk.corp.example", ""} {
		if _, err := OriginOf(in); !errors.Is(err, ErrURL) {
			t.Errorf("%q: %v, want ErrURL", in, err)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, k := range []crypto.PublicKey{ec.Public(), pub} {
		pemText, err := PublicKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePublicKey([]byte(pemText)); err != nil {
			t.Errorf("%T: %v", k, err)
		}
	}
	pemText, _ := PublicKeyPEM(p384.Public())
	if _, err := ParsePublicKey([]byte(pemText)); !errors.Is(err, ErrKey) {
		t.Errorf("P-384: %v", err)
	}
}
