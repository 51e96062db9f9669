package cumulative

import (
	"context"
	"errors"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func rat(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }

func open(t *testing.T) (*ledger.Ledger, *Store) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	return l, s
}

func entry() ledger.Entry {
	return ledger.Entry{Kind: record.KindRequest, App: "a", Action: "pay", Decision: record.Allow, Reason: record.AutoApprove}
}

func TestChargeChecksInTheTransaction(t *testing.T) {
	l, s := open(t)
	t0 := time.Date(2026, 9, 30, 15, 0, 0, 0, time.UTC)
	const w = time.Hour
	for i, tc := range []struct {
		at      time.Time
		amount  string
		overCap bool
		sum     string
	}{
		{t0, "6", false, "6"},
		{t0.Add(time.Minute), "4", false, "10"},
		{t0.Add(2 * time.Minute), "0.0001", true, "10"},
		{t0.Add(time.Hour), "6", false, "10"},               // the first left the window exactly
		{t0.Add(time.Hour + time.Minute), "4", false, "10"}, // and the second
	} {
		_, err := l.Append(context.Background(), s.Charge(entry(), "pay", tc.at, w, rat(tc.amount), rat("10")))
		if tc.overCap != errors.Is(err, gate.ErrCumulativeOverCap) || !tc.overCap && err != nil {
			t.Fatalf("%d: err %v, want over cap %v", i, err, tc.overCap)
		}
		got, err := s.Sum("pay", tc.at, w)
		if err != nil || got.Cmp(rat(tc.sum)) != 0 {
			t.Fatalf("%d: sum %v %v, want %s", i, got, err, tc.sum)
		}
	}
	if n := l.Head().Seq; n != 4 {
		t.Errorf("%d records, want 4: the refused charge writes nothing", n)
	}
	if got, _ := s.Sum("other", t0, w); got.Sign() != 0 {
		t.Errorf("another action's sum %v", got)
	}
}

// An earlier hook that fails stops the charge; entries older than the
// longest window are pruned.
func TestChargeChainsAndPrunes(t *testing.T) {
	l, s := open(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := entry()
	e.Tx = func(*bolt.Tx, *ledger.Record) error { return errors.New("no") }
	if _, err := l.Append(context.Background(), s.Charge(e, "pay", t0, time.Hour, rat("1"), rat("10"))); err == nil {
		t.Fatal("a failing earlier hook was ignored")
	}
	if _, err := l.Append(context.Background(), s.Charge(entry(), "pay", t0, time.Hour, rat("1"), rat("10"))); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(rules.MaxCumulativeWindow + time.Second)
	if _, err := l.Append(context.Background(), s.Charge(entry(), "pay", later, time.Hour, rat("1"), rat("10"))); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := l.DB().View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).Bucket([]byte("pay")).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d entries kept, want 1", n)
	}
	if got, _ := s.Sum("pay", later, rules.MaxCumulativeWindow); got.Cmp(rat("1")) != 0 {
		t.Errorf("sum %v, want 1", got)
	}
}
