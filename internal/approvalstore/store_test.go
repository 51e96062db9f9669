package approvalstore

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Fixed instants: the approval is created at t0 and looked at at now.
var (
	t0  = time.Date(2026, 9, 30, 13, 5, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
)

const (
	testID  = "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa"
	otherID = "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa"
)

var (
	requireCFO        = rules.Requirement{Policy: rules.RequireApproval, Slots: [][]string{{"cfo"}}}
	dualCFOController = rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
)

// validSig stands for a signature: the store keeps it and checks nothing.
func validSig() string { return strings.Repeat("A", 86) + "==" }

func pending(req rules.Requirement) *approvals.Approval {
	return &approvals.Approval{
		ID: testID, Kind: approvals.KindRequest, Status: approvals.StatusPending,
		Action: "post_journal_entry", App: "finance-agent", Method: "POST",
		URL: "https://erp.example.com/api/v1/journal-entries", Body: `{"amount":250000}`,
		Justification: "quarter-end accrual", OnBehalfOf: "analyst@corp.example",
		Digest: strings.Repeat("ab", 32), Amount: "250000", Reason: "approval_required",
		Requirement: req, RequiredRoles: req.Roles(), Decisions: []approvals.Decision{},
		CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour), RequestRecord: 7,
	}
}

func openStore(t *testing.T) (*bolt.DB, *Store) {
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
	return l.DB(), s
}

func putAll(t *testing.T, s *Store, as ...*approvals.Approval) {
	t.Helper()
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, a := range as {
			if err := s.put(tx, a); err != nil {
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
	putAll(t, s, a)

	got, err := s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get after put:\n got %+v\nwant %+v", got, a)
	}

	// put replaces: the decision flow reads, changes and writes back.
	a.Status, a.Completed, a.Token, a.TokenID, a.TokenExp = approvals.StatusApproved, now, "v4.public.x", "tok_1", now.Add(time.Hour)
	putAll(t, s, a)
	got, err = s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get after a second put:\n got %+v\nwant %+v", got, a)
	}

	// get reads inside the caller's transaction, as the ledger does.
	if err := db.View(func(tx *bolt.Tx) error {
		got, err := get(tx, a.ID)
		if err != nil {
			return err
		}
		if got.Status != approvals.StatusApproved {
			t.Errorf("get status %q", got.Status)
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
	l, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s0, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	a := pending(requireCFO)
	putAll(t, s0, a)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Open(l) // idempotent on existing buckets
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
	if err := db.Update(func(tx *bolt.Tx) error { return (&Store{}).put(tx, pending(requireCFO)) }); err == nil {
		t.Error("put without Open: no error")
	}
	if err := db.View(func(tx *bolt.Tx) error { _, err := get(tx, testID); return err }); err == nil || errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("get without Open: %v, want a missing-bucket error (not ErrNotFound)", err)
	}
}

func TestStoreList(t *testing.T) {
	_, s := openStore(t)
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
	putAll(t, s, list...)

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

func entry(id string) ledger.Entry {
	return ledger.Entry{Kind: "request", App: "finance-agent", Action: "post_journal_entry", ApprovalID: id}
}

// TestCreateUpdateConsume: each change is committed with its ledger record,
// consumption is once and survives a restart, and a change whose record
// fails leaves the approval as it was.
func TestCreateUpdateConsume(t *testing.T) {
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
	a := pending(requireCFO)
	rec, err := s.Create(ctx, a, entry(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(a.ID); got == nil || got.RequestRecord != rec.Seq {
		t.Fatalf("created approval %+v, record %d", got, rec.Seq)
	}
	if _, err := s.Create(ctx, a, entry(a.ID)); err == nil {
		t.Error("a second Create of the same id succeeded")
	}
	head := l.Head().Seq

	// A refused change writes neither the record nor the approval.
	boom := errors.New("changed meanwhile")
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status = approvals.StatusRejected
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("refused change: %v", err)
	}
	if got, _ := s.Get(a.ID); got.Status != approvals.StatusPending || l.Head().Seq != head {
		t.Fatalf("a refused change left status %q, head %d (was %d)", got.Status, l.Head().Seq, head)
	}

	// Not approved yet: Consume refuses.
	if _, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("consume of a pending approval: %v", err)
	}
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status, cur.TokenID = approvals.StatusApproved, "tok_1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, a.ID, "tok_other", entry(a.ID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("consume under another token: %v", err)
	}
	used1, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrConsumed) {
		t.Fatalf("second consume: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, pending(requireCFO), entry(testID)); err == nil {
		t.Error("Create on a closed ledger succeeded")
	}

	l, err = ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err = Open(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrConsumed) {
		t.Fatalf("consume after a restart: %v", err)
	}
	if got, _ := s.Get(a.ID); got.Consumed != used1.Seq {
		t.Errorf("consumed by %d, want %d", got.Consumed, used1.Seq)
	}
	if u, _ := used(l.DB(), "tok_1"); !u {
		t.Error("the token is not marked used")
	}
	// A reader on the same file sees it too, and cannot write.
	r := Reader(l)
	if got, err := r.Get(a.ID); err != nil || got.Consumed != used1.Seq {
		t.Errorf("reader: %+v %v", got, err)
	}
	if _, err := r.Create(ctx, pending(requireCFO), entry(otherID)); err == nil {
		t.Error("a reader wrote")
	}
}

// TestHeldBodyStoredAtItsSize: a body of markup is stored as it came, not
// HTML-escaped six times larger, so held bodies cost the file their size.
func TestHeldBodyStoredAtItsSize(t *testing.T) {
	db, s := openStore(t)
	a := pending(requireCFO)
	a.Body = strings.Repeat("<", 100_000)
	putAll(t, s, a)
	var size int
	if err := db.View(func(tx *bolt.Tx) error { size = len(tx.Bucket(bucketName).Get([]byte(a.ID))); return nil }); err != nil {
		t.Fatal(err)
	}
	if size > 101_000 {
		t.Errorf("a 100,000-byte body is stored in %d bytes", size)
	}
	if got, err := s.Get(a.ID); err != nil || got.Body != a.Body {
		t.Errorf("read back: %v, %d bytes", err, len(got.Body))
	}
}

// TestPendingCacheFollowsCommits: the pending list comes from what
// committed transactions left: a change that fails leaves it as it was, a
// decision that closes an approval takes it out, and a reopened store
// rebuilds the same list from the file.
func TestPendingCacheFollowsCommits(t *testing.T) {
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	a := pending(requireCFO)
	if _, err := s.Create(ctx, a, entry(a.ID)); err != nil {
		t.Fatal(err)
	}
	list, _ := s.List(approvals.StatusPending, now)
	if len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("after create: %+v", list)
	}
	boom := errors.New("refused")
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status = approvals.StatusApproved
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failed change: %v", err)
	}
	if list, _ := s.List(approvals.StatusPending, now); len(list) != 1 || list[0].Status != approvals.StatusPending {
		t.Fatalf("a change that failed touched the list: %+v", list)
	}
	// Callers' copies are theirs: changing one changes nothing stored.
	list[0].Justification = "changed by a caller"
	if list, _ := s.List(approvals.StatusPending, now); list[0].Justification == "changed by a caller" {
		t.Fatal("the list hands out the cache itself")
	}
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status = approvals.StatusApproved
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(approvals.StatusPending, now); len(list) != 0 {
		t.Fatalf("an approved approval is still listed pending: %+v", list)
	}
	b := pending(requireCFO)
	b.ID = otherID
	if _, err := s.Create(ctx, b, entry(b.ID)); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(l)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s2.List(approvals.StatusPending, now)
	want, _ := s.List(approvals.StatusPending, now)
	if !reflect.DeepEqual(got, want) || len(got) != 1 || got[0].ID != otherID {
		t.Fatalf("reopened: %+v, want %+v", got, want)
	}
}

// TestDue: the sweep gets the pending approvals past their expiry, and
// only those; a reader (no kept list) gets the same from the file.
func TestDue(t *testing.T) {
	_, s := openStore(t)
	late, fresh, closed := pending(requireCFO), pending(requireCFO), pending(requireCFO)
	fresh.ID, closed.ID = otherID, "apr_cccccccccccccccccccccccccc"
	late.ExpiresAt = t0.Add(time.Minute)
	closed.ExpiresAt, closed.Status = t0.Add(time.Minute), approvals.StatusApproved
	putAll(t, s, late, fresh, closed)
	at := t0.Add(time.Hour)
	for name, st := range map[string]*Store{"store": s, "reader": {db: s.db}} {
		due, err := st.Due(at)
		if err != nil || len(due) != 1 || due[0].ID != late.ID {
			t.Errorf("%s: due %v %v, want only %s", name, due, err, late.ID)
		}
	}
}
