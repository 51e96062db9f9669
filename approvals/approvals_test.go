package approvals_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := approvals.NewID()
		if !approvals.ValidID(id) {
			t.Fatalf("NewID() = %q, which ValidID refuses", id)
		}
		if len(id) != 30 || !strings.HasPrefix(id, "apr_") {
			t.Fatalf("NewID() = %q, want apr_ and 26 base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	cases := []struct {
		name string
		id   string
		want bool
	}{
		{"fresh shape", "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa", true},
		{"all a", "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", true},
		{"all 7", "apr_77777777777777777777777777", true},
		{"empty", "", false},
		{"prefix only", "apr_", false},
		{"one short", "apr_2v3rnlhoyzq6jbvyt5mwx7kdf", false},
		{"one long", "apr_2v3rnlhoyzq6jbvyt5mwx7kdfaa", false},
		{"upper case", "apr_2V3RNLHOYZQ6JBVYT5MWX7KDFA", false},
		{"upper-case prefix", "APR_2v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"other prefix", "tok_2v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 0 (not base32)", "apr_0v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 1 (not base32)", "apr_1v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 8 (not base32)", "apr_8v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 9 (not base32)", "apr_9v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"padding", "apr_2v3rnlhoyzq6jbvyt5mwx7kd==", false},
		{"path traversal", "apr_../../../../etc/passwd/xxx", false},
		{"newline", "apr_2v3rnlhoyzq6jbvyt5mwx7kd\nx", false},
		{"30 bytes with a two-byte rune", "apr_2v3rnlhoyzq6jbvyt5mwx7kdé", false},
		{"NUL", "apr_2v3rnlhoyzq6jbvyt5mwx7kd\x00a", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := approvals.ValidID(c.id); got != c.want {
				t.Errorf("ValidID(%q) = %v, want %v", c.id, got, c.want)
			}
		})
	}
}

func openStore(t *testing.T) (*bolt.DB, *approvals.Store) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := approvals.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

func put(t *testing.T, db *bolt.DB, as ...*approvals.Approval) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, a := range as {
			if err := approvals.Put(tx, a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestStorePutGet(t *testing.T) {
	db, s := openStore(t)
	a := pending(dualCFOController)
	a.Headers = map[string]string{"Content-Type": "application/json"}
	a.Decisions = []approvals.Decision{{Approver: "cfo@corp.example", Role: "cfo", Decision: approvals.Approve,
		Reason: "ok", SignedAt: now.Format(time.RFC3339), Signature: validSig(), Record: 9}}
	put(t, db, a)

	got, err := s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get after Put:\n got %+v\nwant %+v", got, a)
	}

	// Put replaces: the decision flow reads, changes and writes back.
	a.Status, a.Completed, a.Token, a.TokenID, a.TokenExp = approvals.StatusApproved, now, "v4.public.x", "tok_1", now.Add(time.Hour)
	put(t, db, a)
	got, err = s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get after a second Put:\n got %+v\nwant %+v", got, a)
	}

	// GetTx reads inside the caller's transaction, as the ledger does.
	if err := db.View(func(tx *bolt.Tx) error {
		got, err := approvals.GetTx(tx, a.ID)
		if err != nil {
			return err
		}
		if got.Status != approvals.StatusApproved {
			t.Errorf("GetTx status %q", got.Status)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{otherID, "", "apr_nope"} {
		if _, err := s.Get(id); !errors.Is(err, approvals.ErrNotFound) {
			t.Errorf("Get(%q) error %v, want ErrNotFound", id, err)
		}
	}
}

// TestStoreSurvivesReopen: approvals are in the ledger's file, so a restart
// finds them.
func TestStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := approvals.Open(db); err != nil {
		t.Fatal(err)
	}
	a := pending(requireCFO)
	put(t, db, a)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := approvals.Open(db) // idempotent on an existing bucket
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("after reopen:\n got %+v\nwant %+v", got, a)
	}
}

func TestPutWithoutBucket(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return approvals.Put(tx, pending(requireCFO)) }); err == nil {
		t.Error("Put without Open: no error")
	}
	if err := db.View(func(tx *bolt.Tx) error { _, err := approvals.GetTx(tx, testID); return err }); err == nil || errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("GetTx without Open: %v, want a missing-bucket error (not ErrNotFound)", err)
	}
}

func TestStoreList(t *testing.T) {
	db, s := openStore(t)
	mk := func(id, status string, created time.Time, expires time.Time) *approvals.Approval {
		a := pending(requireCFO)
		a.ID, a.Status, a.CreatedAt, a.ExpiresAt = id, status, created, expires
		return a
	}
	id := func(c byte) string { return "apr_" + strings.Repeat(string(c), 26) }
	// Written in an order that is neither id nor creation order.
	list := []*approvals.Approval{
		mk(id('e'), approvals.StatusPending, t0.Add(5*time.Minute), now.Add(time.Hour)),       // pending
		mk(id('a'), approvals.StatusPending, t0.Add(4*time.Minute), now),                      // pending, expires exactly now: expired
		mk(id('d'), approvals.StatusApproved, t0.Add(3*time.Minute), now.Add(-time.Hour)),     // approved, past expiry: still approved
		mk(id('b'), approvals.StatusRejected, t0.Add(2*time.Minute), now.Add(time.Hour)),      // rejected
		mk(id('c'), approvals.StatusExpired, t0.Add(1*time.Minute), now.Add(time.Hour)),       // recorded as expired
		mk(id('f'), approvals.StatusPending, t0.Add(6*time.Minute), now.Add(time.Nanosecond)), // pending, one ns left
	}
	put(t, db, list...)

	cases := []struct {
		status string
		want   []string // ids, oldest first
	}{
		{"", []string{id('c'), id('b'), id('d'), id('a'), id('e'), id('f')}},
		{approvals.StatusPending, []string{id('e'), id('f')}},
		{approvals.StatusApproved, []string{id('d')}},
		{approvals.StatusRejected, []string{id('b')}},
		{approvals.StatusExpired, []string{id('c'), id('a')}},
	}
	for _, c := range cases {
		t.Run("status="+c.status, func(t *testing.T) {
			got, err := s.List(c.status, now)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range got {
				ids = append(ids, a.ID)
			}
			if !reflect.DeepEqual(ids, c.want) {
				t.Errorf("List(%q) = %v, want %v", c.status, ids, c.want)
			}
			for _, a := range got {
				if a.ID == id('a') && a.Status != approvals.StatusPending {
					t.Errorf("List changed the stored status of %s to %q; expiry is computed, not written", a.ID, a.Status)
				}
			}
		})
	}

	// A nanosecond later, f has expired too.
	got, err := s.List(approvals.StatusPending, now.Add(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != id('e') {
		t.Errorf("pending a nanosecond later: %d approvals, want only %s", len(got), id('e'))
	}

	for _, bad := range []string{"PENDING", "Pending", "all", "consumed", " pending", "pending,approved"} {
		if _, err := s.List(bad, now); !errors.Is(err, approvals.ErrBadStatus) {
			t.Errorf("List(%q) error %v, want ErrBadStatus", bad, err)
		}
	}
}

func TestListEmpty(t *testing.T) {
	_, s := openStore(t)
	got, err := s.List("", now)
	if err != nil || len(got) != 0 {
		t.Errorf("List on an empty store = %v, %v", got, err)
	}
}

func TestEffective(t *testing.T) {
	cases := []struct {
		name    string
		status  string
		expires time.Time
		want    string
	}{
		{"pending before expiry", approvals.StatusPending, now.Add(time.Nanosecond), approvals.StatusPending},
		{"pending at expiry", approvals.StatusPending, now, approvals.StatusExpired},
		{"pending after expiry", approvals.StatusPending, now.Add(-time.Hour), approvals.StatusExpired},
		{"approved after expiry stays approved", approvals.StatusApproved, now.Add(-time.Hour), approvals.StatusApproved},
		{"rejected after expiry stays rejected", approvals.StatusRejected, now.Add(-time.Hour), approvals.StatusRejected},
		{"expired before expiry stays expired", approvals.StatusExpired, now.Add(time.Hour), approvals.StatusExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := &approvals.Approval{Status: c.status, ExpiresAt: c.expires}
			if got := a.Effective(now); got != c.want {
				t.Errorf("Effective = %q, want %q", got, c.want)
			}
		})
	}
}
