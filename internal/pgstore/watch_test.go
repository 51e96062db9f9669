package pgstore

import (
	"context"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// watching starts s.Watch and returns the ids it reports and a channel
// told each time its LISTEN is in place; Watch is stopped, and seen to
// return, at cleanup.
func watching(t *testing.T, s *Store) (<-chan string, <-chan struct{}) {
	t.Helper()
	ids, listening := make(chan string, 100), make(chan struct{}, 10)
	s.onListen = func() { listening <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, func(id string) { ids <- id }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	})
	return ids, listening
}

func waitFor(t *testing.T, ids <-chan string, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		select {
		case id := <-ids:
			if id == want {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("%s not reported within %s", want, within)
		}
	}
}

func drain(ids <-chan string, d time.Duration) {
	deadline := time.After(d)
	for {
		select {
		case <-ids:
		case <-deadline:
			return
		}
	}
}

func waitListen(t *testing.T, listening <-chan struct{}) {
	t.Helper()
	select {
	case <-listening:
	case <-time.After(20 * time.Second):
		t.Fatal("Watch never listened")
	}
}

// TestWatchNotifies: a change committed at one proxy reaches Watch at
// another within a second, by notification (the poll is an hour away).
func TestWatchNotifies(t *testing.T) {
	dsn := server.NewDB(t)
	a, _ := proxy(t, dsn, "proxy-a")
	b, _ := proxy(t, dsn, "proxy-b", PollInterval(time.Hour))
	ids, listening := watching(t, b)
	waitListen(t, listening)

	mustCreate(t, a, pending(requireCFO))
	took := waitFor(t, ids, testID, time.Second)
	approve(t, a, testID, "tok_1")
	took = max(took, waitFor(t, ids, testID, time.Second))
	if _, err := a.Consume(t.Context(), testID, "tok_1", entry(testID)); err != nil {
		t.Fatal(err)
	}
	took = max(took, waitFor(t, ids, testID, time.Second))
	t.Logf("slowest notification: %s", took)
}

// TestWatchPolls: a change whose notification never came is caught by
// the poll within about one interval.
func TestWatchPolls(t *testing.T) {
	dsn := server.NewDB(t)
	a, _ := proxy(t, dsn, "proxy-a")
	b, _ := proxy(t, dsn, "proxy-b", PollInterval(200*time.Millisecond))
	ids, listening := watching(t, b)
	waitListen(t, listening)
	mustCreate(t, a, pending(requireCFO))
	waitFor(t, ids, testID, time.Second)
	// The notification and the poll both report the creation: let them.
	drain(ids, 500*time.Millisecond)
	// A change as a proxy whose NOTIFY was lost would leave it.
	sql(t, dsn, "UPDATE approvals SET changed_at = clock_timestamp() RETURNING id")
	took := waitFor(t, ids, testID, 2*time.Second)
	t.Logf("caught by the poll in %s", took)
	// Seen once: the overlap of later polls does not report it again.
	select {
	case id := <-ids:
		t.Errorf("%s reported again without a change", id)
	case <-time.After(600 * time.Millisecond):
	}
}

// TestWatchSurvivesRestart: PostgreSQL killed and restarted; Watch
// reconnects, listens again, and the next change reaches it.
func TestWatchSurvivesRestart(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDB(t)
	a, _ := proxy(t, dsn, "proxy-a")
	b, _ := proxy(t, dsn, "proxy-b", PollInterval(time.Hour))
	ids, listening := watching(t, b)
	waitListen(t, listening)
	mustCreate(t, a, pending(requireCFO))
	waitFor(t, ids, testID, time.Second)

	srv.Kill()
	if _, err := a.Get(testID); err == nil {
		t.Fatal("read from a killed server")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitListen(t, listening)
	// The pool's connections died with the server; the first use may
	// find one that has not been dropped yet.
	var err error
	for range 10 {
		if _, err = a.Update(t.Context(), testID, entry(testID), func(cur *approvals.Approval, _ *ledger.Record) error {
			cur.Status = approvals.StatusRejected
			return nil
		}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("update after restart: %v", err)
	}
	took := waitFor(t, ids, testID, time.Second)
	t.Logf("notified %s after the change, past a restart", took)
}
