package notify

import (
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Event types.
const (
	// TypePending: an approval was opened and waits for approvers.
	TypePending = "approval.pending"
	// TypeDecided: an approver signed, and StillNeeded roles remain.
	TypeDecided = "approval.decided"
	// TypeApproved, TypeRejected, TypeExpired: the approval is closed.
	TypeApproved = "approval.approved"
	TypeRejected = "approval.rejected"
	TypeExpired  = "approval.expired"
)

// Event is what approvers are told: a summary of an approval, never the
// request's body (mail and webhooks leave the building).
type Event struct {
	// Type is one of the Type* constants.
	Type       string
	ApprovalID string
	// Action, App and Amount summarise the request; Amount as the gate
	// read it, such as "1200000" or "1200000.50".
	Action, App, Amount string
	// Justification is the agent's; Notify shortens it to
	// MaxJustification characters.
	Justification string
	RequiredRoles []string
	StillNeeded   []string
	// DecidedBy names the approver, for decided, approved and rejected.
	DecidedBy string
	ExpiresAt time.Time
	// Recipients are mailed, those with an Email.
	Recipients []Recipient
}

// Recipient is a principal to mail.
type Recipient struct{ ID, Email string }

// Delivery is the outcome of one attempt to deliver an event on one
// channel, or of a delivery given up without an attempt.
type Delivery struct {
	// Event as sent, after Notify cleaned it.
	Event Event
	// Channel is "email:<address>" or "webhook:<host[:port]>" (never the
	// path, query or user information of a webhook URL: they may be its
	// secret).
	Channel string
	OK      bool
	// Error says why it failed: the server's answer or the network error,
	// or a Reason* constant. It never holds a webhook URL.
	Error string
	// Attempt is the number of this attempt, 1-based; for a Reason*
	// outcome the number of attempts made before.
	Attempt int
	// Final: no more attempts follow for this delivery (it was delivered,
	// refused for good, out of attempts, or given up).
	Final bool
}

// Limits on the cleaned event's text; a longer value is cut and ends in
// "…" (counted).
const (
	MaxJustification = 280
	maxShort         = 128 // action, app, amount, IDs, role names
	maxRoles         = 32
)

// validType reports whether t is one of the Type* constants.
func validType(t string) bool {
	switch t {
	case TypePending, TypeDecided, TypeApproved, TypeRejected, TypeExpired:
		return true
	}
	return false
}

// clean returns the event with every text made one short line: control
// characters (CR and LF among them) and Unicode format characters (bidi
// overrides) removed, whitespace runs made one space, and length bounded.
// The agent writes the justification and chooses the action's inputs, so
// this is what keeps them out of mail headers and from reshaping a message.
func clean(e Event) Event {
	e.Type = line(e.Type, maxShort)
	e.ApprovalID = line(e.ApprovalID, maxShort)
	e.Action = line(e.Action, maxShort)
	e.App = line(e.App, maxShort)
	e.Amount = line(e.Amount, maxShort)
	e.Justification = line(e.Justification, MaxJustification)
	e.RequiredRoles = lines(e.RequiredRoles)
	e.StillNeeded = lines(e.StillNeeded)
	e.DecidedBy = line(e.DecidedBy, maxShort)
	rs := make([]Recipient, len(e.Recipients))
	for i, r := range e.Recipients {
		rs[i] = Recipient{ID: line(r.ID, maxShort), Email: strings.TrimSpace(r.Email)}
	}
	e.Recipients = rs
	return e
}

func lines(in []string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, 0, min(len(in), maxRoles))
	for _, s := range in {
		if len(out) == maxRoles {
			break
		}
		if s = line(s, maxShort); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// line makes s one line of at most max characters (runes).
func line(s string, max int) string {
	rs := make([]rune, 0, min(len(s), max+1))
	space, cut := false, false
	for _, r := range s {
		switch {
		case r == utf8.RuneError: // invalid UTF-8 too
			continue
		case unicode.IsSpace(r):
			space = len(rs) > 0
			continue
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			rs = append(rs, ' ')
			space = false
		}
		rs = append(rs, r)
		if len(rs) > max {
			cut = true
			break
		}
	}
	if !cut {
		return string(rs)
	}
	return strings.TrimRight(string(rs[:max-1]), " ") + "…"
}

// plainAddress returns the address if s is exactly one bare mailbox
// (local@domain, no display name, no comment), else "".
func plainAddress(s string) string {
	if s == "" || hasControl(s) || strings.ContainsAny(s, "<>\",;() ") {
		return ""
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || domainOf(s) == "" {
		return ""
	}
	return s
}
