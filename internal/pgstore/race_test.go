package pgstore

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// fleet is n proxies on one fresh database, each with its own ledger.
func fleet(t *testing.T, n int) ([]*Store, []*fakeLedger, string) {
	t.Helper()
	dsn := server.NewDB(t)
	var stores []*Store
	var ledgers []*fakeLedger
	for i := range n {
		s, l := proxy(t, dsn, fmt.Sprintf("proxy-%d", i))
		stores, ledgers = append(stores, s), append(ledgers, l)
	}
	return stores, ledgers, dsn
}

func records(ls []*fakeLedger) int {
	n := 0
	for _, l := range ls {
		n += l.len()
	}
	return n
}

// TestConsumeRaceAcrossProxies: 50 requests at three proxies race to use
// one approval: exactly one is let through, with one record in one
// ledger; every other gets the refusal the interface documents.
func TestConsumeRaceAcrossProxies(t *testing.T) {
	stores, ledgers, _ := fleet(t, 3)
	mustCreate(t, stores[0], pending(requireCFO))
	approve(t, stores[1], testID, "tok_1")
	before := records(ledgers)

	const racers = 50
	errs := make([]error, racers)
	recs := make([]ledger.Record, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			recs[i], errs[i] = stores[i%3].Consume(t.Context(), testID, "tok_1", entry(testID))
		}()
	}
	close(start)
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("racers %d and %d both consumed it", won, i)
		case err == nil:
			won = i
		case !approvals.IsRefusal(err) || !errors.Is(err, approvals.ErrConsumed):
			t.Errorf("racer %d: %v, want ErrConsumed", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no racer consumed it")
	}
	if n := records(ledgers) - before; n != 1 {
		t.Errorf("%d use records in the fleet's ledgers, want 1", n)
	}
	for _, s := range stores {
		if got := get(t, s, testID); got.Consumed != recs[won].Seq {
			t.Errorf("%s: consumed by %d, want %d", s.InstanceName(), got.Consumed, recs[won].Seq)
		}
	}
}

// TestOverrideRaceAcrossProxies: an override with max_uses 2, raced by
// 20 requests at three proxies, lets exactly two through.
func TestOverrideRaceAcrossProxies(t *testing.T) {
	stores, ledgers, _ := fleet(t, 3)
	mustCreate(t, stores[0], approvedOverride(2))
	before := records(ledgers)

	const racers = 20
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = stores[i%3].UseOverride(t.Context(), testID, "tok_1", useEntry(testID))
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, approvals.ErrOverrideExhausted):
			t.Errorf("racer %d: %v, want ErrOverrideExhausted", i, err)
		}
	}
	if ok != 2 {
		t.Errorf("%d uses let through, want 2", ok)
	}
	if n := records(ledgers) - before; n != 2 {
		t.Errorf("%d use records, want 2", n)
	}
	if got := get(t, stores[2], testID); got.Uses != 2 {
		t.Errorf("%d uses counted, want 2", got.Uses)
	}
}

// TestDecisionRaceAcrossProxies: two proxies deciding one approval at
// once: the change function of the second sees the first's result (the
// row is locked), so exactly one decision counts and the other is told
// ErrChanged with no record.
func TestDecisionRaceAcrossProxies(t *testing.T) {
	stores, ledgers, _ := fleet(t, 2)
	mustCreate(t, stores[0], pending(requireCFO))
	before := records(ledgers)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = stores[i].Update(t.Context(), testID, entry(testID), func(cur *approvals.Approval, rec *ledger.Record) error {
				if cur.Status != approvals.StatusPending {
					return approvals.ErrChanged
				}
				cur.Status = approvals.StatusApproved
				cur.Decisions = append(cur.Decisions, approvals.Decision{Approver: fmt.Sprint("cfo-", i), Role: "cfo", Record: rec.Seq})
				return nil
			})
		}()
	}
	wg.Wait()
	changed := 0
	for _, err := range errs {
		if errors.Is(err, approvals.ErrChanged) {
			changed++
		} else if err != nil {
			t.Errorf("decision: %v", err)
		}
	}
	if changed != 1 || records(ledgers)-before != 1 {
		t.Errorf("%d decisions told ErrChanged, %d records; want 1 and 1", changed, records(ledgers)-before)
	}
	if got := get(t, stores[0], testID); len(got.Decisions) != 1 || got.Status != approvals.StatusApproved {
		t.Errorf("after the race: %s with %d decisions", got.Status, len(got.Decisions))
	}
}
