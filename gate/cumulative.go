package gate

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// cumulCheck is the cumulative_cap step for one request: the action, the
// request's amount, and whether it takes the window's sum over the cap.
type cumulCheck struct {
	a      *rules.Action
	amount *big.Rat
	over   bool
	why    string // why over, for the record's detail
}

// cumulative applies cumulative_cap to d, decided at now. It returns nil
// when the step does not apply: no cap, or d is a denial, or d already
// carries the escalation (amount_cap), which cumulative_cap adds nothing
// to. A decision the agent strengthened with X-UAPK-Escalation is still
// below the escalation level, so it is checked: a junior role of the
// agent's choosing must not stand in for the senior one. Fail closed: an
// unreadable amount, or sums that cannot be read, count as over the cap.
func (g *Gate) cumulative(m *rules.Manifest, d rules.Decision, now time.Time) *cumulCheck {
	if d.Outcome != rules.Allow && d.Outcome != rules.Pending || d.Reason == record.AmountOverCap || d.Reason == record.AmountUnreadable {
		return nil
	}
	a, ok := m.Action(d.Action)
	if !ok || a.CumulativeCap == nil {
		return nil
	}
	cap := a.CumulativeCap
	cc := &cumulCheck{a: a}
	amount, ok := new(big.Rat).SetString(d.Amount)
	if d.Amount == "" || !ok {
		cc.over, cc.why = true, fmt.Sprintf("the amount cannot be read, so it cannot be held to cumulative_cap %s", cap.AmountText())
		return cc
	}
	cc.amount = amount
	if g.cumul == nil {
		cc.over, cc.why = true, "no store keeps the sums for cumulative_cap"
		return cc
	}
	sum, err := g.cumul.Sum(a.Name, now, cap.Window)
	if err != nil {
		g.log.Error().Err(err).Str("action", a.Name).Msg("cumulative sum unreadable; request escalated")
		cc.over, cc.why = true, "the cumulative sum cannot be read"
		return cc
	}
	if total := new(big.Rat).Add(sum, amount); total.Cmp(cap.Amount) > 0 {
		cc.over = true
		cc.why = fmt.Sprintf("amount %s with %s let through below the escalation level in the last %s makes %s, over cumulative_cap %s",
			d.Amount, ratText(sum), cap.Window, ratText(total), cap.AmountText())
	}
	return cc
}

// escalate gives d the action's escalation, reason cumulative_over_cap;
// an X-UAPK-Escalation role stays required.
func (cc *cumulCheck) escalate(d rules.Decision, role string) rules.Decision {
	q := cc.a.EscalationRequirement()
	if role != "" && !hasSingleSlot(q, role) {
		q.Slots = append(q.Slots, []string{role})
	}
	d.Outcome, d.Reason, d.Escalated, d.Requirement = rules.Pending, record.CumulativeOverCap, true, q
	d.Detail = cc.why + "; escalated to approval by " + strings.Join(q.Roles(), " and ")
	return d
}

// charge counts c's amount with e, the record that lets it through.
func (g *Gate) charge(cc *cumulCheck, e ledger.Entry, now time.Time) ledger.Entry {
	return g.cumul.Charge(e, cc.a.Name, now, cc.a.CumulativeCap.Window, cc.amount, cc.a.CumulativeCap.Amount)
}

// belowEscalation reports whether approval a was held below its action's
// escalation level: a request let through on it counts toward
// cumulative_cap; one approved at the escalation level was seen by the
// senior approvers and does not.
func belowEscalation(a *approvals.Approval) bool {
	switch a.Reason {
	case record.AmountOverCap, record.AmountUnreadable, record.CumulativeOverCap:
		return false
	}
	return true
}

func hasSingleSlot(q rules.Requirement, role string) bool {
	for _, s := range q.Slots {
		if len(s) == 1 && s[0] == role {
			return true
		}
	}
	return false
}

// ratText renders an exact sum as decimal text (sums of decimal amounts
// have finite expansions; a repeating one is shown to 20 places).
func ratText(r *big.Rat) string {
	if r.IsInt() {
		return r.RatString()
	}
	for p := 1; p <= 20; p++ {
		if s := r.FloatString(p); new(big.Rat).SetFrac(r.Num(), r.Denom()).Cmp(mustRat(s)) == 0 && r.Cmp(mustRat(s)) == 0 {
			return s
		}
	}
	return r.FloatString(20)
}

func mustRat(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }

// countApproved decides a retry on approval id under cumulative_cap: an
// approval held at the escalation level lets c through uncounted; one held
// below it lets c through counted (*charge) while the window has room, and
// otherwise not at all (false): c is then held anew with the escalation.
func (g *Gate) countApproved(cc *cumulCheck, id string, charge *bool) bool {
	a, err := g.approvals.Get(id)
	if err == nil && !belowEscalation(a) {
		return true
	}
	if cc.over {
		return false
	}
	*charge = true
	return true
}
