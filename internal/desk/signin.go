package desk

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// Sign-in challenges hold no state until they are used: anyone may ask
// for one (the sign-in page has no session yet), so asking must not grow
// the desk or crowd out a real approver's. A challenge is
//
//	expiry (8 bytes, Unix seconds) || nonce (16) || MAC (16) || principal id
//
// with MAC the first 16 bytes of HMAC-SHA256 under a key made at start,
// over "signin" and the rest, under the Sessions' key (shared by a
// fleet's hubs). Only a challenge answered by the principal's passkey is
// remembered (Sessions.UseSignin), until it expires, so that it is used once.

type signinKeys struct {
	key []byte
}

func newSigninKeys(key []byte) *signinKeys { return &signinKeys{key: key} }

func (k *signinKeys) mac(expiry, nonce []byte, principal string) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte("signin"))
	m.Write(expiry)
	m.Write(nonce)
	m.Write([]byte(principal))
	return m.Sum(nil)[:16]
}

// make returns a fresh sign-in challenge for principal, valid until exp.
func (k *signinKeys) make(principal string, exp time.Time) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(exp.Unix()))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	b = append(b, nonce...)
	b = append(b, k.mac(b[:8], nonce, principal)...)
	b = append(b, principal...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// open checks a challenge the desk made and returns its principal and
// expiry; ok is false for anything else.
func (k *signinKeys) open(ch string, now time.Time) (principal string, exp time.Time, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(ch, "="))
	if err != nil || len(b) < 8+16+16+1 {
		return "", time.Time{}, false
	}
	exp = time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	principal = string(b[40:])
	if !hmac.Equal(b[24:40], k.mac(b[:8], b[8:24], principal)) || !now.Before(exp) {
		return "", time.Time{}, false
	}
	return principal, exp, true
}
