package pgstore

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

var errDisk = errors.New("no space left on device")

// TestConsumeRecordFails: when the record of a use cannot be written (a
// full disk, or the entry's own hook refusing it, as a cumulative cap
// does), the claim is given back: the approval is unconsumed in
// PostgreSQL, its token unused, and the next try succeeds. The error is
// the ledger's, not a refusal (the door answers 503).
func TestConsumeRecordFails(t *testing.T) {
	s, l, dsn := openStore(t)
	ctx := t.Context()
	mustCreate(t, s, pending(requireCFO))
	approve(t, s, testID, "tok_1")
	head := l.len()

	l.setFail(errDisk)
	_, err := s.Consume(ctx, testID, "tok_1", entry(testID))
	if !errors.Is(err, errDisk) || approvals.IsRefusal(err) {
		t.Fatalf("consume with a failing ledger: %v", err)
	}
	l.setFail(nil)
	overCap := errors.New("cumulative cap reached")
	e := entry(testID)
	e.Tx = func(*bolt.Tx, *ledger.Record) error { return overCap }
	if _, err := s.Consume(ctx, testID, "tok_1", e); !errors.Is(err, overCap) {
		t.Fatalf("consume whose hook fails: %v", err)
	}
	if l.len() != head {
		t.Fatalf("failed uses wrote %d records", l.len()-head)
	}
	if got := get(t, s, testID); got.Consumed != 0 {
		t.Errorf("consumed %d after failed uses", got.Consumed)
	}
	if got := sql(t, dsn, "SELECT count(*)::text FROM tokens_used"); got != "0" {
		t.Errorf("%s tokens marked used after failed uses", got)
	}
	if got := sql(t, dsn, "SELECT coalesce(consumed_instance, '') || coalesce(consumed_claim, '') FROM approvals"); got != "" {
		t.Errorf("claim left behind: %q", got)
	}
	if _, err := s.Consume(ctx, testID, "tok_1", entry(testID)); err != nil {
		t.Errorf("consume once the ledger works: %v", err)
	}
}

// TestOtherRecordsFail: a change whose record cannot be written is not
// made: Create, Update, UseOverride, Release.
func TestOtherRecordsFail(t *testing.T) {
	s, l, _ := openStore(t)
	ctx := t.Context()
	o := approvedOverride(1)
	o.ID = otherID
	mustCreate(t, s, o)
	mustCreate(t, s, pending(requireCFO))
	approve(t, s, testID, "tok_1")
	used, err := s.Consume(ctx, testID, "tok_1", entry(testID))
	if err != nil {
		t.Fatal(err)
	}
	l.setFail(errDisk)
	b := pending(requireCFO)
	b.ID = idOf('b')
	if _, err := s.Create(ctx, b, entry(b.ID)); !errors.Is(err, errDisk) {
		t.Errorf("create: %v", err)
	}
	if _, err := s.Get(b.ID); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("an approval whose record failed exists: %v", err)
	}
	if _, err := s.Update(ctx, otherID, entry(otherID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status = approvals.StatusRejected
		return nil
	}); !errors.Is(err, errDisk) {
		t.Errorf("update: %v", err)
	}
	if _, err := s.UseOverride(ctx, otherID, "tok_1", useEntry(otherID)); !errors.Is(err, errDisk) {
		t.Errorf("use override: %v", err)
	}
	if _, err := s.Release(ctx, testID, "tok_1", used.Seq, entry(testID)); !errors.Is(err, errDisk) {
		t.Errorf("release: %v", err)
	}
	if got := get(t, s, otherID); got.Status != approvals.StatusApproved || got.Uses != 0 {
		t.Errorf("override after failed records: %s, %d uses", got.Status, got.Uses)
	}
	if got := get(t, s, testID); got.Consumed != used.Seq {
		t.Errorf("after a failed release: consumed %d, want %d", got.Consumed, used.Seq)
	}
	l.setFail(nil)
	if _, err := s.UseOverride(ctx, otherID, "tok_1", useEntry(otherID)); err != nil {
		t.Errorf("the override's one use once the ledger works: %v", err)
	}
}

// killTxAfterRecord makes l end, once its next record is durable, the
// connection of every transaction left open on dsn: the commit that
// follows the record fails, as when PostgreSQL goes away at that moment.
func killTxAfterRecord(t *testing.T, l *fakeLedger, dsn string) {
	l.setAfter(func(ledger.Record) {
		l.setAfter(nil)
		sql(t, dsn, `SELECT count(pg_terminate_backend(pid, 5000))::text FROM pg_stat_activity
			WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()`)
	})
}

// TestCommitFailsAfterRecord: the documented failure of the record-first
// changes. The record is durable, PostgreSQL's commit fails: the store
// says so (ErrNotTaken, with the seq), and the approval is as it was,
// which is the closed side (not created; not decided; still consumed).
func TestCommitFailsAfterRecord(t *testing.T) {
	s, l, dsn := openStore(t)
	ctx := t.Context()

	killTxAfterRecord(t, l, dsn)
	rec, err := s.Create(ctx, pending(requireCFO), entry(testID))
	if !errors.Is(err, ErrNotTaken) || rec.Seq != 1 || l.len() != 1 {
		t.Fatalf("create whose commit fails: %v, record %d, %d records", err, rec.Seq, l.len())
	}
	if _, err := s.Get(testID); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("the approval exists: %v", err)
	}

	mustCreate(t, s, pending(requireCFO))
	killTxAfterRecord(t, l, dsn)
	if _, err := s.Update(ctx, testID, entry(testID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status, cur.TokenID = approvals.StatusApproved, "tok_1"
		return nil
	}); !errors.Is(err, ErrNotTaken) {
		t.Fatalf("update whose commit fails: %v", err)
	}
	if got := get(t, s, testID); got.Status != approvals.StatusPending {
		t.Errorf("status %s after a failed commit", got.Status)
	}

	approve(t, s, testID, "tok_1")
	used, err := s.Consume(ctx, testID, "tok_1", entry(testID))
	if err != nil {
		t.Fatal(err)
	}
	killTxAfterRecord(t, l, dsn)
	if _, err := s.Release(ctx, testID, "tok_1", used.Seq, entry(testID)); !errors.Is(err, ErrNotTaken) {
		t.Fatalf("release whose commit fails: %v", err)
	}
	if got := get(t, s, testID); got.Consumed != used.Seq {
		t.Errorf("after a failed release: consumed %d, want %d (fail closed)", got.Consumed, used.Seq)
	}
	// The pool has dropped the dead connections: the store goes on.
	if _, err := s.Release(ctx, testID, "tok_1", used.Seq, entry(testID)); err != nil {
		t.Errorf("release again: %v", err)
	}
}
