package approvals

import (
	"context"
	"fmt"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// Store keeps approvals and their use. Every change commits as one unit
// with the ledger record that tells of it: both are durable or neither is,
// so a pending approval exists if and only if its request record does, and
// an approval is consumed if and only if the record that used it exists.
//
// The embedded store (internal/approvalstore) keeps approvals in the
// ledger's own bbolt file; approvalstest has one in memory for tests.
type Store interface {
	// Get returns a copy of approval id, or an error wrapping ErrNotFound.
	Get(id string) (*Approval, error)
	// List returns the approvals whose effective status at now is status
	// ("" for all), oldest first.
	List(status string, now time.Time) ([]*Approval, error)
	// PasskeyCounter returns the highest signature counter recorded for
	// a passkey (credential id, base64url) by decisions Update stored; 0
	// when none. Update keeps it, in the transaction of the decision, and
	// fails with ErrPasskeyReplayed, writing nothing, when the decision it
	// adds (Record == the new record's seq) shows a counter, not 0, that
	// is not above the stored one.
	PasskeyCounter(credentialID string) (uint32, error)
	// Due returns the approvals stored as pending whose expiry has passed.
	Due(now time.Time) ([]*Approval, error)
	// Create appends e and stores a, new, with a.RequestRecord set to the
	// record's seq.
	Create(ctx context.Context, a *Approval, e ledger.Entry) (ledger.Record, error)
	// Update appends e and stores what change makes of approval id. change
	// gets the stored approval and the record being written; its error
	// writes neither and is returned wrapped.
	Update(ctx context.Context, id string, e ledger.Entry, change func(a *Approval, rec *ledger.Record) error) (ledger.Record, error)
	// Consume appends e and marks approval id used by it under tokenID,
	// after CheckConsume: once, across restarts.
	Consume(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error)
	// UseOverride appends e, the record of a request override id lets
	// through under tokenID, and counts that use, after CheckOverrideUse:
	// a use beyond the override's max_uses is never written, across
	// restarts and between requests racing for the last one.
	UseOverride(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error)
	// Release appends e and undoes the Consume by record usedBy (approval
	// id and token tokenID usable again): the request it let through never
	// reached the ERP. It fails, writing nothing, if the approval is not
	// consumed by usedBy.
	Release(ctx context.Context, id, tokenID string, usedBy uint64, e ledger.Entry) (ledger.Record, error)
}

// CheckConsume is the use-once rule every Store applies, inside its atomic
// unit, before it marks a used: approved, under this token, never used.
func CheckConsume(a *Approval, tokenID string) error {
	if a.Consumed != 0 {
		return fmt.Errorf("%w: approval %s was used by record %d", ErrConsumed, a.ID, a.Consumed)
	}
	if a.Status != StatusApproved || a.TokenID != tokenID {
		return fmt.Errorf("%w: approval %s is %s", ErrNotApproved, a.ID, a.Status)
	}
	return nil
}

// CheckOverrideUse is the rule every Store applies, inside its atomic unit,
// before it counts a use of an override: approved, under this token, with
// uses left.
func CheckOverrideUse(a *Approval, tokenID string) error {
	if a.Kind != KindOverride || a.Status != StatusApproved || a.TokenID != tokenID {
		return fmt.Errorf("%w: override %s is %s", ErrNotApproved, a.ID, a.Status)
	}
	if a.MaxUses > 0 && a.Uses >= a.MaxUses {
		return fmt.Errorf("%w: override %s has let through %d of its max_uses %d", ErrOverrideExhausted, a.ID, a.Uses, a.MaxUses)
	}
	return nil
}
