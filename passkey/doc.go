// Package passkey checks WebAuthn assertions: an approver's passkey
// signing a challenge the proxy chose, here the SHA-256 of the approval
// statement. It imports only the standard library, so that the proxy, the
// bundle verifier and an auditor's own tools (openssl) check the same
// bytes in the same way.
//
// # What an assertion proves
//
// The authenticator signs authenticatorData || SHA-256(clientDataJSON).
// clientDataJSON names the challenge and the origin the browser was on;
// authenticatorData starts with SHA-256 of the relying-party id, then the
// flags (user present, user verified) and a signature counter. Verify
// checks each against what the proxy expects: the statement's hash as the
// challenge, ui.url's origin, ui.url's host as the relying-party id, the
// user-present flag, and the signature with the credential's public key
// (ES256 over P-256, or Ed25519).
//
// # Why not a WebAuthn library here
//
// Checking an assertion against a known key is a few fixed-offset reads
// and one signature check; an auditor must be able to redo it years later
// from the bundle and the documentation alone. The browser ceremonies
// (registration, attestation) are where a library earns its keep, and the
// proxy trusts no attestation: the principals file in Git names each
// credential's public key.
package passkey
