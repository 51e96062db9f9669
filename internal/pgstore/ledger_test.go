package pgstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

var _ Ledger = (*ledger.Ledger)(nil)

// TestRealLedger: the store on the proxy's real hash chain: the hooks run
// in its bbolt transaction (a Consume entry's own hook, as a cumulative
// cap charge, writes beside the record, or refuses it), and each record
// the store reports is the one in the chain.
func TestRealLedger(t *testing.T) {
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Open(t.Context(), server.NewDB(t), l, zerolog.Nop(), Instance("proxy-real"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	a := pending(requireCFO)
	created, err := s.Create(ctx, a, entry(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	decided, err := decideWith(s, a.ID, "cred-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decideWith(s, a.ID, "cred-1", 3); !errors.Is(err, approvals.ErrPasskeyReplayed) || l.Head().Seq != decided.Seq {
		t.Fatalf("a replayed counter: %v, head %d (was %d)", err, l.Head().Seq, decided.Seq)
	}
	approve(t, s, a.ID, "tok_1")

	refuse := entry(a.ID)
	refuse.Tx = func(*bolt.Tx, *ledger.Record) error { return errors.New("over the cumulative cap") }
	if _, err := s.Consume(ctx, a.ID, "tok_1", refuse); err == nil || !strings.Contains(err.Error(), "cumulative cap") {
		t.Fatalf("consume refused by its hook: %v", err)
	}
	charge := entry(a.ID)
	charge.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		b, err := tx.CreateBucketIfNotExists([]byte("test_charges"))
		if err != nil {
			return err
		}
		return b.Put([]byte(a.ID), []byte(rec.Time))
	}
	used, err := s.Consume(ctx, a.ID, "tok_1", charge)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DB().View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("test_charges")); b == nil || b.Get([]byte(a.ID)) == nil {
			t.Error("the entry's hook wrote nothing")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, a.ID)
	if got.RequestRecord != created.Seq || got.Decisions[0].Record != decided.Seq || got.Consumed != used.Seq || l.Head().Seq != used.Seq {
		t.Errorf("seqs: request %d/%d, decision %d/%d, consumed %d/%d, head %d",
			got.RequestRecord, created.Seq, got.Decisions[0].Record, decided.Seq, got.Consumed, used.Seq, l.Head().Seq)
	}
	for _, seq := range []uint64{created.Seq, decided.Seq, used.Seq} {
		raw, err := l.Get(seq)
		if err != nil || !strings.Contains(string(raw), a.ID) {
			t.Errorf("record %d: %s, %v", seq, raw, err)
		}
	}
}
