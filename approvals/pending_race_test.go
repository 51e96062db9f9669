package approvals_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
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

// racyStore lets something happen right after Create commits and before
// Service.Hold returns: what a concurrent expiry sweep or approver can do.
type racyStore struct {
	*approvalstest.Store
	after func(id string)
}

func (r *racyStore) Create(ctx context.Context, a *approvals.Approval, e ledger.Entry) (ledger.Record, error) {
	rec, err := r.Store.Create(ctx, a, e)
	if err == nil && r.after != nil {
		r.after(a.ID)
	}
	return rec, err
}

func TestMaxPendingCountsAnApprovalClosedAsItIsStored(t *testing.T) {
	raw, _ := os.ReadFile("../examples/manifests/sox-financial.json")
	m, err := rules.ParseManifest([]byte(strings.Replace(string(raw), "{", `{"max_pending": 1,`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, principals(t, cast))
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	l := &approvalstest.Ledger{}
	rs := &racyStore{Store: approvalstest.NewStore(l)}
	clock := now
	svc, err := approvals.New(approvals.Config{Store: rs, Ledger: l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	// An expiry sweep runs the moment the approval is stored, before Hold
	// returns: its place must be freed all the same.
	rs.after = func(string) {
		clock = clock.Add(25 * time.Hour)
		if n, err := svc.ExpireDue(); n != 1 || err != nil {
			t.Fatalf("ExpireDue = %d, %v", n, err)
		}
	}
	hold(t, svc, requireCFO)
	rs.after = nil
	if list, _ := svc.List(approvals.StatusPending); len(list) != 0 {
		t.Fatalf("%d pending", len(list))
	}
	a := svc.NewPending(approvals.Pending{App: agentApp, Digest: testDigest,
		Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Requirement: requireCFO, ApprovalTTL: time.Hour}})
	if _, err := svc.Hold(a, ledger.Entry{Kind: record.KindRequest, ApprovalID: a.ID}); errors.Is(err, approvals.ErrTooManyPending) {
		t.Errorf("no approval is pending, yet the app is refused: %v (the count leaked)", err)
	}
}
