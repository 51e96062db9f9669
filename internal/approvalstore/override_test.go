package approvalstore

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// approvedOverride is an approved override of journal entries under token
// tok_1 that may let through maxUses requests.
func approvedOverride(maxUses int) *approvals.Approval {
	return &approvals.Approval{
		ID: testID, Kind: approvals.KindOverride, Status: approvals.StatusApproved,
		Action: "journal_entry", App: "finance-agent", Justification: "close", RequestedBy: "ops-lead@corp.example",
		Duration: "4h0m0s", MaxAmount: "250000", MaxUses: maxUses, Reason: "override_requested",
		Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}}}, RequiredRoles: []string{"cfo"},
		Decisions: []approvals.Decision{}, CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour),
		TokenID: "tok_1", TokenExp: now.Add(4 * time.Hour), Completed: now,
	}
}

func useEntry(id string) ledger.Entry {
	return ledger.Entry{Kind: "override", App: "finance-agent", Action: "journal_entry", Decision: "allow", Reason: "override", ApprovalID: id}
}

// TestOverrideUsesSurviveARestart: each use is counted in the transaction
// of its record; after a restart the count is where it was, and a use
// beyond max_uses writes nothing.
func TestOverrideUsesSurviveARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	putAll(t, s, approvedOverride(2))
	if _, err := s.UseOverride(ctx, testID, "tok_other", useEntry(testID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("use under another token: %v", err)
	}
	if _, err := s.UseOverride(ctx, otherID, "tok_1", useEntry(otherID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("use of an unknown override: %v", err)
	}
	if _, err := s.UseOverride(ctx, testID, "tok_1", useEntry(testID)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if s, err = Open(l); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(testID); got.Uses != 1 {
		t.Fatalf("after a restart: %d uses, want 1", got.Uses)
	}
	if _, err := s.UseOverride(ctx, testID, "tok_1", useEntry(testID)); err != nil {
		t.Fatalf("the last use: %v", err)
	}
	head := l.Head().Seq
	if _, err := s.UseOverride(ctx, testID, "tok_1", useEntry(testID)); !errors.Is(err, approvals.ErrOverrideExhausted) {
		t.Fatalf("a use beyond max_uses: %v, want ErrOverrideExhausted", err)
	}
	if got, _ := s.Get(testID); got.Uses != 2 || l.Head().Seq != head {
		t.Errorf("a refused use left %d uses and head %d (was %d)", got.Uses, l.Head().Seq, head)
	}
}

// TestOverrideUsesRace: requests racing for an override's uses share group
// commits; exactly max_uses of them are written, whatever the interleaving.
func TestOverrideUsesRace(t *testing.T) {
	const racers, maxUses = 64, 7
	_, s := openStore(t)
	putAll(t, s, approvedOverride(maxUses))
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		written, refused, bad int
	)
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UseOverride(t.Context(), testID, "tok_1", useEntry(testID))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				written++
			case errors.Is(err, approvals.ErrOverrideExhausted):
				refused++
			default:
				bad++
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if written != maxUses || refused != racers-maxUses || bad != 0 {
		t.Errorf("%d uses written, %d refused, %d failed; want %d and %d", written, refused, bad, maxUses, racers-maxUses)
	}
	if got, _ := s.Get(testID); got.Uses != maxUses || s.l.Head().Seq != maxUses {
		t.Errorf("count %d, %d records; want %d of each", got.Uses, s.l.Head().Seq, maxUses)
	}
}

// TestOverrideWithoutMaxUses counts every use and refuses none.
func TestOverrideWithoutMaxUses(t *testing.T) {
	_, s := openStore(t)
	putAll(t, s, approvedOverride(0))
	for range 5 {
		if _, err := s.UseOverride(t.Context(), testID, "tok_1", useEntry(testID)); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.Get(testID); got.Uses != 5 {
		t.Errorf("%d uses, want 5", got.Uses)
	}
}
