package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// maxJWKSBytes bounds a key set body: real sets are a few KiB, and an
	// endpoint that streams forever must not exhaust memory.
	maxJWKSBytes = 1 << 20
	// fetchTimeout bounds one read or fetch of the key set.
	fetchTimeout = 10 * time.Second
	// minRSABits and maxRSABits bound RSA keys: below 2048 is breakable, and
	// above 16384 only makes each verification slow.
	minRSABits = 2048
	maxRSABits = 16384
)

// verifyKey is one usable key of the set: a public key and the one
// algorithm it verifies, fixed by its type (and by the JWK's alg, if given).
type verifyKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.PublicKey
}

// keySet is an immutable snapshot of the usable keys, swapped whole on a
// reload so that Verify reads it without a lock.
type keySet struct {
	byKID map[string][]verifyKey // a kid may name one key per algorithm
	n     int
}

// lookup finds the key for a kid and alg. known reports whether the kid is
// in the set at all, so that a known kid with the wrong alg is an algorithm
// problem rather than a reason to refetch.
func (s *keySet) lookup(kid string, alg jose.SignatureAlgorithm) (k verifyKey, known, ok bool) {
	keys, known := s.byKID[kid]
	for _, k := range keys {
		if k.alg == alg {
			return k, true, true
		}
	}
	return verifyKey{}, known, false
}

// kids lists the key ids, sorted, for the log.
func (s *keySet) kids() []string {
	out := make([]string, 0, len(s.byKID))
	for kid := range s.byKID {
		out = append(out, kid)
	}
	sort.Strings(out)
	return out
}

// parseSet decodes a JWK Set and keeps the keys this package verifies with.
// Each key is decoded on its own: RFC 7517 §5 says to ignore keys one does
// not understand, and one odd key must not make the whole set unusable.
// ignored says why each other key was left out.
func parseSet(body []byte) (set *keySet, ignored []string, err error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, nil, fmt.Errorf("not a JWK set: %w", err)
	}
	if raw.Keys == nil {
		return nil, nil, errors.New("not a JWK set: no \"keys\" array")
	}
	set = &keySet{byKID: map[string][]verifyKey{}}
	for i, rk := range raw.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(rk); err != nil {
			ignored = append(ignored, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		k, why := usable(jwk)
		if why != "" {
			ignored = append(ignored, fmt.Sprintf("key %d (kid %q): %s", i, jwk.KeyID, why))
			continue
		}
		if _, _, dup := set.lookup(k.kid, k.alg); dup {
			// Two keys for one (kid, alg) would make the kid ambiguous.
			ignored = append(ignored, fmt.Sprintf("key %d (kid %q): a key with this kid and alg came earlier", i, jwk.KeyID))
			continue
		}
		set.byKID[k.kid] = append(set.byKID[k.kid], k)
		set.n++
	}
	return set, ignored, nil
}

// usable turns a JWK into a verifyKey, or says why it cannot be one.
func usable(jwk jose.JSONWebKey) (verifyKey, string) {
	if jwk.Use != "" && jwk.Use != "sig" {
		return verifyKey{}, fmt.Sprintf("use %q is not sig", jwk.Use)
	}
	var alg jose.SignatureAlgorithm
	switch key := jwk.Key.(type) {
	case *rsa.PublicKey:
		if bits := key.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return verifyKey{}, fmt.Sprintf("RSA key of %d bits (want %d to %d)", bits, minRSABits, maxRSABits)
		}
		alg = jose.RS256
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() {
			return verifyKey{}, fmt.Sprintf("EC curve %s (want P-256)", key.Curve.Params().Name)
		}
		alg = jose.ES256
	case ed25519.PublicKey:
		alg = jose.EdDSA
	case []byte:
		// An HMAC secret in a published set is either a leak or an invitation
		// to sign tokens with it; neither is a verification key.
		return verifyKey{}, "symmetric (oct) key refused"
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		// A set that publishes a private key has leaked it: anyone can sign.
		return verifyKey{}, "private key material refused"
	default:
		return verifyKey{}, fmt.Sprintf("key type %T not accepted", key)
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(alg) {
		return verifyKey{}, fmt.Sprintf("alg %q not accepted for this key (want %s)", jwk.Algorithm, alg)
	}
	return verifyKey{kid: jwk.KeyID, alg: alg, key: jwk.Key}, ""
}

// fileStamp is what tells a changed key file: Kubernetes replaces a mounted
// file by swapping a symlink, so the file identity changes as well as (or
// instead of) its mtime and size.
type fileStamp struct {
	info os.FileInfo
}

func (s fileStamp) same(fi os.FileInfo) bool {
	if s.info == nil || fi == nil {
		return false
	}
	return os.SameFile(s.info, fi) && s.info.ModTime().Equal(fi.ModTime()) && s.info.Size() == fi.Size()
}

// read returns the key set's bytes, and for a file the stamp taken when it
// was opened (so a write that lands after the read shows as a change).
func (v *Verifier) read(ctx context.Context) ([]byte, fileStamp, error) {
	if v.url != "" {
		body, err := v.fetch(ctx)
		return body, fileStamp{}, err
	}
	f, err := os.Open(v.path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStamp{}, err
	}
	body, err := readBounded(f)
	return body, fileStamp{info: fi}, err
}

func (v *Verifier) fetch(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return readBounded(resp.Body)
}

func readBounded(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxJWKSBytes)
	}
	return body, nil
}

// load reads and decodes the key set. On success the new keys replace the
// old; on any failure, including a set with no usable key, the old keys
// stay: a broken IdP or a half-written file must not lock every agent out.
func (v *Verifier) load(ctx context.Context, reason string) error {
	body, stamp, err := v.read(ctx)
	if stamp.info != nil {
		v.mu.Lock()
		v.stamp = stamp
		v.mu.Unlock()
	}
	if err != nil {
		err = fmt.Errorf("%w: %s: %v", ErrJWKS, v.source, err)
		v.log.Warn().Str("jwks", v.source).Str("reason", reason).Err(err).Msg("jwks load failed; keeping the keys in use")
		return err
	}
	set, ignored, err := parseSet(body)
	if err != nil {
		err = fmt.Errorf("%w: %s: %v", ErrJWKS, v.source, err)
		v.log.Warn().Str("jwks", v.source).Str("reason", reason).Err(err).Msg("jwks load failed; keeping the keys in use")
		return err
	}
	for _, why := range ignored {
		v.log.Warn().Str("jwks", v.source).Str("key", why).Msg("jwks key ignored")
	}
	if set.n == 0 {
		err = fmt.Errorf("%w: %s (%d keys, none RSA >= %d bits, EC P-256 or Ed25519)", ErrNoKeys, v.source, len(ignored), minRSABits)
		v.log.Warn().Str("jwks", v.source).Str("reason", reason).Err(err).Msg("jwks load failed; keeping the keys in use")
		return err
	}
	v.keys.Store(set)
	v.log.Info().Str("jwks", v.source).Str("reason", reason).Int("keys", set.n).Strs("kids", set.kids()).Msg("jwks loaded")
	return nil
}
