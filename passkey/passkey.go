package passkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Assertion is a WebAuthn assertion as a decision carries it, each member
// base64url (padding optional).
type Assertion struct {
	CredentialID      string `json:"credential_id"`
	AuthenticatorData string `json:"authenticator_data"`
	ClientDataJSON    string `json:"client_data_json"`
	Signature         string `json:"signature"`
}

// RP is the relying party an assertion must be for: ui.url's host and
// origin.
type RP struct {
	ID     string // host, e.g. desk.corp.example
	Origin string // scheme://host[:port], e.g. https://desk.corp.example
}

// Result is what a verified assertion says beyond its signature.
type Result struct {
	Counter      uint32 // the authenticator's signature counter (0: it keeps none)
	UserVerified bool   // the UV flag: a PIN or biometric, not only presence
}

// Challenge is the challenge of an approval statement: its SHA-256.
func Challenge(statement []byte) []byte {
	sum := sha256.Sum256(statement)
	return sum[:]
}

// Flags in authenticatorData.
const (
	flagUP = 0x01
	flagUV = 0x04
)

// Verify checks a against key for rp and challenge.
func Verify(a Assertion, key crypto.PublicKey, rp RP, challenge []byte) (Result, error) {
	authData, err := decode(a.AuthenticatorData)
	if err != nil {
		return Result{}, fmt.Errorf("%w: authenticator_data is not base64url", ErrMalformed)
	}
	clientJSON, err := decode(a.ClientDataJSON)
	if err != nil {
		return Result{}, fmt.Errorf("%w: client_data_json is not base64url", ErrMalformed)
	}
	sig, err := decode(a.Signature)
	if err != nil {
		return Result{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if len(authData) < 37 {
		return Result{}, fmt.Errorf("%w: authenticator_data is %d bytes, under 37", ErrMalformed, len(authData))
	}
	var cd struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}
	if err := json.Unmarshal(clientJSON, &cd); err != nil {
		return Result{}, fmt.Errorf("%w: client_data_json is not JSON", ErrMalformed)
	}
	if cd.Type != "webauthn.get" {
		return Result{}, fmt.Errorf("%w: client data type %.40q, want webauthn.get", ErrClientData, cd.Type)
	}
	got, err := decode(cd.Challenge)
	if err != nil || !bytes.Equal(got, challenge) {
		return Result{}, fmt.Errorf("%w: the assertion signs another challenge than this statement's SHA-256", ErrChallenge)
	}
	if cd.Origin != rp.Origin || cd.CrossOrigin {
		return Result{}, fmt.Errorf("%w: made on %.100q, want %q", ErrOrigin, cd.Origin, rp.Origin)
	}
	rpHash := sha256.Sum256([]byte(rp.ID))
	if !bytes.Equal(authData[:32], rpHash[:]) {
		return Result{}, fmt.Errorf("%w: authenticator data is for another relying party than %q", ErrOrigin, rp.ID)
	}
	flags := authData[32]
	if flags&flagUP == 0 {
		return Result{}, fmt.Errorf("%w: the user-present flag is not set", ErrFlags)
	}
	clientHash := sha256.Sum256(clientJSON)
	signed := append(append([]byte{}, authData...), clientHash[:]...)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(signed)
		if !ecdsa.VerifyASN1(k, h[:], sig) {
			return Result{}, fmt.Errorf("%w: ES256 signature does not verify", ErrSignature)
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, signed, sig) {
			return Result{}, fmt.Errorf("%w: Ed25519 signature does not verify", ErrSignature)
		}
	default:
		return Result{}, fmt.Errorf("%w: key type %T", ErrKey, key)
	}
	return Result{Counter: binary.BigEndian.Uint32(authData[33:37]), UserVerified: flags&flagUV != 0}, nil
}

// Counter reads an assertion's signature counter without checking it (0
// when its authenticator data cannot be read).
func Counter(a Assertion) uint32 {
	ad, err := decode(a.AuthenticatorData)
	if err != nil || len(ad) < 37 {
		return 0
	}
	return binary.BigEndian.Uint32(ad[33:37])
}

// decode reads base64url with or without padding.
func decode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// Encode is base64url without padding, as WebAuthn writes it.
func Encode(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParsePublicKey reads a credential's public key: a PKIX "PUBLIC KEY" PEM
// block (or its DER) of a P-256 ECDSA or an Ed25519 key.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	der := data
	if blk, _ := pem.Decode(data); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: PEM block %q, want PUBLIC KEY", ErrKey, blk.Type)
		}
		der = blk.Bytes
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA on %s, want P-256", ErrKey, k.Curve.Params().Name)
		}
		return k, nil
	case ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T, want P-256 or Ed25519", ErrKey, k)
}

// PublicKeyPEM writes a credential's key as PKIX PEM.
func PublicKeyPEM(k crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// OriginOf returns the RP of a desk URL: its host as the id, its
// scheme://host[:port] as the origin. Browsers allow passkeys only on
// https, or on http://localhost.
func OriginOf(raw string) (RP, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return RP{}, fmt.Errorf("%w: %q: want scheme://host[:port] with no path", ErrURL, raw)
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (host == "localhost" || strings.HasSuffix(host, ".localhost")):
	default:
		return RP{}, fmt.Errorf("%w: %q: browsers allow passkeys only on https, or on http://localhost", ErrURL, raw)
	}
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return RP{}, fmt.Errorf("%w: %q: a passkey's relying party is a domain name, not an IP address", ErrURL, raw)
	}
	hostport := strings.ToLower(u.Host)
	if p := u.Port(); (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") {
		hostport = host // a browser's origin leaves the default port out
	}
	return RP{ID: host, Origin: u.Scheme + "://" + hostport}, nil
}

// Errors Verify returns, each wrapped with its detail.
var (
	ErrMalformed  = errors.New("malformed assertion")
	ErrClientData = errors.New("client data refused")
	ErrChallenge  = errors.New("challenge mismatch")
	ErrOrigin     = errors.New("origin mismatch")
	ErrFlags      = errors.New("flags refused")
	ErrSignature  = errors.New("assertion signature invalid")
	ErrKey        = errors.New("passkey public key refused")
	ErrURL        = errors.New("ui.url refused")
)
