// Package passkeytest is a software authenticator for tests: it makes
// WebAuthn assertions as a browser and a passkey would, with keys it
// generates.
package passkeytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"sync"

	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// Flags of authenticatorData.
const (
	UP = 0x01 // user present
	UV = 0x04 // user verified
)

// Authenticator holds one credential.
type Authenticator struct {
	Priv   crypto.Signer
	CredID []byte

	mu      sync.Mutex
	counter uint32
}

// New makes a credential for alg, "ES256" (P-256) or "EdDSA" (Ed25519).
func New(alg string) *Authenticator {
	var priv crypto.Signer
	if alg == "EdDSA" {
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	} else {
		priv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &Authenticator{Priv: priv, CredID: id}
}

// CredentialID is the credential id in base64url, as a principals file
// writes it.
func (a *Authenticator) CredentialID() string { return passkey.Encode(a.CredID) }

// PublicKeyPEM is the credential's public key, as a principals file writes
// it.
func (a *Authenticator) PublicKeyPEM() string {
	s, _ := passkey.PublicKeyPEM(a.Priv.Public())
	return s
}

// Assert signs challenge for rp, user present and verified, the counter
// one higher than before.
func (a *Authenticator) Assert(rp passkey.RP, challenge []byte) passkey.Assertion {
	return a.AssertWith(rp.ID, rp.Origin, challenge, UP|UV, 0)
}

// AssertWith signs with every part chosen: counter 0 takes the next one.
func (a *Authenticator) AssertWith(rpID, origin string, challenge []byte, flags byte, counter uint32) passkey.Assertion {
	a.mu.Lock()
	if counter == 0 {
		a.counter++
		counter = a.counter
	}
	a.mu.Unlock()
	return a.AssertCounter(rpID, origin, challenge, flags, counter)
}

// AssertCounter signs with exactly this counter, 0 included (an
// authenticator that keeps none, or a clone that claims so).
func (a *Authenticator) AssertCounter(rpID, origin string, challenge []byte, flags byte, counter uint32) passkey.Assertion {
	cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": passkey.Encode(challenge), "origin": origin, "crossOrigin": false})
	rp := sha256.Sum256([]byte(rpID))
	ad := append(rp[:], flags)
	ad = binary.BigEndian.AppendUint32(ad, counter)
	ch := sha256.Sum256(cd)
	signed := append(append([]byte{}, ad...), ch[:]...)
	var sig []byte
	switch k := a.Priv.(type) {
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(signed)
		sig, _ = ecdsa.SignASN1(rand.Reader, k, h[:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, signed)
	}
	return passkey.Assertion{CredentialID: passkey.Encode(a.CredID), AuthenticatorData: passkey.Encode(ad),
		ClientDataJSON: passkey.Encode(cd), Signature: passkey.Encode(sig)}
}
