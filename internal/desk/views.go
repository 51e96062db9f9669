package desk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// row is one line of a list.
type row struct {
	ID, Kind, Action, App, Amount, Justification, Status string
	Needs                                                []string
	Signed                                               int
	Created, Expires                                     time.Time
}

func rowOf(a *approvals.Approval) row {
	return row{ID: a.ID, Kind: a.Kind, Action: a.Action, App: a.App, Amount: grouped(a.Amount), Status: a.Status,
		Justification: safe(short(a.Justification, 120)), Needs: a.StillNeeded(), Signed: len(a.Decisions),
		Created: a.CreatedAt, Expires: a.ExpiresAt}
}

// view is one approval as its page shows it.
type view struct {
	*approvals.Approval
	Status      string
	Shown       string   // the amount with thousands separators
	Body        string   // pretty-printed when JSON, control characters shown as \uXXXX
	Currency    string   // the body's currency member, if it names one
	Docs        []string // supporting_docs the body names
	StillNeeded []string
	Decided     []decided
}

type decided struct {
	Approver, Role, Decision, Reason, SignedAt, With string
	Record                                           uint64
}

func viewOf(a *approvals.Approval, now time.Time) view {
	v := view{Approval: a, Status: a.Effective(now), StillNeeded: a.StillNeeded(), Shown: grouped(a.Amount)}
	body := a.Body
	if a.BodyBase64 {
		body = "(" + fmt.Sprint(len(a.Body)*3/4) + " bytes that are not text; shown in base64)\n" + a.Body
	}
	var doc map[string]any
	if json.Unmarshal([]byte(a.Body), &doc) == nil {
		var b bytes.Buffer
		if json.Indent(&b, []byte(a.Body), "", "  ") == nil {
			body = b.String()
		}
		if c, ok := doc["currency"].(string); ok {
			v.Currency = safe(short(c, 8))
		}
		if ds, ok := doc["supporting_docs"].([]any); ok {
			for _, d := range ds {
				if s, ok := d.(string); ok && len(v.Docs) < 50 {
					v.Docs = append(v.Docs, safe(short(s, 200)))
				}
			}
		}
	}
	v.Body = safe(short(body, 64<<10))
	for _, d := range a.Decisions {
		with := "Ed25519 key (CLI)"
		if d.WebAuthn != nil {
			with = "passkey"
		}
		v.Decided = append(v.Decided, decided{Approver: d.Approver, Role: d.Role, Decision: d.Decision,
			Reason: safe(d.Reason), SignedAt: d.SignedAt, With: with, Record: d.Record})
	}
	return v
}

// safe shows control and format characters (bidirectional overrides,
// zero-width characters, tags) and line separators as \uXXXX, so
// that a body cannot hide or reorder what the approver reads; html/template
// escapes the rest.
func safe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// grouped writes a plain decimal amount with thousands separators
// (1200000.50 as 1,200,000.50); anything else as it is.
func grouped(amount string) string {
	whole, frac, hasFrac := strings.Cut(amount, ".")
	sign := ""
	if strings.HasPrefix(whole, "-") {
		sign, whole = "-", whole[1:]
	}
	if whole == "" || strings.Trim(whole, "0123456789") != "" || strings.Trim(frac, "0123456789") != "" {
		return amount
	}
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		return sign + b.String() + "." + frac
	}
	return sign + b.String()
}
