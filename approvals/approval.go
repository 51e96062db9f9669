package approvals

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/passkey"

	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Status values of an approval, as the admin API shows them.
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusRejected = "rejected"
	StatusExpired  = "expired"
)

// Kinds of approval.
const (
	KindRequest  = "request"
	KindOverride = "override"
)

// Decision is one approver's signed statement on an approval.
type Decision struct {
	Approver  string `json:"approver"`
	Role      string `json:"role"`
	Decision  string `json:"decision"` // approve | reject
	Reason    string `json:"reason"`
	SignedAt  string `json:"signed_at"`
	Signature string `json:"signature"` // base64 Ed25519 ("" for a passkey's)
	// WebAuthn is a passkey's assertion over the statement, kept whole.
	WebAuthn *passkey.Assertion `json:"webauthn,omitempty"`
	Record   uint64             `json:"record"` // ledger seq of the approval record

	counter uint32 // the assertion's signature counter, for the replay check
}

// Approval is a request held until the required people approve it.
type Approval struct {
	ID            string            `json:"id"`
	Kind          string            `json:"kind"` // "request", or "override" for an emergency override
	Status        string            `json:"status"`
	Action        string            `json:"action"`
	App           string            `json:"app"`
	Method        string            `json:"method"`
	URL           string            `json:"url"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          string            `json:"body"` // the request body as text (bodies are JSON in practice)
	BodyBase64    bool              `json:"body_base64,omitempty"`
	Justification string            `json:"justification"`
	OnBehalfOf    string            `json:"on_behalf_of"`
	Digest        string            `json:"digest"`
	Amount        string            `json:"amount,omitempty"`
	Reason        record.Reason     `json:"reason"`
	Requirement   rules.Requirement `json:"requirement"`
	RequiredRoles []string          `json:"required_roles"`
	Decisions     []Decision        `json:"decisions"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	RequestRecord uint64            `json:"request_record"`

	// Set for overrides: who asked, for how long once approved.
	RequestedBy string `json:"requested_by,omitempty"`
	Duration    string `json:"duration,omitempty"`
	// An override's bounds, part of what its approvers sign: MaxAmount is
	// the most one request may carry, exact decimal text ("" bounds it by
	// the action's amount_cap); MaxUses how many requests it may let
	// through (0: any number within its duration). Uses counts those it
	// has let through, each with the record that tells of it.
	MaxAmount string `json:"max_amount,omitempty"`
	MaxUses   int    `json:"max_uses,omitempty"`
	Uses      int    `json:"uses,omitempty"`

	// Set once approved: the capability (or override) token and its id.
	Token     string    `json:"token,omitempty"`
	TokenID   string    `json:"token_id,omitempty"`
	TokenExp  time.Time `json:"token_expires_at,omitzero"`
	Completed time.Time `json:"completed_at,omitzero"`
	// Consumed is the ledger seq of the record that let the approved request
	// through; a request approval is used once.
	Consumed uint64 `json:"consumed_record,omitempty"`
}

// Effective returns the approval's status at time now: a pending approval
// past its expiry is expired even before anyone records that.
func (a *Approval) Effective(now time.Time) string {
	if a.Status == StatusPending && !now.Before(a.ExpiresAt) {
		return StatusExpired
	}
	return a.Status
}

// Clone returns a deep copy, so that a store's caller can change it freely.
func (a *Approval) Clone() *Approval {
	c := *a
	c.Decisions = append([]Decision{}, a.Decisions...)
	c.RequiredRoles = append([]string(nil), a.RequiredRoles...)
	if a.Headers != nil {
		c.Headers = make(map[string]string, len(a.Headers))
		for k, v := range a.Headers {
			c.Headers[k] = v
		}
	}
	return &c
}

// NewID returns a fresh approval id: "apr_" and 26 base32 characters (128 random bits).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS CSPRNG never fails on Linux
	}
	return "apr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// ValidID reports whether s has the shape of an approval id, so that junk
// from a client never reaches a store lookup or a log line unchecked.
func ValidID(s string) bool {
	if len(s) != 30 || !strings.HasPrefix(s, "apr_") {
		return false
	}
	for _, c := range s[4:] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ValidStatus reports whether s is a status filter List takes ("" for all).
func ValidStatus(s string) bool {
	switch s {
	case "", StatusPending, StatusApproved, StatusRejected, StatusExpired:
		return true
	}
	return false
}

// StillNeeded lists the requirement's slots no approver fills yet, each
// as its roles joined by " or ".
func (a *Approval) StillNeeded() []string {
	filled := map[string]bool{}
	for _, d := range a.Decisions {
		filled[d.Role] = true
	}
	var out []string
	for _, slot := range a.Requirement.Slots {
		done := false
		for _, r := range slot {
			done = done || filled[r]
		}
		if !done {
			out = append(out, strings.Join(slot, " or "))
		}
	}
	return out
}

// Awaits reports whether the approval, still pending, waits for someone
// holding one of roles who has not decided it: id has not decided, and a
// slot no one fills names one of roles.
func (a *Approval) Awaits(id string, roles []string) bool {
	for _, d := range a.Decisions {
		if d.Approver == id {
			return false
		}
	}
	filled := map[string]bool{}
	for _, d := range a.Decisions {
		filled[d.Role] = true
	}
	for _, slot := range a.Requirement.Slots {
		done, mine := false, false
		for _, r := range slot {
			done = done || filled[r]
			for _, x := range roles {
				mine = mine || x == r
			}
		}
		if !done && mine {
			return true
		}
	}
	return false
}
