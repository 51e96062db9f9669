package approvalstore

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
)

// Token use is kept beside the approvals: the tests of the tokens_used
// bucket that once lived with the tokens package.

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := initBuckets(db); err != nil {
		t.Fatal(err)
	}
	return db
}

func markUsedTx(db *bolt.DB, id string, seq uint64) error {
	return db.Update(func(tx *bolt.Tx) error { return markUsed(tx, id, seq) })
}

func TestMarkUsedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := openDB(t, path)
	const id, other = "tok_0123456789abcdef0123456789abcdef", "tok_fedcba9876543210fedcba9876543210"

	if u, err := used(db, id); err != nil || u {
		t.Fatalf("fresh token: Used = %v, %v", u, err)
	}
	if err := markUsedTx(db, id, 41); err != nil {
		t.Fatalf("first use: %v", err)
	}
	err := markUsedTx(db, id, 42)
	if !errors.Is(err, tokens.ErrConsumed) || tokens.Reason(err) != "consumed" {
		t.Fatalf("second use: %v, want consumed", err)
	}
	if u, err := used(db, id); err != nil || !u {
		t.Errorf("after use: Used = %v, %v", u, err)
	}
	if err := markUsedTx(db, other, 43); err != nil {
		t.Errorf("another token: %v", err)
	}

	// Twice in one transaction: the second sees the first.
	err = db.Update(func(tx *bolt.Tx) error {
		if err := markUsed(tx, "tok_same_tx", 44); err != nil {
			return err
		}
		return markUsed(tx, "tok_same_tx", 44)
	})
	if !errors.Is(err, tokens.ErrConsumed) {
		t.Errorf("twice in one transaction: %v, want consumed", err)
	}

	// A use whose transaction fails (the ledger record was not written) does
	// not count: the token stays usable.
	boom := errors.New("ledger append failed")
	err = db.Update(func(tx *bolt.Tx) error {
		if err := markUsed(tx, "tok_rolled_back", 45); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("rolled-back transaction: %v", err)
	}
	if u, _ := used(db, "tok_rolled_back"); u {
		t.Error("a rolled-back use was kept")
	}
	if err := markUsedTx(db, "tok_rolled_back", 46); err != nil {
		t.Errorf("use after a rolled-back use: %v", err)
	}

	// Replay after a restart: close the file and open it again.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path) // Init again is harmless
	defer db.Close()
	for _, id := range []string{id, other, "tok_same_tx_never", "tok_rolled_back"} {
		err := markUsedTx(db, id, 50)
		switch id {
		case "tok_same_tx_never":
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		default:
			if !errors.Is(err, tokens.ErrConsumed) {
				t.Errorf("replay of %s after restart: %v, want consumed", id, err)
			}
		}
	}
	if u, _ := used(db, "tok_same_tx"); u {
		t.Error("tok_same_tx was kept although its transaction failed")
	}
}

func TestMarkUsedWithoutInit(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = markUsedTx(db, "tok_x", 1)
	if err == nil || errors.Is(err, tokens.ErrConsumed) {
		t.Errorf("MarkUsed without Init: %v, want a missing-bucket error", err)
	}
	if u, err := used(db, "tok_x"); u || err != nil {
		t.Errorf("Used without Init = %v, %v; want false, nil", u, err)
	}
}
