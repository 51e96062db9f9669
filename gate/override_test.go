package gate_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The override approvers: override.roles_required is cfo; journal
// entries over their amount_cap of 1,000,000 escalate to cfo and
// controller.
const (
	cfo        = "cfo@corp.example"
	controller = "controller@corp.example"
	opsLead    = "ops-lead@corp.example"
)

// overrideWorld is a gate over the example manifest (with edit applied to
// its text) whose principals include the cfo and the controller, and
// their keys.
func overrideWorld(t *testing.T, edit func(string) string) (*world, map[string]ed25519.PrivateKey) {
	t.Helper()
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	if edit != nil {
		doc = edit(doc)
	}
	m, err := rules.ParseManifest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PrivateKey{}
	var file strings.Builder
	file.WriteString("principals:\n  - id: " + analyst + "\n    roles: [staff_accountant]\n  - id: " + opsLead + "\n    roles: [ops]\n")
	for id, role := range map[string]string{cfo: "cfo", controller: "controller", fm: "finance_manager"} {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys[id] = priv
		der, _ := x509.MarshalPKIXPublicKey(pub)
		pemText := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "\n", "\n      ")
		fmt.Fprintf(&file, "  - id: %s\n    roles: [%s]\n    public_key: |\n      %s\n", id, role, pemText)
	}
	p, err := rules.ParsePrincipals([]byte(file.String()), ".")
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, p)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(gw)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{l: &approvalstest.Ledger{}, fmKey: keys[fm], clock: now}
	w.svc, err = approvals.New(approvals.Config{Store: approvalstest.NewStore(w.l), Ledger: w.l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	w.g, err = gate.New(gate.Config{Engine: eng, Ledger: w.l, Approvals: w.svc, Logger: zerolog.Nop(), Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	return w, keys
}

// grant asks for an override of journal entries with r's bounds, has
// every approver in by sign it, and returns its token.
func grant(t *testing.T, w *world, keys map[string]ed25519.PrivateKey, r approvals.OverrideRequest, by ...string) *approvals.Approval {
	t.Helper()
	r.Action, r.Duration, r.Justification, r.RequestedBy = "journal_entry", "4h", "quarter-end close, ERP queue stuck", opsLead
	ov, err := w.svc.RequestOverride(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range by {
		at := w.now().UTC().Format(time.RFC3339)
		sub := approvals.Submission{Approver: who, Decision: approvals.Approve, SignedAt: at,
			Signature: approvals.Sign(keys[who], ov.ID, ov.Digest, approvals.Approve, who, at)}
		if _, ref, err := w.svc.Decide(ov.ID, sub); err != nil || ref != nil {
			t.Fatalf("%s approving: %v %v", who, ref, err)
		}
	}
	got, err := w.svc.Get(ov.ID)
	if err != nil || got.Status != approvals.StatusApproved || got.Token == "" {
		t.Fatalf("override after %v: %+v %v", by, got, err)
	}
	return got
}

// entryWith is a journal entry of amount under override token.
func entryWith(token, amount string) *gate.Call {
	c := journalEntry()
	c.Req.Body = []byte(`{"account":"2100","credit":` + amount + `}`)
	c.Req.ContentType = "application/json"
	c.Override = token
	return c
}

// recordOf returns the record of verdict v.
func recordOf(t *testing.T, w *world, v *gate.Verdict) ledger.Record {
	t.Helper()
	for _, r := range w.l.Records() {
		if r.Seq == v.Record {
			return r
		}
	}
	t.Fatalf("no record %d", v.Record)
	return ledger.Record{}
}

// wantOverridden: v let the request through under override ov, recorded
// as a use with the bound it was checked against.
func wantOverridden(t *testing.T, w *world, v *gate.Verdict, ov *approvals.Approval, bound string) {
	t.Helper()
	if !v.Forward() || v.Reason != record.Override || v.ApprovalID != ov.ID {
		t.Fatalf("verdict %+v, want allowed by override %s", v, ov.ID)
	}
	rec := recordOf(t, w, v)
	if rec.Kind != record.KindOverride || rec.Decision != record.Allow || rec.Data["override_id"] != ov.ID ||
		rec.Data["override_max_amount"] != bound || rec.Data["override_not_applied"] != nil {
		t.Errorf("use record %+v", rec)
	}
}

// wantHeld: v held the request for its approval policy (reason, roles)
// although override ov came with it, and the record says why.
func wantHeld(t *testing.T, w *world, v *gate.Verdict, ov *approvals.Approval, reason, why record.Reason, roles ...string) {
	t.Helper()
	if v.Forward() || v.Outcome != rules.Pending || v.Reason != reason || v.ApprovalID == "" || v.ApprovalID == ov.ID ||
		strings.Join(v.RequiredRoles, ",") != strings.Join(roles, ",") {
		t.Fatalf("verdict %+v, want held (%s, needing %v)", v, reason, roles)
	}
	rec := recordOf(t, w, v)
	if rec.Kind != record.KindRequest || rec.Decision != record.Pending || rec.Reason != reason || rec.ApprovalID != v.ApprovalID ||
		rec.Data["override_id"] != ov.ID || rec.Data["override_not_applied"] != string(why) ||
		rec.Data["policy_skipped"] != nil || !strings.Contains(rec.Data["detail"].(string), ov.ID) {
		t.Errorf("held record %+v", rec)
	}
	if a, err := w.svc.Get(v.ApprovalID); err != nil || a.Status != approvals.StatusPending || a.Kind != approvals.KindRequest {
		t.Errorf("the held request's approval: %+v %v", a, err)
	}
}

// TestOverrideAttack999999999: the attack. The CFO approves an override of
// journal entries that names no bounds; the agent then posts 999,999,999
// and 888,888,888 under it. Before, both went through, skipping the
// amount_cap escalation and the dual control. Now the override is bounded
// by the amount_cap of 1,000,000: both are held for the cfo and the
// controller, and an entry within the cap still goes through.
func TestOverrideAttack999999999(t *testing.T) {
	w, keys := overrideWorld(t, nil)
	ov := grant(t, w, keys, approvals.OverrideRequest{}, cfo)
	for _, amount := range []string{"999999999", "888888888"} {
		v := w.g.Check(entryWith(ov.Token, amount))
		wantHeld(t, w, v, ov, record.AmountOverCap, record.OverrideOverAmount, "cfo", "controller")
	}
	wantOverridden(t, w, w.g.Check(entryWith(ov.Token, "250000")), ov, "1000000")
	wantOverridden(t, w, w.g.Check(entryWith(ov.Token, "1000000")), ov, "1000000")
	wantHeld(t, w, w.g.Check(entryWith(ov.Token, "1000000.01")), ov, record.AmountOverCap, record.OverrideOverAmount, "cfo", "controller")
	if got, _ := w.svc.Get(ov.ID); got.Uses != 2 {
		t.Errorf("%d uses counted, want 2", got.Uses)
	}
}

// TestOverrideUnreadableAmountIsHeld: an amount the rules cannot read is
// never within the bound.
func TestOverrideUnreadableAmountIsHeld(t *testing.T) {
	w, keys := overrideWorld(t, nil)
	ov := grant(t, w, keys, approvals.OverrideRequest{}, cfo)
	c := entryWith(ov.Token, `"a lot"`)
	wantHeld(t, w, w.g.Check(c), ov, record.AmountUnreadable, record.OverrideAmountUnreadable, "cfo", "controller")
}

// TestOverrideMaxAmount: an override above the cap, approved by the
// escalation's roles as well, covers up to its max_amount exactly.
func TestOverrideMaxAmount(t *testing.T) {
	w, keys := overrideWorld(t, nil)
	ov := grant(t, w, keys, approvals.OverrideRequest{MaxAmount: "5000000"}, cfo, controller)
	wantOverridden(t, w, w.g.Check(entryWith(ov.Token, "5000000")), ov, "5000000")
	wantOverridden(t, w, w.g.Check(entryWith(ov.Token, "5000000.00")), ov, "5000000")
	wantHeld(t, w, w.g.Check(entryWith(ov.Token, "5000000.01")), ov, record.AmountOverCap, record.OverrideOverAmount, "cfo", "controller")

	// One below the cap bounds below it too: the rest needs the finance manager.
	low := grant(t, w, keys, approvals.OverrideRequest{MaxAmount: "1000"}, cfo)
	wantOverridden(t, w, w.g.Check(entryWith(low.Token, "1000")), low, "1000")
	wantHeld(t, w, w.g.Check(entryWith(low.Token, "1001")), low, record.ApprovalRequired, record.OverrideOverAmount, "finance_manager")
}

// TestOverrideMaxUses: the max_uses-th use goes through, the next is held
// for the policy; the manifest's max_uses bounds an override naming none.
func TestOverrideMaxUses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest func(string) string
		req      approvals.OverrideRequest
	}{
		{"named", nil, approvals.OverrideRequest{MaxUses: ptr(3)}},
		{"from the manifest", func(s string) string {
			return strings.Replace(s, `"max_duration": "8h"}`, `"max_duration": "8h", "max_uses": 3}`, 1)
		}, approvals.OverrideRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, keys := overrideWorld(t, tc.manifest)
			ov := grant(t, w, keys, tc.req, cfo)
			for i := range 3 {
				v := w.g.Check(entryWith(ov.Token, fmt.Sprint(100+i)))
				wantOverridden(t, w, v, ov, "1000000")
				if rec := recordOf(t, w, v); rec.Data["override_max_uses"] != 3 {
					t.Errorf("use %d: override_max_uses %v", i+1, rec.Data["override_max_uses"])
				}
			}
			wantHeld(t, w, w.g.Check(entryWith(ov.Token, "103")), ov, record.ApprovalRequired, record.OverrideExhausted, "finance_manager")
			if got, _ := w.svc.Get(ov.ID); got.Uses != 3 {
				t.Errorf("%d uses, want 3", got.Uses)
			}
		})
	}
}

func ptr(n int) *int { return &n }

// TestOverrideRacingUses: requests racing for the last uses never get more
// than max_uses through; the others are held, none is lost.
func TestOverrideRacingUses(t *testing.T) {
	const racers, maxUses = 40, 5
	w, keys := overrideWorld(t, nil)
	ov := grant(t, w, keys, approvals.OverrideRequest{MaxUses: ptr(maxUses)}, cfo)
	verdicts := make([]*gate.Verdict, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			verdicts[i] = w.g.Check(entryWith(ov.Token, fmt.Sprint(1000+i)))
		}()
	}
	wg.Wait()
	through, held := 0, 0
	for _, v := range verdicts {
		switch {
		case v.Forward() && v.Reason == record.Override:
			through++
		case v.Outcome == rules.Pending:
			held++
			if rec := recordOf(t, w, v); rec.Data["override_not_applied"] != string(record.OverrideExhausted) {
				t.Errorf("held record %+v", rec)
			}
		default:
			t.Errorf("verdict %+v", v)
		}
	}
	if through != maxUses || held != racers-maxUses {
		t.Errorf("%d through, %d held; want %d and %d", through, held, maxUses, racers-maxUses)
	}
	if got, _ := w.svc.Get(ov.ID); got.Uses != maxUses {
		t.Errorf("%d uses counted, want %d", got.Uses, maxUses)
	}
}
