// Package keys reads and writes the Ed25519 keys of approvers and of the
// gateway: private keys as PKCS#8 PEM (mode 0600), public keys as PKIX PEM.
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"filippo.io/edwards25519"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// ErrNotEd25519 is returned for a PEM key of another algorithm.
var ErrNotEd25519 = errors.New("not an Ed25519 key")

// ErrUnsafeKey is returned for an Ed25519 public key that is not a
// canonically encoded curve point of large order. crypto/ed25519 verifies
// with such keys, and with a small-order one anybody can make a signature
// that verifies, without any private key.
var ErrUnsafeKey = errors.New("unsafe Ed25519 public key")

// Generate returns a new key pair from crypto/rand.
func Generate() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// PrivatePEM encodes k as a PKCS#8 "PRIVATE KEY" block.
func PrivatePEM(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PublicPEM encodes k as a PKIX "PUBLIC KEY" block.
func PublicPEM(k ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivate decodes a PKCS#8 PEM Ed25519 private key.
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("want a PEM \"PRIVATE KEY\" block (PKCS#8)")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, ErrNotEd25519
	}
	return ek, nil
}

// ParsePublic decodes exactly one PKIX PEM Ed25519 public key, the one
// parser every reader of public keys uses (the principals file, bundles).
// Its errors say what was given instead, and never quote it: someone may
// point it at a private key. A key CheckPublic refuses is refused.
func ParsePublic(data []byte) (ed25519.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New(`no PEM block found (want a PKIX "PUBLIC KEY" PEM, as written by keygen to PREFIX.pub)`)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("data after the PEM block (want exactly one PUBLIC KEY block)")
	}
	if strings.Contains(block.Type, "PRIVATE KEY") {
		return nil, fmt.Errorf("is a private key (%s); give the public key (PREFIX.pub from keygen) and keep the private key secret", block.Type)
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf(`PEM block is %q, want "PUBLIC KEY"`, block.Type)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %v", err)
	}
	switch ek := k.(type) {
	case ed25519.PublicKey:
		if err := CheckPublic(ek); err != nil {
			return nil, err
		}
		return ek, nil
	case *rsa.PublicKey:
		return nil, notEd25519("an RSA")
	case *ecdsa.PublicKey:
		return nil, notEd25519("an ECDSA")
	default:
		return nil, notEd25519(fmt.Sprintf("a %T", k))
	}
}

// CheckPublic returns an error (ErrUnsafeKey) unless k is the canonical
// encoding (RFC 8032 section 5.1.2) of a point on edwards25519 whose order
// is not small. crypto/ed25519 checks neither: it decodes y >= p and a
// negative zero x, and a small-order key (the all-zero key is one) lets
// anybody forge: with A of order 1, 2, 4 or 8, the signature R = identity,
// S = 0 verifies for every message whose hash k is a multiple of A's order.
//
// Decoding is edwards25519's Point.SetBytes, which accepts non-canonical
// encodings; canonical means the point encodes back to the same bytes.
// Small order means the point times the cofactor 8 is the identity.
// Points of mixed order (a small-order part plus a large one) pass: a
// signer still needs the private key of the large part.
func CheckPublic(k ed25519.PublicKey) error {
	if len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrUnsafeKey, len(k), ed25519.PublicKeySize)
	}
	pt, err := new(edwards25519.Point).SetBytes(k)
	if err != nil {
		return fmt.Errorf("%w: not a point on the curve", ErrUnsafeKey)
	}
	if !bytes.Equal(pt.Bytes(), k) {
		return fmt.Errorf("%w: not the canonical encoding of its point (RFC 8032 section 5.1.3)", ErrUnsafeKey)
	}
	if new(edwards25519.Point).MultByCofactor(pt).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: a small-order point, with which anybody can make signatures that verify; make a key pair with keygen", ErrUnsafeKey)
	}
	return nil
}

// notEd25519 names the algorithm a key has instead; it is ErrNotEd25519.
type notEd25519 string

func (e notEd25519) Error() string        { return "is " + string(e) + " key, want Ed25519" }
func (e notEd25519) Is(target error) bool { return target == ErrNotEd25519 }

// WritePair writes prefix.key (0600) and prefix.pub (0644). It refuses to
// overwrite an existing key: losing a signing key is not undoable.
func WritePair(prefix string, pub ed25519.PublicKey, priv ed25519.PrivateKey) error {
	privPEM, err := PrivatePEM(priv)
	if err != nil {
		return err
	}
	pubPEM, err := PublicPEM(pub)
	if err != nil {
		return err
	}
	if err := writeNew(prefix+".key", privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(prefix+".pub", pubPEM, 0o644); err != nil {
		// Take back the key just made: left beside another .pub it would
		// look like a pair and sign what that .pub cannot verify.
		os.Remove(prefix + ".key")
		return err
	}
	return nil
}

// LoadPrivateFile reads a private key and refuses one that others can read.
// A public key given in its place is named as such before its mode is
// judged: PREFIX.pub is 0644 by design, and telling its owner to chmod it
// would send them the wrong way.
func LoadPrivateFile(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	data, err := fsutil.ReadRegular(path, 64<<10)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: is a public key (PUBLIC KEY), not a private key: give the private key (PREFIX.key from keygen); the .pub goes in the principals file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: private key is readable by others (mode %#o); chmod 600 it", path, st.Mode().Perm())
	}
	k, err := ParsePrivate(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreate returns the key at path, creating it (0600) on first use.
// The gateway key is made this way in the data dir on first start.
func LoadOrCreate(path string) (ed25519.PrivateKey, bool, error) {
	k, err := LoadPrivateFile(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := Generate()
	if err != nil {
		return nil, false, err
	}
	pemBytes, err := PrivatePEM(priv)
	if err != nil {
		return nil, false, err
	}
	if err := writeNew(path, pemBytes, 0o600); err != nil {
		return nil, false, err
	}
	return priv, true, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	err := fsutil.WriteNew(path, data, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite a key", path)
	}
	return err
}

// ParsePasskey reads a passkey's public key (passkey.ParsePublicKey: PKIX
// PEM or DER of a P-256 or Ed25519 key) and refuses an Ed25519 key anybody
// could sign for (CheckPublic), as for an approver's CLI key: with the
// identity point as the key, R = identity and S = 0 verify over anything.
func ParsePasskey(data []byte) (crypto.PublicKey, error) {
	k, err := passkey.ParsePublicKey(data)
	if err != nil {
		return nil, err
	}
	if ed, ok := k.(ed25519.PublicKey); ok {
		if err := CheckPublic(ed); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Identity is the bytes that name a public key whatever it serves as (a
// CLI key or a passkey's): the raw key for Ed25519, the PKIX DER
// otherwise. Two principals must never share one.
func Identity(k crypto.PublicKey) string {
	if ed, ok := k.(ed25519.PublicKey); ok {
		return "ed25519:" + string(ed)
	}
	der, _ := x509.MarshalPKIXPublicKey(k)
	return "pkix:" + string(der)
}
