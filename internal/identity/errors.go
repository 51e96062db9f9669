package identity

import "errors"

// Errors Verify fails with, one per reason a token is refused. Each is
// returned wrapped with fixed words only: nothing of the token (not its kid,
// alg or claims) is ever in an error's text, because callers log errors and
// a token is a bearer credential.
var (
	// ErrMalformed: not a compact JWS carrying a JSON object of claims, or a
	// header this package refuses to honour (crit, b64).
	ErrMalformed = errors.New("malformed token")
	// ErrTooLarge: longer than MaxTokenBytes; refused before any parsing.
	ErrTooLarge = errors.New("token too large")
	// ErrAlgorithm: alg is not RS256, ES256 or EdDSA (so none and every HMAC
	// alg), or does not fit the key the kid names.
	ErrAlgorithm = errors.New("token algorithm refused")
	// ErrUnknownKey: the kid is in no key of the set, even after a refetch.
	ErrUnknownKey = errors.New("token signed by an unknown key")
	// ErrSignature: the signature does not verify with the key the kid names.
	ErrSignature = errors.New("token signature invalid")
	// ErrExpired: exp is past by more than Leeway, or absent (a token that
	// never expires is not accepted).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf or iat is later than now plus Leeway.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrIssuer: iss is not the configured issuer.
	ErrIssuer = errors.New("token issuer mismatch")
	// ErrAudience: aud does not contain the configured audience.
	ErrAudience = errors.New("token audience mismatch")
	// ErrClaim: the caller claim is absent, not a JSON string, or empty.
	ErrClaim = errors.New("token caller claim missing or invalid")
)

// Errors Check and New fail with.
var (
	// ErrConfig: Config.Check found problems; the text lists each one.
	ErrConfig = errors.New("invalid identity config")
	// ErrJWKS: the key set could not be read, fetched or decoded.
	ErrJWKS = errors.New("jwks cannot be loaded")
	// ErrNoKeys: the key set holds no key this package will verify with.
	ErrNoKeys = errors.New("jwks has no usable signing key")
)
