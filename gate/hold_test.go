package gate_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// parkOnce parks a held journal entry with a hold of hold and returns the
// verdicts done gets, as they come.
func parkOnce(t *testing.T, w *world, hold time.Duration, gone func() bool) (*gate.Verdict, *gate.Hold, <-chan *gate.Verdict) {
	t.Helper()
	v := w.held(t)
	v.Hold = hold
	got := make(chan *gate.Verdict, 4)
	h := w.g.Park(journalEntry(), v, gone, func(r *gate.Verdict) { got <- r })
	if h == nil {
		t.Fatal("a held verdict was not parked")
	}
	return v, h, got
}

// A parked request ends once whatever ends it first: its approval, its
// hold running out, or Stop, racing each other. Released, it is let
// through once on its approval; otherwise the answer is the 202.
func TestParkEndsOnce(t *testing.T) {
	w := newWorld(t)
	for i := range 30 {
		v, h, got := parkOnce(t, w, time.Duration(i%3)*time.Millisecond+time.Millisecond, nil)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); w.approve(t, v.ApprovalID) }()
		go func() { defer wg.Done(); h.Stop() }()
		wg.Wait()
		time.Sleep(5 * time.Millisecond) // past the hold: its timer has fired too
		r := <-got
		select {
		case again := <-got:
			t.Fatalf("run %d: done called twice: %+v then %+v", i, r, again)
		case <-time.After(20 * time.Millisecond):
		}
		switch {
		case r == v: // the 202: the approval stays usable by a retry
			if a, _ := w.svc.Get(v.ApprovalID); a.Consumed != 0 {
				t.Fatalf("run %d: answered 202 but the approval was used", i)
			}
		case r.Forward():
			if a, _ := w.svc.Get(v.ApprovalID); a.Consumed != r.Record {
				t.Fatalf("run %d: let through by record %d, approval consumed by %d", i, r.Record, a.Consumed)
			}
		default:
			t.Fatalf("run %d: %+v", i, r)
		}
	}
	if n := w.svc.Held(); n != 0 {
		t.Errorf("%d waiters left in the table", n)
	}
}

// Released, a parked request is decided again like Await's: on its
// approval, let through once; its agent gone, nothing is let through.
func TestParkReleasesLikeAwait(t *testing.T) {
	w := newWorld(t)
	v, _, got := parkOnce(t, w, time.Minute, func() bool { return false })
	w.approve(t, v.ApprovalID)
	r := <-got
	if !r.Forward() || r.ApprovalID != v.ApprovalID || r.Capability == "" {
		t.Fatalf("released: %+v", r)
	}

	var asked atomic.Bool
	v, _, got = parkOnce(t, w, time.Minute, func() bool { asked.Store(true); return true })
	w.approve(t, v.ApprovalID)
	if r := <-got; r != v || !asked.Load() {
		t.Fatalf("agent gone: %+v", r)
	}
	if a, _ := w.svc.Get(v.ApprovalID); a.Status != approvals.StatusApproved || a.Consumed != 0 {
		t.Fatalf("the approval of a request whose agent went away: %s, consumed %d", a.Status, a.Consumed)
	}

	// Decided before it was parked: released at once.
	v = w.held(t)
	v.Hold = time.Minute
	w.approve(t, v.ApprovalID)
	got2 := make(chan *gate.Verdict, 1)
	if w.g.Park(journalEntry(), v, nil, func(r *gate.Verdict) { got2 <- r }) == nil {
		t.Fatal("not parked")
	}
	if r := <-got2; !r.Forward() {
		t.Fatalf("decided before Park: %+v", r)
	}

	// Not held: not parked, done never called.
	d := w.g.Check(reconciliation())
	if d.Outcome == rules.Pending || w.g.Park(reconciliation(), d, nil, func(*gate.Verdict) { t.Error("done called") }) != nil {
		t.Fatalf("an unheld verdict was parked: %+v", d)
	}
}
