package checkpoint

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a signed statement of a chain's head: the seq of its last
// record and that record's hash.
type Checkpoint struct {
	Origin string // e.g. "uapk-proxy/erp-agent"
	Size   uint64 // seq of the last record covered
	Hash   string // hex hash of that record
}

// Body is the note text the signature covers.
func (c Checkpoint) Body() (string, error) {
	b, err := decodeHash(c.Hash)
	if err != nil {
		return "", fmt.Errorf("checkpoint hash: %w", err)
	}
	if !ValidOrigin(c.Origin) {
		return "", fmt.Errorf("checkpoint origin %q: not a valid key name", c.Origin)
	}
	return c.Origin + "\n" + strconv.FormatUint(c.Size, 10) + "\n" +
		base64.StdEncoding.EncodeToString(b) + "\n", nil
}

// ValidOrigin reports whether s can be an origin line and a signed-note key
// name: not empty, no spaces, no '+', no surrounding space.
func ValidOrigin(s string) bool {
	return s != "" && !strings.ContainsAny(s, "+ \t\r\n") && strings.TrimSpace(s) == s
}

// decodeHash accepts only the form records carry: 64 lower-case hex digits.
func decodeHash(s string) ([]byte, error) {
	if len(s) != 64 || strings.ToLower(s) != s {
		return nil, fmt.Errorf("want 64 lower-case hex digits, got %q", s)
	}
	return hex.DecodeString(s)
}

// Sign returns the signed note of c, signed by key under the key name
// c.Origin. Ed25519 is deterministic: the same checkpoint and key give the
// same bytes, which is what lets a re-upload after a crash be recognised
// as the same object.
func Sign(c Checkpoint, key ed25519.PrivateKey) ([]byte, error) {
	body, err := c.Body()
	if err != nil {
		return nil, err
	}
	s, err := newSigner(c.Origin, key)
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: body}, s)
}

// signer is a note.Signer over a raw Ed25519 key. Its key hash is the one
// the note package derives for the verifier key, so the two always agree.
type signer struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func newSigner(name string, key ed25519.PrivateKey) (*signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("checkpoint signer: not an Ed25519 private key")
	}
	vkey, err := VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint signer %q: %w", name, err)
	}
	return &signer{name: name, hash: v.KeyHash(), key: key}, nil
}

func (s *signer) Name() string                    { return s.name }
func (s *signer) KeyHash() uint32                 { return s.hash }
func (s *signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// VerifierKey is the signed-note verifier key ("name+hash+key") for
// checkpoints signed by pub under name; give it to auditors.
func VerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	if !ValidOrigin(name) {
		return "", fmt.Errorf("checkpoint key name %q: not a valid key name", name)
	}
	return note.NewEd25519VerifierKey(name, pub)
}

// Open checks that msg is a checkpoint for origin signed by one of pubs
// (any one suffices: the gateway key may have been replaced since) and
// returns it. It is strict: exactly the three lines Sign writes.
func Open(msg []byte, origin string, pubs ...ed25519.PublicKey) (Checkpoint, error) {
	var vs []note.Verifier
	for _, pub := range pubs {
		vkey, err := VerifierKey(origin, pub)
		if err != nil {
			return Checkpoint{}, err
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return Checkpoint{}, err
		}
		vs = append(vs, v)
	}
	n, err := note.Open(msg, note.VerifierList(vs...))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	return parse(n.Text, origin)
}

func parse(text, origin string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("checkpoint: want 3 lines, got %q", text)
	}
	if lines[0] != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", lines[0], origin)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint size %q is not a decimal integer", lines[1])
	}
	b, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(b) != 32 {
		return Checkpoint{}, fmt.Errorf("checkpoint hash %q is not base64 of 32 bytes", lines[2])
	}
	return Checkpoint{Origin: lines[0], Size: size, Hash: hex.EncodeToString(b)}, nil
}
