package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// TestCreateGet: what Create stores is what Get returns, to the
// nanosecond, with the request record's seq; an approval is created once.
func TestCreateGet(t *testing.T) {
	s, l, _ := openStore(t)
	a := pending(dualCFOController)
	a.CreatedAt = t0.Add(123456789 * time.Nanosecond)
	a.ExpiresAt = a.CreatedAt.Add(24*time.Hour + time.Nanosecond)
	a.Headers = map[string]string{"Content-Type": "application/json"}
	a.Decisions = []approvals.Decision{{Approver: "cfo@corp.example", Role: "cfo", Decision: approvals.Approve,
		Reason: "ok", SignedAt: now.Format(time.RFC3339), Signature: strings.Repeat("A", 86) + "==", Record: 9}}
	rec := mustCreate(t, s, a)
	if a.RequestRecord != rec.Seq || rec.Seq != 1 {
		t.Fatalf("request record %d, record %d", a.RequestRecord, rec.Seq)
	}
	got, err := s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("Get after Create:\n got %+v\nwant %+v", got, a)
	}
	if _, err := s.Create(t.Context(), pending(requireCFO), entry(testID)); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a second Create of the id: %v", err)
	}
	if l.len() != 1 {
		t.Errorf("%d records after a refused Create, want 1", l.len())
	}
	for _, id := range []string{otherID, "", "apr_nope"} {
		if _, err := s.Get(id); !errors.Is(err, approvals.ErrNotFound) {
			t.Errorf("Get(%q) error %v, want ErrNotFound", id, err)
		}
	}
}

// TestList: effective status and order are decided to the nanosecond,
// as the other stores decide them, although PostgreSQL keeps
// microseconds.
func TestList(t *testing.T) {
	s, _, _ := openStore(t)
	mk := func(id, status string, created time.Time, expires time.Time) *approvals.Approval {
		a := pending(requireCFO)
		a.ID, a.Status, a.CreatedAt, a.ExpiresAt = id, status, created, expires
		return a
	}
	// Created in an order that is neither id nor creation order.
	for _, a := range []*approvals.Approval{
		mk(idOf('e'), approvals.StatusPending, t0.Add(5*time.Minute), now.Add(time.Hour)),       // pending
		mk(idOf('a'), approvals.StatusPending, t0.Add(4*time.Minute), now),                      // pending, expires exactly now: expired
		mk(idOf('d'), approvals.StatusApproved, t0.Add(3*time.Minute), now.Add(-time.Hour)),     // approved, past expiry: still approved
		mk(idOf('b'), approvals.StatusRejected, t0.Add(2*time.Minute), now.Add(time.Hour)),      // rejected
		mk(idOf('c'), approvals.StatusExpired, t0.Add(1*time.Minute), now.Add(time.Hour)),       // recorded as expired
		mk(idOf('f'), approvals.StatusPending, t0.Add(6*time.Minute), now.Add(time.Nanosecond)), // pending, one ns left
		// Within one microsecond of each other, in the opposite order of their ids.
		mk(idOf('h'), approvals.StatusRejected, t0.Add(7*time.Minute+100), now),
		mk(idOf('g'), approvals.StatusRejected, t0.Add(7*time.Minute+200), now),
	} {
		mustCreate(t, s, a)
	}
	cases := []struct {
		status string
		want   []string // ids, oldest first
	}{
		{"", []string{idOf('c'), idOf('b'), idOf('d'), idOf('a'), idOf('e'), idOf('f'), idOf('h'), idOf('g')}},
		{approvals.StatusPending, []string{idOf('e'), idOf('f')}},
		{approvals.StatusApproved, []string{idOf('d')}},
		{approvals.StatusRejected, []string{idOf('b'), idOf('h'), idOf('g')}},
		{approvals.StatusExpired, []string{idOf('c'), idOf('a')}},
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
				if a.ID == idOf('a') && a.Status != approvals.StatusPending {
					t.Errorf("List changed the stored status of %s to %q; expiry is computed, not written", a.ID, a.Status)
				}
			}
			if !reflect.DeepEqual(ids, c.want) {
				t.Errorf("List(%q) = %v, want %v", c.status, ids, c.want)
			}
		})
	}
	// A nanosecond later, f has expired too.
	got, err := s.List(approvals.StatusPending, now.Add(time.Nanosecond))
	if err != nil || len(got) != 1 || got[0].ID != idOf('e') {
		t.Errorf("pending a nanosecond later: %d approvals (%v), want only %s", len(got), err, idOf('e'))
	}
	// Due: stored pending and past expiry, to the nanosecond.
	for _, c := range []struct {
		at   time.Time
		want []string
	}{
		{now.Add(-time.Nanosecond), nil},
		{now, []string{idOf('a')}},
		{now.Add(time.Nanosecond), []string{idOf('a'), idOf('f')}},
	} {
		due, err := s.Due(c.at)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range due {
			ids = append(ids, a.ID)
		}
		if !reflect.DeepEqual(ids, c.want) {
			t.Errorf("Due(%s) = %v, want %v", c.at, ids, c.want)
		}
	}
	for _, bad := range []string{"PENDING", "all", "consumed", " pending", "pending,approved"} {
		if _, err := s.List(bad, now); !errors.Is(err, approvals.ErrBadStatus) {
			t.Errorf("List(%q) error %v, want ErrBadStatus", bad, err)
		}
	}
}

func TestListEmpty(t *testing.T) {
	s, _, _ := openStore(t)
	got, err := s.List("", now)
	if err != nil || len(got) != 0 {
		t.Errorf("List on an empty store = %v, %v", got, err)
	}
}

// TestCreateUpdateConsume: each change comes with its ledger record, a
// refused change writes neither, consumption is once and outlives the
// store, and the columns agree with the document.
func TestCreateUpdateConsume(t *testing.T) {
	s, l, dsn := openStore(t)
	ctx := t.Context()
	a := pending(requireCFO)
	rec := mustCreate(t, s, a)
	if got, _ := s.Get(a.ID); got == nil || got.RequestRecord != rec.Seq {
		t.Fatalf("created approval %+v, record %d", got, rec.Seq)
	}
	head := l.len()

	// A refused change writes neither the record nor the approval.
	boom := errors.New("changed meanwhile")
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status = approvals.StatusRejected
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("refused change: %v", err)
	}
	if got, _ := s.Get(a.ID); got.Status != approvals.StatusPending || l.len() != head {
		t.Fatalf("a refused change left status %q, %d records (was %d)", got.Status, l.len(), head)
	}
	if _, err := s.Update(ctx, otherID, entry(otherID), func(*approvals.Approval, *ledger.Record) error { return nil }); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("update of an unknown approval: %v", err)
	}
	// What only Consume and UseOverride change, Update refuses to.
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Consumed = 3
		return nil
	}); !errors.Is(err, ErrStoreOwned) || l.len() != head {
		t.Errorf("an update setting Consumed: %v, %d records", err, l.len())
	}

	// Not approved yet: Consume refuses.
	if _, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("consume of a pending approval: %v", err)
	}
	var seen *ledger.Record
	if _, err := s.Update(ctx, a.ID, entry(a.ID), func(cur *approvals.Approval, rec *ledger.Record) error {
		cur.Status, cur.TokenID = approvals.StatusApproved, "tok_1"
		seen = rec
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.Seq != uint64(l.len()) {
		t.Errorf("change saw record %+v, the ledger wrote %d", seen, l.len())
	}
	if got := sql(t, dsn, "SELECT status || ' ' || token_id FROM approvals WHERE id = $1", a.ID); got != "approved tok_1" {
		t.Errorf("columns: %q", got)
	}
	if _, err := s.Consume(ctx, a.ID, "tok_other", entry(a.ID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("consume under another token: %v", err)
	}
	if _, err := s.Consume(ctx, idOf('z'), "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("consume of an unknown approval: %v", err)
	}
	used, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrConsumed) || !approvals.IsRefusal(err) {
		t.Fatalf("second consume: %v", err)
	}
	if got, _ := s.Get(a.ID); got.Consumed != used.Seq {
		t.Errorf("consumed by %d, want %d", got.Consumed, used.Seq)
	}
	if got := sql(t, dsn, "SELECT instance || ' ' || record FROM tokens_used WHERE token_id = 'tok_1'"); got != "proxy-a "+strconv.FormatUint(used.Seq, 10) {
		t.Errorf("tokens_used: %q", got)
	}
	// Another store on the database (a restart, another proxy) sees it.
	s2, _ := proxy(t, dsn, "proxy-b")
	if _, err := s2.Consume(ctx, a.ID, "tok_1", entry(a.ID)); !errors.Is(err, approvals.ErrConsumed) {
		t.Fatalf("consume at another proxy: %v", err)
	}
	if got, _ := s2.Get(a.ID); got.Consumed != used.Seq {
		t.Errorf("another proxy sees it consumed by %d, want %d", got.Consumed, used.Seq)
	}
}

// TestHeldBodyStoredAtItsSize: a body of markup is stored as it came, not
// HTML-escaped six times larger, and a NUL (valid UTF-8, refused by jsonb)
// is kept.
func TestHeldBodyStoredAtItsSize(t *testing.T) {
	s, _, dsn := openStore(t)
	a := pending(requireCFO)
	a.Body = strings.Repeat("<", 100_000) + "\x00"
	mustCreate(t, s, a)
	size, _ := strconv.Atoi(sql(t, dsn, "SELECT length(data)::text FROM approvals WHERE id = $1", a.ID))
	if size == 0 || size > 101_000 {
		t.Errorf("a 100,001-byte body is stored in %d bytes", size)
	}
	if got, err := s.Get(a.ID); err != nil || got.Body != a.Body {
		t.Errorf("read back: %v, %d bytes", err, len(got.Body))
	}
}

// assertion is a passkey assertion with counter n (only the parts the store
// reads: the credential and authenticator data).
func assertion(cred string, n uint32) *passkey.Assertion {
	ad := make([]byte, 37)
	binary.BigEndian.PutUint32(ad[33:], n)
	return &passkey.Assertion{CredentialID: cred, AuthenticatorData: passkey.Encode(ad)}
}

// decideWith adds a passkey decision with counter n to approval id.
func decideWith(s *Store, id, cred string, n uint32) (ledger.Record, error) {
	return s.Update(context.Background(), id, entry(id), func(cur *approvals.Approval, rec *ledger.Record) error {
		cur.Decisions = append(cur.Decisions, approvals.Decision{Approver: "cfo@corp.example", Role: "cfo",
			Decision: approvals.Approve, WebAuthn: assertion(cred, n), Record: rec.Seq})
		return nil
	})
}

// TestPasskeyCounters: a decision's counter is kept in its transaction,
// for every proxy; one not above the stored one is refused and writes
// nothing; 0 is accepted only while the passkey has never counted.
func TestPasskeyCounters(t *testing.T) {
	s, l, dsn := openStore(t)
	s2, l2 := proxy(t, dsn, "proxy-b")
	for _, c := range "abcdefg" {
		a := pending(dualCFOController)
		a.ID = idOf(byte(c))
		mustCreate(t, s, a)
	}
	steps := []struct {
		store   *Store
		id      string
		cred    string
		counter uint32
		ok      bool
		stored  uint32
	}{
		{s, idOf('a'), "cred-1", 5, true, 5},
		{s2, idOf('b'), "cred-1", 5, false, 5}, // the same counter at another proxy: a clone
		{s2, idOf('b'), "cred-1", 4, false, 5},
		{s2, idOf('b'), "cred-1", 6, true, 6},
		{s, idOf('c'), "cred-1", 0, false, 6}, // 0 after counting
		{s, idOf('d'), "cred-2", 0, true, 0},  // a passkey that keeps no counter
		{s2, idOf('e'), "cred-2", 0, true, 0},
		{s, idOf('f'), "cred-2", 1, true, 1},
		{s2, idOf('g'), "cred-2", 0, false, 1},
	}
	for i, st := range steps {
		before, decisions := l.len()+l2.len(), len(get(t, s, st.id).Decisions)
		_, err := decideWith(st.store, st.id, st.cred, st.counter)
		switch {
		case st.ok && err != nil:
			t.Errorf("step %d: counter %d refused: %v", i, st.counter, err)
		case !st.ok && !errors.Is(err, approvals.ErrPasskeyReplayed):
			t.Errorf("step %d: counter %d: %v, want ErrPasskeyReplayed", i, st.counter, err)
		case !st.ok && (l.len()+l2.len() != before || len(get(t, s, st.id).Decisions) != decisions):
			t.Errorf("step %d: a replayed counter wrote a record or a decision", i)
		}
		for _, x := range []*Store{s, s2} {
			if n, err := x.PasskeyCounter(st.cred); err != nil || n != st.stored {
				t.Errorf("step %d: %s counter %d, %v; want %d", i, x.InstanceName(), n, err, st.stored)
			}
		}
	}
	if n, err := s.PasskeyCounter("cred-never"); n != 0 || err != nil {
		t.Errorf("an unknown passkey: %d, %v", n, err)
	}
}

func get(t *testing.T, s *Store, id string) *approvals.Approval {
	t.Helper()
	a, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestOverrideUses: each use is counted with its record, for every proxy,
// and a use beyond max_uses writes nothing.
func TestOverrideUses(t *testing.T) {
	s, l, dsn := openStore(t)
	ctx := t.Context()
	mustCreate(t, s, approvedOverride(2))
	if _, err := s.UseOverride(ctx, testID, "tok_other", useEntry(testID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("use under another token: %v", err)
	}
	if _, err := s.UseOverride(ctx, otherID, "tok_1", useEntry(otherID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Fatalf("use of an unknown override: %v", err)
	}
	if _, err := s.UseOverride(ctx, testID, "tok_1", useEntry(testID)); err != nil {
		t.Fatal(err)
	}
	s2, l2 := proxy(t, dsn, "proxy-b")
	if got := get(t, s2, testID); got.Uses != 1 {
		t.Fatalf("another proxy sees %d uses, want 1", got.Uses)
	}
	if _, err := s2.UseOverride(ctx, testID, "tok_1", useEntry(testID)); err != nil {
		t.Fatalf("the last use: %v", err)
	}
	head := l.len() + l2.len()
	for _, x := range []*Store{s, s2} {
		if _, err := x.UseOverride(ctx, testID, "tok_1", useEntry(testID)); !errors.Is(err, approvals.ErrOverrideExhausted) {
			t.Fatalf("a use beyond max_uses: %v, want ErrOverrideExhausted", err)
		}
	}
	if got := get(t, s, testID); got.Uses != 2 || l.len()+l2.len() != head {
		t.Errorf("refused uses left %d uses and %d records (was %d)", got.Uses, l.len()+l2.len(), head)
	}
	// A request approval is no override.
	b := pending(requireCFO)
	b.ID = otherID
	mustCreate(t, s, b)
	approve(t, s, otherID, "tok_2")
	if _, err := s.UseOverride(ctx, otherID, "tok_2", useEntry(otherID)); !errors.Is(err, approvals.ErrNotApproved) {
		t.Errorf("a request approval used as an override: %v", err)
	}
}

// TestRelease: the proxy that consumed an approval can undo that use with
// a record (the request never reached the ERP); no one else can, nor with
// another record.
func TestRelease(t *testing.T) {
	s, l, dsn := openStore(t)
	s2, _ := proxy(t, dsn, "proxy-b")
	ctx := t.Context()
	mustCreate(t, s, pending(requireCFO))
	approve(t, s, testID, "tok_1")
	used, err := s.Consume(ctx, testID, "tok_1", entry(testID))
	if err != nil {
		t.Fatal(err)
	}
	head := l.len()
	for _, c := range []struct {
		name    string
		store   *Store
		id, tok string
		usedBy  uint64
	}{
		{"another record", s, testID, "tok_1", used.Seq + 1},
		{"another token", s, testID, "tok_2", used.Seq},
		{"record 0", s, testID, "tok_1", 0},
		{"another proxy", s2, testID, "tok_1", used.Seq},
		{"an unknown approval", s, otherID, "tok_1", used.Seq},
	} {
		if _, err := c.store.Release(ctx, c.id, c.tok, c.usedBy, entry(c.id)); err == nil || !strings.Contains(err.Error(), "not consumed by record") {
			t.Errorf("release by %s: %v", c.name, err)
		}
	}
	if l.len() != head || get(t, s, testID).Consumed != used.Seq {
		t.Fatalf("refused releases wrote: %d records (was %d)", l.len(), head)
	}
	if _, err := s.Release(ctx, testID, "tok_1", used.Seq, entry(testID)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s2, testID); got.Consumed != 0 {
		t.Errorf("released, yet consumed by %d", got.Consumed)
	}
	if got := sql(t, dsn, "SELECT count(*)::text FROM tokens_used"); got != "0" {
		t.Errorf("%s tokens still marked used", got)
	}
	// Usable again, here at another proxy.
	if _, err := s2.Consume(ctx, testID, "tok_1", entry(testID)); err != nil {
		t.Errorf("consume after release: %v", err)
	}
}

// TestRecordSeqNotWrittenBack: a use whose record's seq was not written
// back (the write-back failed) is still a use, shown as Unrecorded, and
// its proxy can still release it.
func TestRecordSeqNotWrittenBack(t *testing.T) {
	s, _, dsn := openStore(t)
	ctx := t.Context()
	mustCreate(t, s, pending(requireCFO))
	approve(t, s, testID, "tok_1")
	used, err := s.Consume(ctx, testID, "tok_1", entry(testID))
	if err != nil {
		t.Fatal(err)
	}
	sql(t, dsn, "UPDATE approvals SET consumed_record = NULL RETURNING id")
	if got := get(t, s, testID); got.Consumed != Unrecorded {
		t.Errorf("consumed %d, want Unrecorded", got.Consumed)
	}
	if _, err := s.Consume(ctx, testID, "tok_1", entry(testID)); !errors.Is(err, approvals.ErrConsumed) {
		t.Errorf("consume again: %v", err)
	}
	if _, err := s.Release(ctx, testID, "tok_1", used.Seq, entry(testID)); err != nil {
		t.Errorf("release: %v", err)
	}
}
