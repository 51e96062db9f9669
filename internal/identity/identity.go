package identity

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"
)

const (
	// MaxTokenBytes bounds a token; a longer header value is refused before
	// it is parsed. Real ID tokens are 1–2 KiB.
	MaxTokenBytes = 8 << 10
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 60 * time.Second
	// RefetchInterval is the least time between two key set reloads caused
	// by an unknown kid, so that tokens with made-up kids cannot turn the
	// proxy into a load generator against the IdP.
	RefetchInterval = 30 * time.Second
	// fileCheckInterval is how often a file key set is stat'ed for a change.
	fileCheckInterval = time.Second
	// staleAfter is the age after which an https key set is refetched in the
	// background, so a key the IdP withdrew stops verifying without a restart.
	staleAfter = 15 * time.Minute
)

// algorithms are the only ones a token may name. Every HMAC alg is left out
// on purpose: with a public key set, an HMAC "verification" would use a
// public value as the secret, and anyone could sign.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// Caller is who a verified token says the agent acts for.
type Caller struct {
	ID      string // the configured claim's value
	Subject string // sub
	JTI     string // jti ("" if absent)
	Issuer  string
	KeyID   string
	Alg     string
	Expiry  time.Time
}

// Verifier checks tokens against one key set. Safe for concurrent use.
type Verifier struct {
	issuer   string
	audience string
	claim    string
	now      func() time.Time
	log      zerolog.Logger
	client   *http.Client
	url      string // set for an https key set
	path     string // set for a file key set
	source   string // url (redacted) or path, for logs and errors

	keys atomic.Pointer[keySet]

	mu          sync.Mutex
	flight      *flight   // the reload under way, if any
	lastRefetch time.Time // last reload for an unknown kid
	lastLoad    time.Time // last reload of any kind (for staleAfter)
	lastStat    time.Time // last stat of a file key set
	stamp       fileStamp // the file as last read
	statFailing bool      // the file could not be stat'ed last time (log once)
}

// flight is one reload; every caller that needs it waits on done.
type flight struct{ done chan struct{} }

// New loads the key set (reads the file, or fetches the URL once) and fails
// if it cannot be loaded or has no usable signing key.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	v := &Verifier{
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		claim:    cfg.Claim,
		now:      cfg.Now,
		log:      cfg.Logger,
	}
	if v.claim == "" {
		v.claim = DefaultClaim
	}
	if v.now == nil {
		v.now = time.Now
	}
	if isURL(cfg.JWKS) {
		v.url = cfg.JWKS
		u, _ := url.Parse(cfg.JWKS) // Check parsed it
		v.source = u.Redacted()
		client := cfg.HTTPClient
		if client == nil {
			client = defaultClient()
		}
		v.client = httpsOnly(client)
	} else {
		v.path = cfg.JWKS
		v.source = cfg.JWKS
	}
	now := v.now()
	v.lastLoad, v.lastStat = now, now
	if err := v.load(ctx, "start"); err != nil {
		return nil, err
	}
	return v, nil
}

// Verify checks one token and returns its caller. In order:
//
//  1. at most MaxTokenBytes long (ErrTooLarge), before any parsing;
//  2. a compact JWS in canonical base64url (ErrMalformed) whose alg is
//     RS256, ES256 or EdDSA (ErrAlgorithm), without crit or b64 headers
//     (ErrMalformed);
//  3. a kid in the key set (ErrUnknownKey), after at most one shared
//     refetch per RefetchInterval, and whose key is of that alg
//     (ErrAlgorithm);
//  4. a signature that verifies with that key (ErrSignature), over a JSON
//     object of claims (ErrMalformed);
//  5. iss equal to the issuer (ErrIssuer), aud containing the audience
//     (ErrAudience), nbf not after now+Leeway (ErrNotYetValid), exp present
//     and not before now-Leeway (ErrExpired), iat not after now+Leeway
//     (ErrNotYetValid);
//  6. the caller claim a non-empty JSON string (ErrClaim).
//
// ctx bounds only the wait for a key set reload another caller started.
func (v *Verifier) Verify(ctx context.Context, token string) (Caller, error) {
	if len(token) > MaxTokenBytes {
		return Caller{}, fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxTokenBytes)
	}
	if !canonical(token) {
		return Caller{}, fmt.Errorf("%w: not three canonical base64url parts", ErrMalformed)
	}
	v.checkSource(ctx)

	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		// The library's own error text quotes parts of the token, so it is
		// translated, never wrapped.
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return Caller{}, fmt.Errorf("%w: want RS256, ES256 or EdDSA", ErrAlgorithm)
		}
		return Caller{}, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	if len(tok.Headers) != 1 {
		return Caller{}, fmt.Errorf("%w: want exactly one signature", ErrMalformed)
	}
	h := tok.Headers[0]
	// A JWT never needs these (RFC 7797 §7), and honouring b64=false would
	// change what the signature covers.
	for _, name := range []jose.HeaderKey{"crit", "b64"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return Caller{}, fmt.Errorf("%w: crit and b64 headers are refused", ErrMalformed)
		}
	}
	alg := jose.SignatureAlgorithm(h.Algorithm)

	key, err := v.key(ctx, h.KeyID, alg)
	if err != nil {
		return Caller{}, err
	}

	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(key.key, &std, &all); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return Caller{}, fmt.Errorf("%w: does not verify with the key its kid names", ErrSignature)
		}
		return Caller{}, fmt.Errorf("%w: claims are not a valid JSON object", ErrMalformed)
	}

	expected := jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: v.now()}
	if err := std.ValidateWithLeeway(expected, Leeway); err != nil {
		return Caller{}, translateClaimsError(err)
	}
	if std.Expiry == nil {
		return Caller{}, fmt.Errorf("%w: no exp claim", ErrExpired)
	}

	id, ok := all[v.claim].(string)
	if !ok || id == "" {
		return Caller{}, fmt.Errorf("%w: %s must be a non-empty string", ErrClaim, v.claim)
	}
	return Caller{
		ID:      id,
		Subject: std.Subject,
		JTI:     std.ID,
		Issuer:  std.Issuer,
		KeyID:   h.KeyID,
		Alg:     h.Algorithm,
		Expiry:  std.Expiry.Time(),
	}, nil
}

// canonical reports whether a token is three dot-separated parts of
// canonical unpadded base64url. go-jose's decoder skips CR and LF and
// accepts non-zero trailing bits, and since the signature covers the
// re-encoded payload, such variants of a genuine token would verify too:
// one signed token would have many spellings, which defeats anyone who
// counts or deduplicates tokens by their text.
func canonical(token string) bool {
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	for _, p := range parts {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil {
			return false
		}
	}
	return true
}

func translateClaimsError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return fmt.Errorf("%w: iss is not the configured issuer", ErrIssuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return fmt.Errorf("%w: aud does not contain the configured audience", ErrAudience)
	case errors.Is(err, jwt.ErrExpired):
		return fmt.Errorf("%w: exp is past, beyond the leeway", ErrExpired)
	case errors.Is(err, jwt.ErrNotValidYet):
		return fmt.Errorf("%w: nbf is in the future, beyond the leeway", ErrNotYetValid)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return fmt.Errorf("%w: iat is in the future, beyond the leeway", ErrNotYetValid)
	}
	return fmt.Errorf("%w: claims cannot be validated", ErrMalformed)
}

// key finds the key for kid and alg, refetching the set once if the kid is
// unknown: a new kid usually means the IdP rotated in a key since the set
// was loaded.
func (v *Verifier) key(ctx context.Context, kid string, alg jose.SignatureAlgorithm) (verifyKey, error) {
	k, known, ok := v.keys.Load().lookup(kid, alg)
	if ok {
		return k, nil
	}
	if known {
		return verifyKey{}, fmt.Errorf("%w: the key its kid names is for another algorithm", ErrAlgorithm)
	}
	if err := v.refetchForKID(ctx, kid); err != nil {
		return verifyKey{}, fmt.Errorf("%w: waiting for the key set: %w", ErrUnknownKey, err)
	}
	k, known, ok = v.keys.Load().lookup(kid, alg)
	switch {
	case ok:
		return k, nil
	case known:
		return verifyKey{}, fmt.Errorf("%w: the key its kid names is for another algorithm", ErrAlgorithm)
	}
	return verifyKey{}, fmt.Errorf("%w: kid not in the key set", ErrUnknownKey)
}

// refetchForKID joins the reload under way, or starts one unless the last
// one for an unknown kid is less than RefetchInterval old. It returns once
// that reload is done (or ctx is), nil also when throttled.
func (v *Verifier) refetchForKID(ctx context.Context, kid string) error {
	v.mu.Lock()
	f := v.flight
	if f == nil {
		now := v.now()
		if since := now.Sub(v.lastRefetch); !v.lastRefetch.IsZero() && since >= 0 && since < RefetchInterval {
			v.mu.Unlock()
			return nil
		}
		v.lastRefetch = now
		v.log.Info().Str("jwks", v.source).Str("kid", logSafe(kid)).Msg("unknown kid; reloading the key set")
		f = v.startLocked("unknown kid")
	}
	v.mu.Unlock()
	return wait(ctx, f)
}

// checkSource notices a changed key file (stat at most once per
// fileCheckInterval; a change is reloaded before this token is checked) and
// an https set older than staleAfter (refetched in the background).
func (v *Verifier) checkSource(ctx context.Context) {
	now := v.now()
	v.mu.Lock()
	if v.flight != nil {
		v.mu.Unlock()
		return
	}
	if v.url != "" {
		if now.Sub(v.lastLoad) >= staleAfter {
			v.startLocked("stale")
		}
		v.mu.Unlock()
		return
	}
	if since := now.Sub(v.lastStat); since >= 0 && since < fileCheckInterval {
		v.mu.Unlock()
		return
	}
	v.lastStat = now
	v.mu.Unlock()

	fi, err := os.Stat(v.path)

	v.mu.Lock()
	if err != nil {
		if !v.statFailing {
			v.log.Warn().Str("jwks", v.source).Err(err).Msg("jwks file cannot be stat'ed; keeping the keys in use")
		}
		v.statFailing = true
		v.mu.Unlock()
		return
	}
	v.statFailing = false
	var f *flight
	if !v.stamp.same(fi) {
		if f = v.flight; f == nil {
			f = v.startLocked("file changed")
		}
	}
	v.mu.Unlock()
	if f != nil {
		_ = wait(ctx, f)
	}
}

// startLocked starts a reload; v.mu must be held. The reload runs on its
// own goroutine with its own deadline, so a caller that gives up does not
// cancel it for the others waiting.
func (v *Verifier) startLocked(reason string) *flight {
	f := &flight{done: make(chan struct{})}
	v.flight = f
	v.lastLoad = v.now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		_ = v.load(ctx, reason) // load logs its failure and keeps the old keys
		cancel()
		v.mu.Lock()
		v.flight = nil
		v.mu.Unlock()
		close(f.done)
	}()
	return f
}

func wait(ctx context.Context, f *flight) error {
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logSafe bounds what of a kid reaches the log: it comes from the token's
// header, so anyone can make it long.
func logSafe(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max]
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}
