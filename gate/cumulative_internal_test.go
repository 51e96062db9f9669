package gate

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// fixedSums is an in-memory Cumulative whose window always holds sum.
type fixedSums struct{ sum *big.Rat }

func (f fixedSums) Sum(string, time.Time, time.Duration) (*big.Rat, error) {
	return new(big.Rat).Set(f.sum), nil
}

func (fixedSums) Charge(e ledger.Entry, _ string, _ time.Time, _ time.Duration, _, _ *big.Rat) ledger.Entry {
	return e
}

// FuzzCumulativeStrengthens: the cumulative_cap step never weakens a
// decision. It escalates exactly when sum + amount exceeds the cap (checked
// against an independent big.Float comparison), and an escalated decision
// needs every slot of the action's escalation and of the agent's role.
func FuzzCumulativeStrengthens(f *testing.F) {
	f.Add("500000", "500000", "", true)
	f.Add("1000000", "0.000001", "auditor", true)
	f.Add("0.1", "0.2", "", false)
	f.Add("0", "1000000", "", false)
	f.Add("999999.99", "0.01", "cfo", false)
	f.Fuzz(func(t *testing.T, sumText, amountText, role string, auto bool) {
		if len(sumText) > 40 || len(amountText) > 40 {
			return
		}
		sumText, ok := rules.ParseAmount(sumText)
		if !ok || strings.HasPrefix(sumText, "-") {
			return
		}
		sum, _ := new(big.Rat).SetString(sumText)
		amount, ok := rules.ParseAmount(amountText)
		if !ok || strings.HasPrefix(amount, "-") {
			return
		}
		if role != "" && !rules.ValidRole(role) {
			return
		}
		policy := `"approval_policy": "REQUIRE_APPROVAL", "roles_required": ["finance_manager"]`
		if auto {
			policy = `"approval_policy": "AUTO_APPROVE"`
		}
		m, err := rules.ParseManifest([]byte(`{"app_id": "a", "version": "1", "actions": {"je": {` + policy + `,
			"match": [{"method": "POST", "path": "/je"}], "amount": ["amount"],
			"escalation": {"approval_policy": "DUAL_APPROVAL", "roles_required": ["cfo", "controller"]},
			"cumulative_cap": {"amount": 1000000, "window": "24h"}}}}`))
		if err != nil {
			t.Fatal(err)
		}
		eng := rules.NewEngine(m, nil)
		before := eng.Decide(&rules.Request{Method: "POST", Scheme: "http", Host: "erp", Path: "/je", ContentType: "application/json",
			Body: []byte(`{"amount":"` + amount + `"}`), Escalation: role, Time: time.Now()})
		if before.Outcome == rules.Deny {
			t.Fatalf("decision %+v", before)
		}
		g := &Gate{cumul: fixedSums{sum}, log: zerolog.Nop()}
		cc := g.cumulative(m, before, time.Now())
		if cc == nil {
			t.Fatal("cumulative_cap not applied")
		}
		bs, _, _ := big.ParseFloat(sumText, 10, 4096, big.ToNearestEven)
		ba, _, _ := big.ParseFloat(amount, 10, 4096, big.ToNearestEven)
		total := new(big.Float).SetPrec(4096).Add(bs, ba)
		diff := new(big.Float).SetPrec(4096).Sub(total, big.NewFloat(1000000))
		// Within rounding of the cap the floats cannot tell; the unit tests
		// cover sums landing exactly on it.
		tiny := new(big.Float).SetMantExp(big.NewFloat(1), -3000)
		near := new(big.Float).Abs(diff).Cmp(tiny) < 0
		if want := diff.Sign() > 0; !near && cc.over != want {
			t.Fatalf("sum %s + amount %s: over %v, want %v", sumText, amount, cc.over, want)
		}
		if !cc.over {
			return
		}
		after := cc.escalate(before, role)
		if after.Outcome != rules.Pending || after.Reason != record.CumulativeOverCap || !after.Escalated {
			t.Fatalf("escalated %+v", after)
		}
		need := [][]string{{"cfo"}, {"controller"}}
		if role != "" {
			need = append(need, []string{role})
		}
		for _, slot := range need {
			if !hasSingleSlot(after.Requirement, slot[0]) {
				t.Fatalf("requirement %+v lacks %v", after.Requirement, slot)
			}
		}
	})
}
