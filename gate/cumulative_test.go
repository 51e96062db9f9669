package gate_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/cumulative"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// cumulManifest: journal_entry runs on its own up to amount_cap; payment
// needs a finance manager. Both have cumulative_cap 1,000,000 a day;
// tiny has 0.3 an hour, for exact decimals.
const cumulManifest = `{"app_id": "financial-ai-assistant", "version": "1",
 "actions": {
  "journal_entry": {"approval_policy": "AUTO_APPROVE", "amount_cap": 1000000,
    "match": [{"method": "POST", "path": "/api/v1/journal-entries"}], "amount": ["amount"],
    "escalation": {"approval_policy": "DUAL_APPROVAL", "roles_required": ["cfo", "controller"]},
    "cumulative_cap": {"amount": 1000000, "window": "24h"}},
  "payment": {"approval_policy": "REQUIRE_APPROVAL", "roles_required": ["finance_manager"], "amount_cap": 1000000,
    "match": [{"method": "POST", "path": "/api/v1/payments"}], "amount": ["amount"],
    "cumulative_cap": {"amount": 1000000, "window": "24h"}},
  "tiny": {"approval_policy": "AUTO_APPROVE",
    "match": [{"method": "POST", "path": "/api/v1/tiny"}], "amount": ["amount"],
    "cumulative_cap": {"amount": 0.3, "window": "1h"}}
 }}`

// cumulWorld is a gate over a real ledger file, approvals store and
// cumulative store, the way serve wires them.
type cumulWorld struct {
	*world
	path string
	led  *ledger.Ledger
	sums *cumulative.Store
	keys map[string]ed25519.PrivateKey
}

func newCumulWorld(t *testing.T, path string, clock time.Time) *cumulWorld {
	t.Helper()
	m, err := rules.ParseManifest([]byte(cumulManifest))
	if err != nil {
		t.Fatal(err)
	}
	w := &cumulWorld{world: &world{clock: clock}, path: path, keys: map[string]ed25519.PrivateKey{}}
	var b strings.Builder
	b.WriteString("principals:\n  - id: " + analyst + "\n    roles: [staff_accountant]\n")
	for _, p := range [][2]string{{fm, "finance_manager"}, {"cfo@corp.example", "cfo"}, {"controller@corp.example", "controller"}} {
		// Keys derived from the id, so that a restarted world has the same.
		seed := make([]byte, ed25519.SeedSize)
		copy(seed, p[0])
		priv := ed25519.NewKeyFromSeed(seed)
		w.keys[p[0]] = priv
		der, _ := x509.MarshalPKIXPublicKey(priv.Public())
		pemText := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "\n", "\n      ")
		fmt.Fprintf(&b, "  - id: %s\n    roles: [%s]\n    public_key: |\n      %s\n", p[0], p[1], pemText)
	}
	pr, err := rules.ParsePrincipals([]byte(b.String()), ".")
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, pr)
	if w.led, err = ledger.Open(path, ledger.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.led.Close() })
	store, err := approvalstore.Open(w.led)
	if err != nil {
		t.Fatal(err)
	}
	if w.sums, err = cumulative.Open(w.led); err != nil {
		t.Fatal(err)
	}
	gwSeed := make([]byte, ed25519.SeedSize)
	iss, err := tokens.NewIssuer(ed25519.NewKeyFromSeed(gwSeed))
	if err != nil {
		t.Fatal(err)
	}
	w.svc, err = approvals.New(approvals.Config{Store: store, Ledger: w.led, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	w.g, err = gate.New(gate.Config{Engine: eng, Ledger: w.led, Approvals: w.svc, Logger: zerolog.Nop(), Now: w.now, Cumulative: w.sums})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func posting(path, amount string) *gate.Call {
	return &gate.Call{Door: "sidecar", Req: rules.Request{
		Method: "POST", Scheme: "http", Host: "erp.example.com", Path: path, ContentType: "application/json",
		Body: []byte(`{"account":"2100","amount":` + amount + `}`), App: app, OnBehalfOf: analyst,
	}}
}

func (w *cumulWorld) sum(t *testing.T, action string) string {
	t.Helper()
	a, _ := w.g.Engine().Manifest().Action(action)
	s, err := w.sums.Sum(action, w.now(), a.CumulativeCap.Window)
	if err != nil {
		t.Fatal(err)
	}
	return s.RatString()
}

func (w *cumulWorld) sign(t *testing.T, id string, by ...string) {
	t.Helper()
	a, err := w.svc.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range by {
		at := w.now().UTC().Format(time.RFC3339)
		sub := approvals.Submission{Approver: who, Decision: approvals.Approve, SignedAt: at,
			Signature: approvals.Sign(w.keys[who], id, a.Digest, approvals.Approve, who, at)}
		if _, ref, err := w.svc.Decide(id, sub); err != nil || ref != nil {
			t.Fatalf("decide by %s: %v %v", who, ref, err)
		}
	}
}

func wantAllowed(t *testing.T, v *gate.Verdict, reason record.Reason) {
	t.Helper()
	if !v.Forward() || v.Outcome != rules.Allow || v.Reason != reason || v.Record == 0 {
		t.Fatalf("want allow/%s, got %+v", reason, v)
	}
}

func wantCumulHeld(t *testing.T, v *gate.Verdict, roles ...string) {
	t.Helper()
	if v.Forward() || v.Outcome != rules.Pending || v.Reason != record.CumulativeOverCap || v.ApprovalID == "" ||
		strings.Join(v.RequiredRoles, ",") != strings.Join(roles, ",") {
		t.Fatalf("want pending/cumulative_over_cap needing %v, got %+v", roles, v)
	}
}

// The attack: a $5M posting split into ten of $500k, each under
// amount_cap. The third takes the day's sum over cumulative_cap and gets
// the escalation, as does every one after it; held ones add nothing, and
// once the window has passed the postings run again.
func TestCumulativeCapStructuringAttack(t *testing.T) {
	w := newCumulWorld(t, filepath.Join(t.TempDir(), "ledger.db"), now)
	const path = "/api/v1/journal-entries"
	var last *gate.Verdict
	for i := range 10 {
		v := w.g.Check(posting(path, "500000"))
		last = v
		switch {
		case i < 2:
			wantAllowed(t, v, record.AutoApprove)
		default:
			wantCumulHeld(t, v, "cfo", "controller")
			a, err := w.svc.Get(v.ApprovalID)
			if err != nil || a.Reason != record.CumulativeOverCap || a.Amount != "500000" {
				t.Fatalf("approval %+v %v", a, err)
			}
		}
		w.advance(time.Minute)
	}
	if got := w.sum(t, "journal_entry"); got != "1000000" {
		t.Fatalf("sum %s, want 1000000: held requests must not count", got)
	}
	// The record says why.
	raw, err := w.led.Get(last.Record)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"reason":"cumulative_over_cap"`) || !strings.Contains(string(raw), "over cumulative_cap 1000000") {
		t.Errorf("record %s", raw)
	}

	// An escalated approval, signed by the senior approvers, lets its
	// request through and does not count: they saw it.
	v := w.g.Check(posting(path, "500000"))
	wantCumulHeld(t, v, "cfo", "controller")
	w.sign(t, v.ApprovalID, "cfo@corp.example", "controller@corp.example")
	c := posting(path, "500000")
	c.ApprovalID = v.ApprovalID
	wantAllowed(t, w.g.Check(c), record.Approved)
	if got := w.sum(t, "journal_entry"); got != "1000000" {
		t.Fatalf("sum %s after an escalated approval, want 1000000", got)
	}

	// The first two were let through at now; a day later they leave the
	// window exactly.
	w.mu.Lock()
	w.clock = now.Add(24 * time.Hour)
	w.mu.Unlock()
	wantCumulHeld(t, w.g.Check(posting(path, "500000.01")), "cfo", "controller") // 500000 of minute 1 still counts
	w.advance(time.Minute)
	wantAllowed(t, w.g.Check(posting(path, "500000")), record.AutoApprove)
	wantAllowed(t, w.g.Check(posting(path, "500000")), record.AutoApprove)
	wantCumulHeld(t, w.g.Check(posting(path, "1")), "cfo", "controller")
}

// Amounts are summed exactly: 0.1 + 0.2 is 0.3, within a cap of 0.3
// (binary floating point makes it 0.30000000000000004).
func TestCumulativeCapExactDecimals(t *testing.T) {
	w := newCumulWorld(t, filepath.Join(t.TempDir(), "ledger.db"), now)
	const path = "/api/v1/tiny"
	wantAllowed(t, w.g.Check(posting(path, "0.1")), record.AutoApprove)
	wantAllowed(t, w.g.Check(posting(path, "0.2")), record.AutoApprove)
	if got := w.sum(t, "tiny"); got != "3/10" {
		t.Fatalf("sum %s, want 3/10", got)
	}
	wantCumulHeld(t, w.g.Check(posting(path, "0.000000000000000001")), "cfo")
	wantAllowed(t, w.g.Check(posting(path, "0")), record.AutoApprove)
}

// The sums are in the ledger's file: a restarted proxy still holds the
// third posting.
func TestCumulativeCapSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	w := newCumulWorld(t, path, now)
	wantAllowed(t, w.g.Check(posting("/api/v1/journal-entries", "500000")), record.AutoApprove)
	wantAllowed(t, w.g.Check(posting("/api/v1/journal-entries", "499999.99")), record.AutoApprove)
	if err := w.led.Close(); err != nil {
		t.Fatal(err)
	}
	w = newCumulWorld(t, path, now.Add(time.Hour))
	if got := w.sum(t, "journal_entry"); got != new(big.Rat).SetFrac64(99999999, 100).RatString() {
		t.Fatalf("sum after restart %s", got)
	}
	wantCumulHeld(t, w.g.Check(posting("/api/v1/journal-entries", "0.02")), "cfo", "controller")
	wantAllowed(t, w.g.Check(posting("/api/v1/journal-entries", "0.01")), record.AutoApprove)
}

// A request refused, or held, never adds to the sum; one approved at the
// base level does, when it is let through.
func TestCumulativeCapCountsOnlyWhatGoesThrough(t *testing.T) {
	w := newCumulWorld(t, filepath.Join(t.TempDir(), "ledger.db"), now)
	const path = "/api/v1/payments"
	// Refused: two amount keys.
	c := posting(path, "600000")
	c.Req.Body = []byte(`{"amount":600000,"AMOUNT":1}`)
	if v := w.g.Check(c); v.Outcome != rules.Deny || v.Reason != record.AmbiguousBody {
		t.Fatalf("verdict %+v", v)
	}
	// Held at the base level, twice: nothing is counted yet.
	first, second := w.g.Check(posting(path, "600000")), w.g.Check(posting(path, "600000"))
	for _, v := range []*gate.Verdict{first, second} {
		if v.Outcome != rules.Pending || v.Reason != record.ApprovalRequired || strings.Join(v.RequiredRoles, ",") != "finance_manager" {
			t.Fatalf("verdict %+v", v)
		}
	}
	// Over amount_cap: escalated by the rules, never counted.
	if v := w.g.Check(posting(path, "1000001")); v.Reason != record.AmountOverCap {
		t.Fatalf("verdict %+v", v)
	}
	if got := w.sum(t, "payment"); got != "0" {
		t.Fatalf("sum %s, want 0", got)
	}
	// The finance manager approves both; the first retry goes through and
	// counts.
	w.sign(t, first.ApprovalID, fm)
	w.sign(t, second.ApprovalID, fm)
	c = posting(path, "600000")
	c.ApprovalID = first.ApprovalID
	wantAllowed(t, w.g.Check(c), record.Approved)
	if got := w.sum(t, "payment"); got != "600000" {
		t.Fatalf("sum %s, want 600000", got)
	}
	// The second was approved below the escalation level while the room
	// was there; now it is not, so its retry is held anew for the senior
	// approval, and the base approval stays unused.
	c = posting(path, "600000")
	c.ApprovalID = second.ApprovalID
	v := w.g.Check(c)
	wantCumulHeld(t, v, "cfo")
	if v.ApprovalID == second.ApprovalID {
		t.Fatal("held on the base approval")
	}
	if a, _ := w.svc.Get(second.ApprovalID); a.Consumed != 0 {
		t.Errorf("base approval consumed by %d", a.Consumed)
	}
	if got := w.sum(t, "payment"); got != "600000" {
		t.Fatalf("sum %s, want 600000", got)
	}
	// A new request under the room is held at the base level as before.
	if v := w.g.Check(posting(path, "400000")); v.Reason != record.ApprovalRequired {
		t.Fatalf("verdict %+v", v)
	}
	// Asking for a junior escalation does not stand in for the senior one.
	c = posting(path, "400001")
	c.Req.Escalation = "staff_accountant"
	wantCumulHeld(t, w.g.Check(c), "cfo", "staff_accountant")
}

// Requests racing one another cannot together pass the cap: the sum is
// checked again in the transaction that counts it.
func TestCumulativeCapRacingRequests(t *testing.T) {
	w := newCumulWorld(t, filepath.Join(t.TempDir(), "ledger.db"), now)
	const n = 16
	out := make(chan *gate.Verdict, n)
	for range n {
		go func() { out <- w.g.Check(posting("/api/v1/journal-entries", "300000")) }()
	}
	allowed := 0
	for range n {
		v := <-out
		switch {
		case v.Forward():
			allowed++
		case v.Reason != record.CumulativeOverCap:
			t.Errorf("verdict %+v", v)
		}
	}
	if allowed != 3 {
		t.Errorf("%d allowed, want 3", allowed)
	}
	if got := w.sum(t, "journal_entry"); got != "900000" {
		t.Errorf("sum %s, want 900000", got)
	}
}

// staleSums answers every Sum with 0, as a request racing others sees the
// sum before they are counted: the check in the transaction must hold.
type staleSums struct{ *cumulative.Store }

func (staleSums) Sum(string, time.Time, time.Duration) (*big.Rat, error) { return new(big.Rat), nil }

func TestCumulativeCapCheckedInTheTransaction(t *testing.T) {
	w := newCumulWorld(t, filepath.Join(t.TempDir(), "ledger.db"), now)
	var err error
	w.g, err = gate.New(gate.Config{Engine: w.g.Engine(), Ledger: w.led, Approvals: w.svc, Logger: zerolog.Nop(), Now: w.now,
		Cumulative: staleSums{w.sums}})
	if err != nil {
		t.Fatal(err)
	}
	// Automatic allows.
	wantAllowed(t, w.g.Check(posting("/api/v1/journal-entries", "600000")), record.AutoApprove)
	v := w.g.Check(posting("/api/v1/journal-entries", "600000"))
	wantCumulHeld(t, v, "cfo", "controller")
	if raw, _ := w.led.Get(v.Record); !strings.Contains(string(raw), "took the room") {
		t.Errorf("record %s", raw)
	}
	// The retry of a base-level approval.
	first, second := w.g.Check(posting("/api/v1/payments", "600000")), w.g.Check(posting("/api/v1/payments", "600000"))
	w.sign(t, first.ApprovalID, fm)
	w.sign(t, second.ApprovalID, fm)
	for i, id := range []string{first.ApprovalID, second.ApprovalID} {
		c := posting("/api/v1/payments", "600000")
		c.ApprovalID = id
		v := w.g.Check(c)
		if i == 0 {
			wantAllowed(t, v, record.Approved)
			continue
		}
		wantCumulHeld(t, v, "cfo")
		if v.Capability != "" || v.ApprovalID == id {
			t.Errorf("verdict %+v", v)
		}
		if a, _ := w.svc.Get(id); a.Consumed != 0 {
			t.Errorf("base approval consumed by %d though nothing went through", a.Consumed)
		}
	}
	if got := w.sum(t, "payment"); got != "600000" {
		t.Errorf("sum %s, want 600000", got)
	}
}
