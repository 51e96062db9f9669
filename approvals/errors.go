package approvals

import (
	"errors"

	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// Sentinel errors. Match them with errors.Is: they are usually wrapped with
// the approval id.
var (
	// ErrNotFound is returned when no approval has the given id.
	ErrNotFound = errors.New("approval not found")

	// ErrBadStatus is returned when a status filter is not one of the Status values.
	ErrBadStatus = errors.New("status must be pending, approved, rejected or expired")

	// ErrConsumed is returned by Store.Consume when the approval, or its
	// token, has let a request through already: an approval is used once.
	ErrConsumed = tokens.ErrConsumed

	// ErrNotApproved is returned by Store.Consume when the approval is not
	// approved under the token presented (pending, rejected, expired, or
	// approved with another token).
	ErrNotApproved = errors.New(string(record.NotApproved))

	// ErrOverrideExhausted is returned by Store.UseOverride when the
	// override has let through its max_uses requests already: the request
	// goes to its approval policy instead.
	ErrOverrideExhausted = errors.New(string(record.OverrideExhausted))

	// ErrTooManyPending is returned by Hold when the app already holds the
	// manifest's max_pending pending approvals.
	ErrTooManyPending = errors.New(string(record.TooManyPending))

	// ErrChanged is returned by a Store.Update change function when the
	// approval is no longer in the state the caller decided on; the service
	// decides again.
	ErrChanged = errors.New("approval changed concurrently")
	// ErrBadCursor: a list cursor that names no approval of that list.
	ErrBadCursor = errors.New("cursor names no approval in this list; start again without it")
	// ErrPasskeyReplayed fails a Store.Update whose new passkey decision
	// shows a signature counter not above the one stored for that passkey
	// (a cloned authenticator); nothing is written.
	ErrPasskeyReplayed = errors.New("passkey signature counter not above the one seen before")
)
