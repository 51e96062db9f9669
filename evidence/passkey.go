package evidence

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// A statement made with a passkey carries, instead of an Ed25519
// signature, the WebAuthn assertion whole (docs/reference.md#checking-a-passkey-decision):
// the authenticator signed authenticator_data || SHA-256(client_data_json),
// client_data_json names the statement's SHA-256 as its challenge and the
// origin the browser was on, and authenticator_data starts with the
// SHA-256 of the relying-party id. The statement also names the relying
// party the proxy required (rp_id, origin, from its signature record), and
// the assertion is checked against those, as the proxy checked it.

// passkeyCred is one passkey of keys/principals.json, read.
type passkeyCred struct {
	id  []byte
	key crypto.PublicKey
}

// readPasskeys parses a principal's webauthn credentials.
func readPasskeys(list []record.PasskeyCredential) ([]passkeyCred, error) {
	var out []passkeyCred
	for i, c := range list {
		id, err := decodeB64URL(c.CredentialID)
		if err != nil || len(id) == 0 {
			return nil, fmt.Errorf("webauthn[%d].credential_id is not base64url", i)
		}
		k, err := keys.ParsePasskey([]byte(c.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("webauthn[%d].public_key: %v", i, err)
		}
		out = append(out, passkeyCred{id: id, key: k})
	}
	return out, nil
}

// errUnknownCredential: the statement names a credential its approver
// did not have.
var errUnknownCredential = errors.New("the credential is none of the approver's passkeys")

// findPasskey returns the key of the credential a statement names.
func findPasskey(creds []passkeyCred, credentialID string) (crypto.PublicKey, error) {
	id, err := decodeB64URL(credentialID)
	if err != nil || len(id) == 0 {
		return nil, fmt.Errorf("credential_id %q is not base64url", credentialID)
	}
	for _, c := range creds {
		if bytes.Equal(c.id, id) {
			return c.key, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", errUnknownCredential, credentialID)
}

// checkAssertion checks a statement's assertion with key, for the relying
// party the statement names, over the SHA-256 of its text.
func checkAssertion(s *Statement, key crypto.PublicKey) error {
	w := s.WebAuthn
	if w.RPID == "" || w.Origin == "" {
		return errors.New("the assertion names no rp_id or origin")
	}
	a := passkey.Assertion{CredentialID: w.CredentialID, AuthenticatorData: w.AuthenticatorData,
		ClientDataJSON: w.ClientDataJSON, Signature: w.Signature}
	_, err := passkey.Verify(a, key, passkey.RP{ID: w.RPID, Origin: w.Origin}, passkey.Challenge([]byte(s.Statement)))
	return err
}

// verifyPasskey is the export's check of a passkey statement against the
// credentials its approver had.
func verifyPasskey(s Statement, list []record.PasskeyCredential) error {
	creds, err := readPasskeys(list)
	if err != nil {
		return err
	}
	key, err := findPasskey(creds, s.WebAuthn.CredentialID)
	if err != nil {
		return err
	}
	return checkAssertion(&s, key)
}

func sameWebAuthn(a, b *record.WebAuthn) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// decodeB64URL reads base64url with or without padding, as WebAuthn and
// the principals file write it.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
