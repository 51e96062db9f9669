package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Amount is an amount as a client sends it, a decimal string ("250000.00")
// or a JSON number (250000), kept as the text written: it is never read
// through a float. RequestOverride checks it.
type Amount string

// UnmarshalJSON takes a JSON string or number as written; null is no
// amount.
func (a *Amount) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			return errors.New("max_amount must not be empty; leave it out for none")
		}
		*a = Amount(s)
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		*a = Amount(b)
	case string(b) == "null":
		*a = ""
	default:
		return errors.New("max_amount must be a decimal string or a number")
	}
	return nil
}

// overrideBounds checks the bounds an override request names and returns
// the ones it gets: max_amount as plain decimal text ("" for none), and
// max_uses, the manifest's override.max_uses when the request names none
// (0 for no limit).
func overrideBounds(r OverrideRequest, m *rules.Manifest, act *rules.Action) (string, int, []string) {
	var problems []string
	maxAmount := ""
	if r.MaxAmount != "" {
		text, ok := rules.ParseAmount(string(r.MaxAmount))
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("max_amount %q must be a decimal amount such as 250000 or \"250000.00\"", clip(string(r.MaxAmount), 64)))
		case text[0] == '-':
			problems = append(problems, fmt.Sprintf("max_amount %s must not be negative", text))
		case act != nil && len(act.AmountPaths) == 0:
			// No amount is ever read from such requests, so none could be
			// checked against the bound.
			problems = append(problems, fmt.Sprintf("max_amount: action %q reads no amount from its requests (it names no amount paths), so no max_amount can bound it", act.Name))
		default:
			maxAmount = text
		}
	}
	maxUses := 0
	if m.Override != nil {
		maxUses = m.Override.MaxUses
	}
	if r.MaxUses != nil {
		switch n := *r.MaxUses; {
		case n < 1:
			problems = append(problems, fmt.Sprintf("max_uses %d must be a positive whole number", n))
		case maxUses > 0 && n > maxUses:
			problems = append(problems, fmt.Sprintf("max_uses %d is more than override.max_uses %d", n, maxUses))
		case n > rules.MaxOverrideUses:
			problems = append(problems, fmt.Sprintf("max_uses %d is more than %d", n, rules.MaxOverrideUses))
		default:
			maxUses = n
		}
	}
	return maxAmount, maxUses, problems
}

// overrideRequirement is who must approve an override: one approver per
// role of override.roles_required and, when its max_amount is above the
// action's amount_cap, what the action's escalation requires as well. An
// escalation slot that an override role already fills (the override's cfo
// is the escalation's cfo) needs nobody more; any other is one more
// approver.
func overrideRequirement(o *rules.Override, act *rules.Action, maxAmount string) rules.Requirement {
	req := rules.Requirement{Policy: rules.DualApproval}
	for _, role := range o.RolesRequired {
		req.Slots = append(req.Slots, []string{role})
	}
	if maxAmount == "" || act == nil || act.AmountCap == nil {
		return req
	}
	if amount, ok := amountRat(maxAmount); ok && amount.Cmp(act.AmountCap) <= 0 {
		return req
	}
	n := len(req.Slots)
	filled := make([]bool, n) // each override slot stands for one escalation slot at most
	for _, slot := range act.EscalationRequirement().Slots {
		merged := false
		for i := range n {
			if !filled[i] && slices.Contains(slot, req.Slots[i][0]) {
				filled[i], merged = true, true
				break
			}
		}
		if !merged {
			req.Slots = append(req.Slots, slices.Clone(slot))
		}
	}
	return req
}

// OverrideCovers says whether approved override a covers a request the rules
// decided as d: reason is "" when it does, else why not (override_exhausted,
// override_over_amount, override_amount_unreadable), with a detail for the
// record; the request then goes to its approval policy. bound is the most
// one request may carry under it, as decimal text: its max_amount, else
// the action's amount_cap ("" when neither bounds it).
//
// The uses counted here may be behind by the requests racing this one;
// UseOverride decides the last use left, with the record.
func (s *Service) OverrideCovers(a *Approval, d rules.Decision) (bound string, reason record.Reason, detail string) {
	bound, what := a.MaxAmount, "its max_amount"
	if bound == "" {
		if act, ok := s.engine().Manifest().Action(d.Action); ok {
			bound, what = act.AmountCapText(), "the action's amount_cap; the override names no max_amount"
		}
	}
	if a.MaxUses > 0 && a.Uses >= a.MaxUses {
		return bound, record.OverrideExhausted, fmt.Sprintf("override %s has let through %d requests, its max_uses; the request goes to its approval policy", a.ID, a.Uses)
	}
	if bound == "" {
		return "", "", ""
	}
	amount, ok := amountRat(d.Amount)
	limit, lok := amountRat(bound)
	if !ok || !lok {
		return bound, record.OverrideAmountUnreadable, fmt.Sprintf("override %s covers amounts up to %s (%s), and this request's amount cannot be read; the request goes to its approval policy", a.ID, bound, what)
	}
	if amount.Cmp(limit) > 0 {
		return bound, record.OverrideOverAmount, fmt.Sprintf("amount %s is above %s, the most override %s covers (%s); the request goes to its approval policy", d.Amount, bound, a.ID, what)
	}
	return bound, "", ""
}

// UseOverride writes e, the record of a request override id lets through
// under tokenID, and counts the use, in one unit. An error wrapping
// ErrOverrideExhausted means its max_uses went to other requests first (the
// request goes to its approval policy); ErrNotApproved, that the override
// changed state; any other is the ledger's.
func (s *Service) UseOverride(id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.store.UseOverride(ctx, id, tokenID, e)
}

// amountRat is the exact absolute value of plain decimal text, as
// rules.ParseAmount and the rules' decisions give amounts; false for ""
// (no amount read) or anything else.
func amountRat(s string) (*big.Rat, bool) {
	if _, ok := rules.ParseAmount(s); !ok {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, false
	}
	return r.Abs(r), true
}
