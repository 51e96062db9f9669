package pgstore

import (
	"sync"
	"testing"
	"time"
)

// TestRelayTaking: the proxy holding a request takes a hub's decision on
// it; another only after the grace, or when the taker went silent; an
// override request is anyone's at once; a row has one answer, the first.
func TestRelayTaking(t *testing.T) {
	a, _, dsn := openStore(t)
	b, _ := proxy(t, dsn, "proxy-b")
	hub, _ := proxy(t, dsn, "hub-1")
	if _, err := a.Create(t.Context(), pending(requireCFO), entry(testID)); err != nil {
		t.Fatal(err)
	}
	id, err := hub.Relay(t.Context(), RelayDecision, testID, []byte(`{"approver":"cfo@corp.example"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := b.TakeRelayed(t.Context(), time.Hour, time.Hour); err != nil || r != nil {
		t.Fatalf("B took A's decision within the grace: %+v %v", r, err)
	}
	r, err := a.TakeRelayed(t.Context(), time.Hour, time.Hour)
	if err != nil || r == nil || r.ID != id || r.Kind != RelayDecision || r.ApprovalID != testID || r.Hub != "hub-1" ||
		string(r.Body) != `{"approver":"cfo@corp.example"}` {
		t.Fatalf("A, the holder, took %+v %v", r, err)
	}
	if r, _ := a.TakeRelayed(t.Context(), 0, time.Hour); r != nil {
		t.Fatalf("a claimed row taken again: %+v", r)
	}
	if r, _ := b.TakeRelayed(t.Context(), 0, time.Hour); r != nil {
		t.Fatalf("B took a row A is deciding: %+v", r)
	}
	// A went silent: after stale (0 here) B takes it again.
	r, err = b.TakeRelayed(t.Context(), 0, 0)
	if err != nil || r == nil || r.ID != id {
		t.Fatalf("B did not take a stale claim: %+v %v", r, err)
	}
	if ok, err := a.FinishRelayed(t.Context(), id, []byte(`{"from":"a"}`)); err != nil || ok {
		t.Fatalf("A answered a row B took over: %v %v", ok, err)
	}
	if _, done, _ := hub.RelayAnswer(t.Context(), id); done {
		t.Fatal("answered by a proxy that no longer held the claim")
	}
	if ok, err := b.FinishRelayed(t.Context(), id, []byte(`{"from":"b"}`)); err != nil || !ok {
		t.Fatalf("B's answer: %v %v", ok, err)
	}
	if ok, _ := b.FinishRelayed(t.Context(), id, []byte(`{"from":"b2"}`)); ok {
		t.Fatal("a second answer replaced the first")
	}
	raw, done, err := hub.RelayAnswer(t.Context(), id)
	if err != nil || !done || string(raw) != `{"from":"b"}` {
		t.Fatalf("the hub reads %q %v %v", raw, done, err)
	}
	if r, _ := b.TakeRelayed(t.Context(), 0, 0); r != nil {
		t.Fatalf("an answered row taken: %+v", r)
	}

	// After the grace anyone takes a decision; an override request and a
	// decision on an approval no proxy has are anyone's at once.
	late, _ := hub.Relay(t.Context(), RelayDecision, testID, []byte(`{}`))
	ov, _ := hub.Relay(t.Context(), RelayOverride, "", []byte(`{}`))
	orphan, _ := hub.Relay(t.Context(), RelayDecision, otherID, []byte(`{}`))
	got := map[int64]bool{}
	for {
		r, err := b.TakeRelayed(t.Context(), time.Hour, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			break
		}
		got[r.ID] = true
	}
	if got[late] || !got[ov] || !got[orphan] {
		t.Fatalf("B within the grace took %v; want the override %d and the orphan %d, not A's %d", got, ov, orphan, late)
	}
	if r, _ := b.TakeRelayed(t.Context(), 0, time.Hour); r == nil || r.ID != late {
		t.Fatalf("after the grace B took %+v, want %d", r, late)
	}
	n, oldest, err := hub.RelayBacklog(t.Context())
	if err != nil || n != 3 || oldest <= 0 {
		t.Fatalf("backlog %d, oldest %v, %v; want 3 unanswered", n, oldest, err)
	}
	// Pruning deletes answered rows only.
	if del, err := hub.PruneRelayed(t.Context(), 0); err != nil || del != 1 {
		t.Fatalf("pruned %d, %v; want the one answered", del, err)
	}
	if n, _, _ := hub.RelayBacklog(t.Context()); n != 3 {
		t.Fatalf("pruning took unanswered rows: backlog %d", n)
	}
}

// TestRelayTakenOnce: two proxies draining one queue at once take each row
// exactly once.
func TestRelayTakenOnce(t *testing.T) {
	a, _, dsn := openStore(t)
	b, _ := proxy(t, dsn, "proxy-b")
	const n = 40
	for i := 0; i < n; i++ {
		if _, err := a.Relay(t.Context(), RelayOverride, "", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	taken := map[int64]int{}
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, err := s.TakeRelayed(t.Context(), 0, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if r == nil {
					return
				}
				mu.Lock()
				taken[r.ID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(taken) != n {
		t.Fatalf("%d of %d rows taken", len(taken), n)
	}
	for id, k := range taken {
		if k != 1 {
			t.Errorf("row %d taken %d times", id, k)
		}
	}
}

func TestRelayID(t *testing.T) {
	for payload, want := range map[string]int64{"relay:7": 7, "relay:7:proxy-a": 7, "relay:7:": 7, "relay:0": 0, "relay:-1": 0,
		"relay:x": 0, testID: 0, "relay:": 0} {
		if got, ok := RelayID(payload); got != want || ok != (want > 0) {
			t.Errorf("RelayID(%q) = %d, %v", payload, got, ok)
		}
	}
	for payload, want := range map[string]bool{"relay:7:proxy-a": true, "relay:7:": true, "relay:7:proxy-b": false,
		"relay:7": false, testID: false} {
		if got := RelayFor(payload, "proxy-a"); got != want {
			t.Errorf("RelayFor(%q, proxy-a) = %v", payload, got)
		}
	}
}

// TestRelayOddRows: rows written by hand with infinite times neither
// break the backlog figure nor stay unanswerable; a given-back row is
// anyone's again, and an answered one has no body left.
func TestRelayOddRows(t *testing.T) {
	a, _, dsn := openStore(t)
	b, _ := proxy(t, dsn, "proxy-b")
	sql(t, dsn, "INSERT INTO relayed (kind, body, hub, submitted_at) VALUES ('override', '{}', 'x', 'infinity'), ('override', '{}', 'x', '-infinity') RETURNING ''")
	n, _, err := a.RelayBacklog(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("backlog with infinite times: %d %v", n, err)
	}
	var ids []int64
	for {
		r, err := a.TakeRelayed(t.Context(), time.Hour, time.Hour)
		if err != nil {
			t.Fatalf("taking a row with an infinite time: %v", err)
		}
		if r == nil {
			break
		}
		ids = append(ids, r.ID)
	}
	if len(ids) != 2 {
		t.Fatalf("took %v", ids)
	}
	// Given back, it is B's to take at once; answered, its body is gone.
	if err := a.UnclaimRelayed(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	r, err := b.TakeRelayed(t.Context(), time.Hour, time.Hour)
	if err != nil || r == nil || r.ID != ids[0] {
		t.Fatalf("B after A gave it back: %+v %v", r, err)
	}
	if ok, err := b.FinishRelayed(t.Context(), r.ID, []byte(`{}`)); !ok || err != nil {
		t.Fatalf("answer: %v %v", ok, err)
	}
	if body := sql(t, dsn, "SELECT length(body)::text FROM relayed WHERE id = $1", r.ID); body != "0" {
		t.Errorf("an answered row keeps a body of %s bytes", body)
	}
	if err := b.UnclaimRelayed(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := a.TakeRelayed(t.Context(), 0, 0); r != nil && r.ID == ids[0] {
		t.Fatal("an answered row was given back and taken again")
	}
}
