package ledger

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

// Checkpoint is a signed statement of the chain's head, in the C2SP
// tlog-checkpoint layout (https://c2sp.org/tlog-checkpoint) wrapped in a
// C2SP signed note (https://c2sp.org/signed-note):
//
//	<origin>\n
//	<size: the last seq, decimal>\n
//	<base64 (std, padded) of the 32 bytes of that record's hash>\n
//	\n
//	— <origin> <base64 of key hash (4 bytes) || Ed25519 signature>\n
//
// The hash is base64 as tlog-checkpoint requires, not the hex used in
// records: base64.StdEncoding.DecodeString of line 3, hex-encoded, is the
// record's "hash". The chain is not a Merkle tree, so "root hash" here is
// simply the head hash, which commits to every record before it. There are
// no extension lines. The key name is the origin, and the signer is the
// gateway's Ed25519 key, so any signed-note tool can check it with the
// verifier key from CheckpointVerifierKey.
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
	if !validOrigin(c.Origin) {
		return "", fmt.Errorf("checkpoint origin %q: not a valid key name", c.Origin)
	}
	return c.Origin + "\n" + strconv.FormatUint(c.Size, 10) + "\n" +
		base64.StdEncoding.EncodeToString(b) + "\n", nil
}

func validOrigin(s string) bool {
	return s != "" && !strings.ContainsAny(s, "+ \t\r\n") && strings.TrimSpace(s) == s
}

// SignCheckpoint returns the signed note of c, signed by key under the key
// name c.Origin. Ed25519 is deterministic: the same checkpoint and key give
// the same bytes, which is what lets a re-upload after a crash be recognised
// as the same object.
func SignCheckpoint(c Checkpoint, key ed25519.PrivateKey) ([]byte, error) {
	body, err := c.Body()
	if err != nil {
		return nil, err
	}
	s, err := noteSigner(c.Origin, key)
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: body}, s)
}

// noteSigner makes a note.Signer from a raw Ed25519 key. The note package
// only takes its own encoded form ("PRIVATE+KEY+name+hash+base64(1||seed)"),
// so build that, taking the key hash from the verifier key it derives itself.
func noteSigner(name string, key ed25519.PrivateKey) (note.Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("checkpoint signer: not an Ed25519 private key")
	}
	vkey, err := CheckpointVerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	// name+hash+key: a valid name has no '+', but the key is standard
	// base64, which may contain '+'.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("checkpoint signer: unexpected verifier key %q", vkey)
	}
	seed := append([]byte{1}, key.Seed()...) // 1: the signed-note Ed25519 algorithm byte
	return note.NewSigner("PRIVATE+KEY+" + name + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(seed))
}

// CheckpointVerifierKey is the signed-note verifier key ("name+hash+key")
// for checkpoints signed by pub under name; give it to auditors.
func CheckpointVerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	if !validOrigin(name) {
		return "", fmt.Errorf("checkpoint key name %q: not a valid key name", name)
	}
	return note.NewEd25519VerifierKey(name, pub)
}

// OpenCheckpoint checks that msg is a checkpoint for origin signed by one of
// pubs (any one suffices: the gateway key may have been replaced since) and
// returns it. It is strict: exactly the three lines SignCheckpoint writes.
func OpenCheckpoint(msg []byte, origin string, pubs ...ed25519.PublicKey) (Checkpoint, error) {
	var vs []note.Verifier
	for _, pub := range pubs {
		vkey, err := CheckpointVerifierKey(origin, pub)
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
	return parseCheckpoint(n.Text, origin)
}

func parseCheckpoint(text, origin string) (Checkpoint, error) {
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
