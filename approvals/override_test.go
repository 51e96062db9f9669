package approvals_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Known answers for the override digest (docs/reference.md#request-digest).
// Reproduce with:
//
//	j=$(printf 'Q4 close' | sha256sum | cut -d' ' -f1)
//	printf 'uapk-override-v1\nfinancial-ai-assistant\njournal_entry\n4h0m0s\nops-lead@corp.example\n%s' "$j" | sha256sum
//	printf 'uapk-override-v2\nfinancial-ai-assistant\njournal_entry\n4h0m0s\nops-lead@corp.example\n5000000\n3\n%s' "$j" | sha256sum
//	printf 'uapk-override-v2\nfinancial-ai-assistant\njournal_entry\n4h0m0s\nops-lead@corp.example\n\n3\n%s' "$j" | sha256sum
func TestOverrideDigestKnownAnswers(t *testing.T) {
	const app, action, dur, by, just = "financial-ai-assistant", "journal_entry", "4h0m0s", "ops-lead@corp.example", "Q4 close"
	for _, tc := range []struct {
		name, maxAmount string
		maxUses         int
		want            string
	}{
		{"no bounds: the first form, as overrides were always signed", "", 0,
			"4ed5d38627fcbe1bd2537bbf3e10d440d7486e365c4c791dbfbba4d683ca75c8"},
		{"max_amount and max_uses", "5000000", 3,
			"423c2f0245bd40a5ea38297f0d87e55a49df7f4d9d5e0cf3a0f5601251147ba2"},
		{"max_uses alone", "", 3,
			"78a006a050c496198c83f693539716e42a02764923d9548c5307f9a6eda30326"},
	} {
		if got := approvals.OverrideDigest(app, action, dur, by, just, tc.maxAmount, tc.maxUses); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// serviceWith is service over the example manifest with edit applied to
// its text.
func serviceWith(t *testing.T, edit func(string) string) *approvals.Service {
	t.Helper()
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := rules.ParseManifest([]byte(edit(string(raw))))
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, principals(t, cast))
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	l := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(l), Ledger: l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func maxUsesInManifest(n string) func(string) string {
	return func(s string) string {
		return strings.Replace(s, `"max_duration": "8h"}`, `"max_duration": "8h", "max_uses": `+n+`}`, 1)
	}
}

func uses(n int) *int { return &n }

// TestRequestOverrideBounds: what an override request may name, what it
// gets without naming it, who must approve it, and what they sign.
func TestRequestOverrideBounds(t *testing.T) {
	base := approvals.OverrideRequest{Action: "journal_entry", Duration: "4h", Justification: "Q4 close", RequestedBy: "ops-lead@corp.example"}
	with := func(f func(*approvals.OverrideRequest)) approvals.OverrideRequest { r := base; f(&r); return r }
	onlyCFO := rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}}}
	cfoAndController := rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
	for _, tc := range []struct {
		name      string
		manifest  func(string) string
		req       approvals.OverrideRequest
		problem   string // a bad request mentioning this
		maxAmount string
		maxUses   int
		need      rules.Requirement
	}{
		{name: "no bounds: the amount_cap and no limit on uses", req: base, need: onlyCFO},
		{name: "max_amount below the cap", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "250000.00" }),
			maxAmount: "250000", need: onlyCFO},
		{name: "max_amount at the cap needs no more", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "1000000" }),
			maxAmount: "1000000", need: onlyCFO},
		{name: "max_amount above the cap needs the escalation's controller too",
			req:       with(func(r *approvals.OverrideRequest) { r.MaxAmount = "1000000.01" }),
			maxAmount: "1000000.01", need: cfoAndController},
		{name: "max_amount in exponent form", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "5e6" }),
			maxAmount: "5000000", need: cfoAndController},
		{name: "the default escalation is the cfo the override needs already",
			manifest: func(s string) string {
				return strings.Replace(s, `"escalation": {"approval_policy": "DUAL_APPROVAL", "roles_required": ["cfo", "controller"]},`, "", 1)
			},
			req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "5000000" }), maxAmount: "5000000", need: onlyCFO},
		{name: "override roles the escalation lacks: both kinds approve",
			manifest: func(s string) string {
				return strings.Replace(s, `"override": {"roles_required": ["cfo"]`, `"override": {"roles_required": ["finance_manager"]`, 1)
			},
			req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "5000000" }), maxAmount: "5000000",
			need: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"finance_manager"}, {"cfo"}, {"controller"}}}},
		{name: "max_uses", req: with(func(r *approvals.OverrideRequest) { r.MaxUses = uses(3) }), maxUses: 3, need: onlyCFO},
		{name: "the manifest's max_uses when none is named", manifest: maxUsesInManifest("5"), req: base, maxUses: 5, need: onlyCFO},
		{name: "fewer uses than the manifest's", manifest: maxUsesInManifest("5"),
			req: with(func(r *approvals.OverrideRequest) { r.MaxUses = uses(2) }), maxUses: 2, need: onlyCFO},
		{name: "more uses than the manifest's", manifest: maxUsesInManifest("5"),
			req: with(func(r *approvals.OverrideRequest) { r.MaxUses = uses(6) }), problem: "more than override.max_uses 5"},
		{name: "zero uses", req: with(func(r *approvals.OverrideRequest) { r.MaxUses = uses(0) }), problem: "max_uses 0 must be a positive"},
		{name: "negative amount", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "-5" }), problem: "must not be negative"},
		{name: "not a decimal", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "1,000,000" }), problem: "must be a decimal amount"},
		{name: "a fraction", req: with(func(r *approvals.OverrideRequest) { r.MaxAmount = "1/3" }), problem: "must be a decimal amount"},
		{name: "an action that reads no amount",
			req:     approvals.OverrideRequest{Action: "financial_report", Duration: "4h", Justification: "10-K", RequestedBy: "ops-lead@corp.example", MaxAmount: "5"},
			problem: "names no amount paths"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edit := tc.manifest
			if edit == nil {
				edit = func(s string) string { return s }
			}
			svc := serviceWith(t, edit)
			ov, err := svc.RequestOverride(tc.req)
			if tc.problem != "" {
				var br *approvals.BadRequestError
				if !errors.As(err, &br) || !strings.Contains(br.Error(), tc.problem) {
					t.Fatalf("%v, want a bad request saying %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ov.MaxAmount != tc.maxAmount || ov.MaxUses != tc.maxUses {
				t.Errorf("bounds %q, %d; want %q, %d", ov.MaxAmount, ov.MaxUses, tc.maxAmount, tc.maxUses)
			}
			if !reflect.DeepEqual(ov.Requirement, tc.need) || !reflect.DeepEqual(ov.RequiredRoles, tc.need.Roles()) {
				t.Errorf("needs %+v (roles %v), want %+v", ov.Requirement, ov.RequiredRoles, tc.need)
			}
			want := approvals.OverrideDigest(ov.App, ov.Action, "4h0m0s", ov.RequestedBy, ov.Justification, tc.maxAmount, tc.maxUses)
			if ov.Digest != want {
				t.Errorf("digest %s, want %s (the bounds signed)", ov.Digest, want)
			}
		})
	}
}

// TestOverrideRequestJSON: max_amount comes as a decimal string or a JSON
// number and is kept as written, never through a float.
func TestOverrideRequestJSON(t *testing.T) {
	for _, tc := range []struct {
		body, amount string
		uses         int
		bad          bool
	}{
		{body: `{"max_amount": "250000.10"}`, amount: "250000.10"},
		{body: `{"max_amount": 9007199254740993.01}`, amount: "9007199254740993.01"},
		{body: `{"max_amount": 1e6, "max_uses": 3}`, amount: "1e6", uses: 3},
		{body: `{"max_amount": null}`},
		{body: `{"max_amount": ""}`, bad: true},
		{body: `{"max_amount": true}`, bad: true},
		{body: `{"max_amount": ["1"]}`, bad: true},
		{body: `{"max_uses": 2.5}`, bad: true},
		{body: `{"max_uses": "3"}`, bad: true},
	} {
		var r approvals.OverrideRequest
		err := json.Unmarshal([]byte(tc.body), &r)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: accepted as %+v", tc.body, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		got := 0
		if r.MaxUses != nil {
			got = *r.MaxUses
		}
		if string(r.MaxAmount) != tc.amount || got != tc.uses {
			t.Errorf("%s: max_amount %q, max_uses %d", tc.body, r.MaxAmount, got)
		}
	}
}

// TestOverrideAboveTheCapNeedsTheEscalation: an override up to 5,000,000
// on journal entries (amount_cap 1,000,000, escalation cfo and controller)
// is not approved by the cfo alone.
func TestOverrideAboveTheCapNeedsTheEscalation(t *testing.T) {
	svc, _ := service(t)
	ov, err := svc.RequestOverride(approvals.OverrideRequest{Action: "journal_entry", Duration: "4h",
		Justification: "Q4 close", RequestedBy: "ops-lead@corp.example", MaxAmount: "5000000"})
	if err != nil {
		t.Fatal(err)
	}
	got, ref, err := svc.Decide(ov.ID, sub(ov, "cfo@corp.example", approvals.Approve))
	if err != nil || ref != nil || got.Status != approvals.StatusPending {
		t.Fatalf("after the cfo: %+v %v %v; want still pending", got, ref, err)
	}
	if _, ref, _ := svc.Decide(ov.ID, sub(ov, "cfo2@corp.example", approvals.Approve)); ref == nil || ref.Code != record.RefuseRoleFilled {
		t.Errorf("a second cfo counted for the controller: %v", ref)
	}
	got, ref, err = svc.Decide(ov.ID, sub(ov, "controller@corp.example", approvals.Approve))
	if err != nil || ref != nil || got.Status != approvals.StatusApproved || got.Token == "" {
		t.Fatalf("after the controller: %+v %v %v", got, ref, err)
	}
}

// TestOverrideCovers: the bound is the override's max_amount, else the
// action's amount_cap, both inclusive; an unreadable amount is never
// covered; the uses are counted up to max_uses.
func TestOverrideCovers(t *testing.T) {
	svc, _ := service(t)
	journal := func(amount string) rules.Decision {
		return rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Amount: amount}
	}
	for _, tc := range []struct {
		name      string
		override  approvals.Approval
		d         rules.Decision
		bound     string
		why       record.Reason
		detailHas string
	}{
		{name: "the cap, exactly", d: journal("1000000"), bound: "1000000"},
		{name: "a cent over the cap", d: journal("1000000.01"), bound: "1000000", why: record.OverrideOverAmount, detailHas: "amount_cap"},
		{name: "the attack", d: journal("999999999"), bound: "1000000", why: record.OverrideOverAmount},
		{name: "no amount read under the cap", d: journal(""), bound: "1000000", why: record.OverrideAmountUnreadable},
		{name: "max_amount, exactly", override: approvals.Approval{MaxAmount: "5000000.5"}, d: journal("5000000.50"), bound: "5000000.5"},
		{name: "just over max_amount", override: approvals.Approval{MaxAmount: "5000000.5"}, d: journal("5000000.500001"),
			bound: "5000000.5", why: record.OverrideOverAmount, detailHas: "its max_amount"},
		{name: "max_amount below the cap bounds too", override: approvals.Approval{MaxAmount: "100"}, d: journal("101"),
			bound: "100", why: record.OverrideOverAmount},
		{name: "an action without a cap or max_amount", d: rules.Decision{Outcome: rules.Pending, Action: "financial_report"}},
		{name: "a use left", override: approvals.Approval{MaxUses: 3, Uses: 2}, d: journal("1"), bound: "1000000"},
		{name: "no use left", override: approvals.Approval{MaxUses: 3, Uses: 3}, d: journal("1"), bound: "1000000", why: record.OverrideExhausted},
		{name: "no limit on uses", override: approvals.Approval{Uses: 1 << 20}, d: journal("1"), bound: "1000000"},
	} {
		a := tc.override
		a.ID, a.Kind, a.Status = testID, approvals.KindOverride, approvals.StatusApproved
		bound, why, detail := svc.OverrideCovers(&a, tc.d)
		if bound != tc.bound || why != tc.why || (why == "") != (detail == "") || !strings.Contains(detail, tc.detailHas) {
			t.Errorf("%s: %q, %q, %q; want %q, %q (detail with %q)", tc.name, bound, why, detail, tc.bound, tc.why, tc.detailHas)
		}
	}
}

// FuzzOverrideCovers: an override covers a journal entry (amount_cap
// 1,000,000) exactly when its amount was read, is at most the bound (the
// override's max_amount, else the cap) and a use is left. The amounts are
// compared here by an independent decimal comparison on their text, so a
// rounding or parsing slip in OverrideCovers shows up as a disagreement.
// Run with
//
//	go test ./approvals/ -run '^$' -fuzz FuzzOverrideCovers -fuzztime 30s
func FuzzOverrideCovers(f *testing.F) {
	f.Add("999999999", "", uint8(0), uint8(0))
	f.Add("1000000", "", uint8(0), uint8(0))
	f.Add("1000000.0000000000000000001", "", uint8(1), uint8(2))
	f.Add("5000000.5", "5000000.50", uint8(2), uint8(2))
	f.Add("0.1", "1e-1", uint8(0), uint8(1))
	f.Add("", "250000", uint8(0), uint8(0))
	f.Add("1e400", "9e399", uint8(0), uint8(0))
	svc, _ := service(f)
	f.Fuzz(func(t *testing.T, rawAmount, rawMax string, used, maxUses uint8) {
		amount, _ := rules.ParseAmount(rawAmount) // as the rules give it: "" when unreadable
		amount = strings.TrimPrefix(amount, "-")  // and never negative
		maxAmount, ok := rules.ParseAmount(rawMax)
		if !ok || strings.HasPrefix(maxAmount, "-") {
			maxAmount = "" // RequestOverride refuses those
		}
		a := &approvals.Approval{ID: testID, Kind: approvals.KindOverride, Status: approvals.StatusApproved,
			MaxAmount: maxAmount, MaxUses: int(maxUses), Uses: int(used)}
		bound, why, _ := svc.OverrideCovers(a, rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Amount: amount})
		wantBound := maxAmount
		if wantBound == "" {
			wantBound = "1000000"
		}
		var want record.Reason
		switch {
		case maxUses > 0 && used >= maxUses:
			want = record.OverrideExhausted
		case amount == "":
			want = record.OverrideAmountUnreadable
		case cmpDecimalText(amount, wantBound) > 0:
			want = record.OverrideOverAmount
		}
		if bound != wantBound || why != want {
			t.Fatalf("amount %q, max_amount %q, uses %d/%d: %q, %q; want %q, %q", amount, maxAmount, used, maxUses, bound, why, wantBound, want)
		}
	})
}

// cmpDecimalText compares two non-negative plain decimals ("1200", "0.05")
// digit by digit: -1, 0 or +1.
func cmpDecimalText(a, b string) int {
	ai, af, _ := strings.Cut(a, ".")
	bi, bf, _ := strings.Cut(b, ".")
	ai, bi = strings.TrimLeft(ai, "0"), strings.TrimLeft(bi, "0")
	if len(ai) != len(bi) {
		if len(ai) < len(bi) {
			return -1
		}
		return 1
	}
	if c := strings.Compare(ai, bi); c != 0 {
		return c
	}
	for len(af) < len(bf) {
		af += "0"
	}
	for len(bf) < len(af) {
		bf += "0"
	}
	return strings.Compare(af, bf)
}
