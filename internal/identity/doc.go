// Package identity verifies the JWT an agent sends in X-UAPK-On-Behalf-Of
// and says who the agent acts for: the value of one claim (by default
// email) of a token the configured issuer signed for the configured
// audience.
//
// # Tokens
//
// A token is a compact JWS, at most MaxTokenBytes, signed with RS256, ES256
// or EdDSA by a key of the JWK Set. alg none and every HMAC alg are refused
// by the parser before any key is looked up, which is what defeats the
// "HMAC with the RSA public key as the secret" forgery: no code path ever
// uses a published key as an HMAC secret. exp is required; exp, nbf and iat
// are checked with Leeway for clock skew. The kid must name a key of the set
// exactly (a token without kid matches only a key without kid), and that
// key's type fixes the one alg it verifies. Only canonical base64url is
// accepted, so that one signed token has one spelling. The JOSE work is
// go-jose's; this package chooses keys and maps each failure to one
// sentinel error (errors.go) whose text holds nothing from the token.
//
// # Key set
//
// The JWK Set comes from an https URL or a file; plain http is refused,
// also as a redirect target, because whoever can swap the set can name any
// caller. Only RSA keys of 2048 bits or more, EC P-256 and Ed25519 public
// keys are kept; symmetric keys, private keys, other curves and keys whose
// use or alg says otherwise are left out and logged. A set with no usable
// key fails New, and fails a reload without replacing the keys in use.
//
// # Rotation
//
// A token whose kid is not in the set causes one reload, shared by every
// caller that needs it and at most once per RefetchInterval, so that made-up
// kids cannot flood the IdP. A file set is also stat'ed at most once a
// second and reloaded when its identity, mtime or size changes: Kubernetes
// rotates a mounted file by swapping a symlink. An https set older than 15
// minutes is refetched in the background, so that a key the IdP withdrew
// stops verifying. A reload that fails keeps the old keys and logs a
// warning: an IdP outage must not lock every agent out.
package identity
