// Package tokens issues and checks the gateway's PASETO v4.public tokens:
// capability tokens, which let exactly one approved request through, and
// override tokens, which let one action skip its approval policy until they
// expire. Both are signed by the gateway key; anyone with
// GET /v1/keys/gateway can check them.
//
// Single use is the approval store's: the approval a capability names is
// marked used in the same unit as the record that used it, so a replay
// fails after a restart too.
package tokens

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"aidanwoods.dev/go-paseto"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Token kinds (the "kind" claim).
const (
	KindCapability = "capability"
	KindOverride   = "override"
)

const issuer = "uapk-proxy"

// Errors a presented token can fail with. Each maps to a 409 reason.
var (
	ErrInvalid = errors.New(string(record.InvalidToken))    // not a token, forged, wrong kind
	ErrExpired = errors.New(string(record.ApprovalExpired)) // past its expiry
	ErrDigest  = errors.New(string(record.DigestMismatch))  // bound to another request
	ErrApp     = errors.New(string(record.AppMismatch))     // bound to another app
	ErrAction  = errors.New(string(record.ActionMismatch))  // bound to another action
	// ErrConsumed: already used once (the approval store says so).
	ErrConsumed = errors.New(string(record.Consumed))
)

// Reason returns the stable reason code of a token error.
func Reason(err error) record.Reason {
	for _, e := range []error{ErrExpired, ErrDigest, ErrApp, ErrAction, ErrConsumed, ErrInvalid} {
		if errors.Is(err, e) {
			return record.Reason(e.Error())
		}
	}
	return record.InvalidToken
}

// Claims are what a token is bound to.
type Claims struct {
	Kind       string // capability | override
	ID         string // unique token id (jti)
	ApprovalID string // the approval (or override approval) that granted it
	Action     string
	App        string
	Digest     string // request digest; capability tokens only
	IssuedAt   time.Time
	Expires    time.Time
}

// Issuer signs tokens with the gateway key.
type Issuer struct {
	secret paseto.V4AsymmetricSecretKey
	public paseto.V4AsymmetricPublicKey
}

// NewIssuer wraps the gateway's Ed25519 key.
func NewIssuer(key ed25519.PrivateKey) (*Issuer, error) {
	sk, err := paseto.NewV4AsymmetricSecretKeyFromEd25519(key)
	if err != nil {
		return nil, fmt.Errorf("gateway key: %w", err)
	}
	return &Issuer{secret: sk, public: sk.Public()}, nil
}

// NewID returns a fresh random token id.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return "tok_" + hex.EncodeToString(b[:])
}

// Issue signs c; c.ID is filled when empty.
func (i *Issuer) Issue(c *Claims) string {
	if c.ID == "" {
		c.ID = NewID()
	}
	t := paseto.NewToken()
	t.SetIssuer(issuer)
	t.SetJti(c.ID)
	t.SetIssuedAt(c.IssuedAt)
	t.SetNotBefore(c.IssuedAt.Add(-time.Minute)) // tolerate a little clock skew between proxies
	t.SetExpiration(c.Expires)
	t.SetString("kind", c.Kind)
	t.SetString("approval_id", c.ApprovalID)
	t.SetString("action", c.Action)
	t.SetString("app", c.App)
	if c.Digest != "" {
		t.SetString("digest", c.Digest)
	}
	return t.V4Sign(i.secret, nil)
}

// PublicKey is the gateway's public key, for GET /v1/keys/gateway.
func (i *Issuer) PublicKey() paseto.V4AsymmetricPublicKey { return i.public }

// Verify checks a presented token's signature, kind and expiry at now and
// returns its claims. Binding to a request is checked by Claims.Bind.
func (i *Issuer) Verify(token, kind string, now time.Time) (*Claims, error) {
	p := paseto.MakeParser([]paseto.Rule{paseto.IssuedBy(issuer)})
	t, err := p.ParseV4Public(i.public, token, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var c Claims
	var errs []error
	get := func(name string) string {
		v, err := t.GetString(name)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	c.Kind, c.ApprovalID, c.Action, c.App = get("kind"), get("approval_id"), get("action"), get("app")
	c.ID, _ = t.GetJti()
	if c.Kind == KindCapability {
		c.Digest = get("digest")
	}
	exp, err := t.GetExpiration()
	if err != nil {
		errs = append(errs, err)
	}
	c.Expires = exp
	c.IssuedAt, _ = t.GetIssuedAt()
	if len(errs) > 0 || c.ID == "" {
		return nil, fmt.Errorf("%w: missing claims", ErrInvalid)
	}
	if c.Kind != kind {
		return nil, fmt.Errorf("%w: a %s token where a %s token is needed", ErrInvalid, c.Kind, kind)
	}
	if !now.Before(c.Expires) {
		return nil, fmt.Errorf("%w: token expired at %s", ErrExpired, c.Expires.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// Bind checks that the token was issued for this app, action and (for a
// capability) request digest.
func (c *Claims) Bind(app, action, digest string) error {
	switch {
	case c.App != app:
		return fmt.Errorf("%w: token is for app %q", ErrApp, c.App)
	case c.Action != action:
		return fmt.Errorf("%w: token is for action %q, the request is %q", ErrAction, c.Action, action)
	case c.Kind == KindCapability && c.Digest != digest:
		return fmt.Errorf("%w: token is for request digest %s", ErrDigest, c.Digest)
	}
	return nil
}
