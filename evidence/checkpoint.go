package evidence

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// signedHead is a checkpoint note opened and checked: the gateway says the
// chain's record Seq has hash Hash.
type signedHead struct {
	Origin string
	Seq    uint64
	Hash   string // hex
}

var sigLine = regexp.MustCompile(`^\x{2014} (\S+) `)

// openCheckpoint checks that msg is a C2SP signed note by one of pubs under
// the key name equal to its origin line, whose text is a tlog-checkpoint:
// origin, decimal seq, base64 (or hex) of the 32-byte hash; extension lines
// after those three are allowed and ignored. This is the bundle verifier's
// own reading of the format, independent of package checkpoint, which
// wrote it.
func openCheckpoint(msg []byte, pubs ...ed25519.PublicKey) (signedHead, error) {
	var h signedHead
	split := bytes.LastIndex(msg, []byte("\n\n"))
	if split < 0 {
		return h, errors.New("not a signed note: no blank line before the signatures")
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(msg[split+2:]), "\n") {
		if m := sigLine.FindStringSubmatch(line); m != nil {
			names[m[1]] = true
		}
	}
	seen := map[string]bool{}
	var vs []note.Verifier
	for name := range names {
		for _, pub := range pubs {
			if len(pub) != ed25519.PublicKeySize || seen[name+"\x00"+string(pub)] {
				continue
			}
			seen[name+"\x00"+string(pub)] = true
			vkey, err := note.NewEd25519VerifierKey(name, pub)
			if err != nil {
				continue
			}
			v, err := note.NewVerifier(vkey)
			if err != nil {
				continue // not a valid key name
			}
			vs = append(vs, v)
		}
	}
	n, err := note.Open(msg, note.VerifierList(vs...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return h, errors.New("not signed by the gateway key")
		}
		return h, fmt.Errorf("signed note: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return h, fmt.Errorf("checkpoint text has %d lines, want origin, seq and hash", len(lines)-1)
	}
	h.Origin = lines[0]
	signedByOrigin := false
	for _, s := range n.Sigs {
		signedByOrigin = signedByOrigin || s.Name == h.Origin
	}
	if !signedByOrigin {
		return h, fmt.Errorf("checkpoint for origin %q is not signed under that name", h.Origin)
	}
	h.Seq, err = strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(h.Seq, 10) != lines[1] {
		return h, fmt.Errorf("checkpoint size %q is not a decimal seq", lines[1])
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(lines[2]); err == nil && len(b) == 32 {
		h.Hash = hex.EncodeToString(b)
	} else if b, err := hex.DecodeString(lines[2]); err == nil && len(b) == 32 && strings.ToLower(lines[2]) == lines[2] {
		h.Hash = lines[2]
	} else {
		return h, fmt.Errorf("checkpoint hash %q is not 32 bytes in base64", lines[2])
	}
	return h, nil
}

// signHead signs the live head in the archive's checkpoint format
// (package checkpoint), for ranges no archived checkpoint covers yet.
func signHead(app string, head ledger.Head, key ed25519.PrivateKey) ([]byte, string, error) {
	origin := "uapk-proxy/" + app
	if app == "" || strings.ContainsAny(app, "+ \t\r\n") {
		origin = "uapk-proxy"
	}
	b, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: head.Seq, Hash: head.Hash}, key)
	if err != nil {
		return nil, "", fmt.Errorf("head %d: %w", head.Seq, err)
	}
	return b, origin, nil
}
