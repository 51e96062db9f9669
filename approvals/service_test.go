package approvals_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// service is the approvals service over an in-memory store and chain, with
// the example manifest and the test cast, at the fixed instant now.
func service(t testing.TB) (*approvals.Service, *approvalstest.Ledger) {
	t.Helper()
	m, err := rules.LoadManifest("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, principals(t, cast))
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(gw)
	if err != nil {
		t.Fatal(err)
	}
	l := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(l), Ledger: l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return svc, l
}

func hold(t *testing.T, svc *approvals.Service, req rules.Requirement) *approvals.Approval {
	t.Helper()
	a := svc.NewPending(approvals.Pending{App: agentApp, Method: "POST", URL: "https://erp.example.com/api/v1/journal-entries",
		Body: []byte(`{"amount":250000}`), OnBehalfOf: analyst, Digest: testDigest,
		Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Reason: record.DualApproval,
			Requirement: req, ApprovalTTL: 24 * time.Hour}})
	if _, err := svc.Hold(a, ledger.Entry{Kind: record.KindRequest, Decision: record.Pending, ApprovalID: a.ID}); err != nil {
		t.Fatal(err)
	}
	return a
}

func sub(a *approvals.Approval, who, decision string) approvals.Submission {
	at := now.UTC().Format(time.RFC3339)
	return approvals.Submission{Approver: who, Decision: decision, SignedAt: at,
		Signature: approvals.Sign(keyOf(who), a.ID, a.Digest, decision, who, at)}
}

// TestDecideConcurrently: the CFO and the controller sign a dual approval
// at the same moment; both count, it is approved once, and one capability
// is issued and recorded.
func TestDecideConcurrently(t *testing.T) {
	for range 20 {
		svc, l := service(t)
		a := hold(t, svc, dualCFOController)
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, who := range []string{"cfo@corp.example", "controller@corp.example"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, ref, err := svc.Decide(a.ID, sub(a, who, approvals.Approve))
				if ref != nil {
					err = ref
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, _ := svc.Get(a.ID)
		if got.Status != approvals.StatusApproved || len(got.Decisions) != 2 || got.Token == "" {
			t.Fatalf("after both signed: %+v", got)
		}
		issued := 0
		for _, r := range l.Records() {
			if r.Kind == record.KindCapability && r.Decision == record.Issued {
				issued++
			}
		}
		if issued != 1 {
			t.Fatalf("%d capability records, want 1", issued)
		}
	}
}

// TestRefusedDecisionIsRecorded: a decision that does not count changes
// nothing but is a record of its own.
func TestRefusedDecisionIsRecorded(t *testing.T) {
	svc, l := service(t)
	a := hold(t, svc, requireCFO)
	_, ref, err := svc.Decide(a.ID, sub(a, analyst, approvals.Approve))
	if err != nil || ref == nil || ref.Code != record.RefuseSelf {
		t.Fatalf("self approval: %v %v", ref, err)
	}
	last := l.Last()
	if last.Kind != record.KindApproval || last.Decision != record.Refused || last.Reason != record.RefuseSelf {
		t.Errorf("refusal record %+v", last)
	}
	if got, _ := svc.Get(a.ID); got.Status != approvals.StatusPending || len(got.Decisions) != 0 {
		t.Errorf("a refused decision changed the approval: %+v", got)
	}
	if _, _, err := svc.Decide("apr_nope", sub(a, "cfo@corp.example", approvals.Approve)); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}

// TestOverrideLifecycle: an override is asked for, approved by the
// manifest's override roles, and its token then passes Override; the
// denylist can never be asked for.
func TestOverrideLifecycle(t *testing.T) {
	svc, _ := service(t)
	for _, bad := range []approvals.OverrideRequest{
		{Action: "audit_modify", Duration: "1h", Justification: "x", RequestedBy: "ops-lead@corp.example"},
		{Action: "financial_report", Duration: "9h", Justification: "x", RequestedBy: "ops-lead@corp.example"},
		{Action: "financial_report", Duration: "1h", RequestedBy: "ops-lead@corp.example"},
		{Action: "financial_report", Duration: "1h", Justification: "x", RequestedBy: "Ops-Lead@corp.example"}, // an id nobody has
	} {
		var br *approvals.BadRequestError
		if _, err := svc.RequestOverride(bad); !errors.As(err, &br) {
			t.Errorf("%+v: %v, want a bad request", bad, err)
		}
	}
	ov, err := svc.RequestOverride(approvals.OverrideRequest{Action: "financial_report", Duration: "4h",
		Justification: "10-K deadline", RequestedBy: "ops-lead@corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ref, _ := svc.Decide(ov.ID, sub(ov, "ops-lead@corp.example", approvals.Approve)); ref == nil || ref.Code != record.RefuseSelf {
		t.Errorf("the requester approved their own override: %v", ref)
	}
	got, ref, err := svc.Decide(ov.ID, sub(ov, "cfo@corp.example", approvals.Approve))
	if err != nil || ref != nil || got.Status != approvals.StatusApproved {
		t.Fatalf("cfo approval: %+v %v %v", got, ref, err)
	}
	if _, _, err := svc.Override(got.Token, ov.App, "financial_report"); err != nil {
		t.Errorf("approved override token refused: %v", err)
	}
	if _, _, err := svc.Override(got.Token, ov.App, "journal_entry"); approvals.TokenReason(err) != record.ActionMismatch {
		t.Errorf("override token for another action: %v", err)
	}
	if _, err := svc.Capability(got.Token, ov.App, "financial_report", testDigest); approvals.TokenReason(err) != record.InvalidToken {
		t.Errorf("override token as a capability: %v", err)
	}
}

// TestMaxPendingSurvivesARestart: a new service over the same store counts
// the pending approvals it finds.
func TestMaxPendingSurvivesARestart(t *testing.T) {
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := rules.ParseManifest([]byte(strings.Replace(string(raw), "{", `{"max_pending": 1,`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, principals(t, cast))
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	l := &approvalstest.Ledger{}
	store := approvalstest.NewStore(l)
	start := func() *approvals.Service {
		svc, err := approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: iss,
			Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	hold(t, start(), requireCFO)
	svc := start() // the restart
	a := svc.NewPending(approvals.Pending{App: agentApp, Digest: testDigest,
		Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Requirement: requireCFO, ApprovalTTL: time.Hour}})
	if _, err := svc.Hold(a, ledger.Entry{Kind: record.KindRequest, ApprovalID: a.ID}); !errors.Is(err, approvals.ErrTooManyPending) {
		t.Fatalf("second hold after a restart: %v, want ErrTooManyPending", err)
	}
	if _, err := svc.Get(a.ID); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("a refused hold stored its approval: %v", err)
	}
}

// TestListPage: pages of a long list follow each other by cursor, oldest
// first, with nothing left out or repeated; a cursor from elsewhere is
// refused.
func TestListPage(t *testing.T) {
	svc, _ := service(t)
	for range 25 {
		hold(t, svc, requireCFO)
	}
	all, _ := svc.List(approvals.StatusPending)
	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		p, err := svc.ListPage(approvals.StatusPending, cursor, 10)
		if err != nil || p.Total != 25 || len(p.Approvals) > 10 {
			t.Fatalf("page %d: %+v %v", pages, p, err)
		}
		for _, a := range p.Approvals {
			seen = append(seen, a.ID)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(seen) != 25 {
		t.Fatalf("%d seen, want 25", len(seen))
	}
	for i, a := range all {
		if seen[i] != a.ID {
			t.Fatalf("page order differs from the list at %d", i)
		}
	}
	if _, err := svc.ListPage(approvals.StatusPending, "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", 10); !errors.Is(err, approvals.ErrBadCursor) {
		t.Errorf("unknown cursor: %v", err)
	}
}

// TestReverify: an approval as its decisions make it holds up; one whose
// stored status or decisions were changed behind the proxy's back does
// not.
func TestReverify(t *testing.T) {
	svc, _ := service(t)
	eng := func() *rules.Principals { return principals(t, cast) }
	a := hold(t, svc, dualCFOController)
	for _, who := range []string{"cfo@corp.example", "controller@corp.example"} {
		if _, ref, err := svc.Decide(a.ID, sub(a, who, approvals.Approve)); ref != nil || err != nil {
			t.Fatal(ref, err)
		}
	}
	got, _ := svc.Get(a.ID)
	if err := approvals.Reverify(got, eng(), nil); err != nil {
		t.Fatalf("a true approval: %v", err)
	}
	forged := got.Clone()
	forged.Decisions = forged.Decisions[:1]
	if err := approvals.Reverify(forged, eng(), nil); err == nil {
		t.Error("approved with one of two decisions: held up")
	}
	forged = got.Clone()
	forged.Decisions[1].Approver = "cfo2@corp.example"
	if err := approvals.Reverify(forged, eng(), nil); err == nil {
		t.Error("a decision's approver changed: held up")
	}
	forged = got.Clone()
	forged.Digest = otherDigest
	if err := approvals.Reverify(forged, eng(), nil); err == nil {
		t.Error("the digest changed: held up")
	}
}
