// Package desk is the approvers' dashboard, served under /ui/ on the admin
// address: sign in with a passkey, see what waits for your roles with the
// whole request shown safely, approve or reject with a passkey assertion
// over the approval statement, look through the history.
//
// # Trust
//
// The principals file stays the one source of who may approve: /ui/enroll
// creates a passkey in the browser and shows the entry to add to that
// file, and trusts nothing it was shown. Signing in checks an assertion
// against the principals' credentials. A session is an HttpOnly,
// SameSite=Strict cookie naming a random id held in memory; every
// state-changing request must also carry the session's CSRF token and come
// from the desk's own origin. A session alone decides nothing: every
// approval or rejection is a fresh assertion whose challenge is the
// SHA-256 of the statement, checked by the approvals service like a
// CLI signature.
//
// # Pages
//
// Server-rendered with html/template, assets embedded, a strict
// Content-Security-Policy on every answer (no inline script or style, no
// other origin). JavaScript is needed only for WebAuthn.
package desk
