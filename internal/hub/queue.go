package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
)

// Queue is the fleet's approvals as a hub serves them: read from
// PostgreSQL, and decided by the proxies. A decision or override request
// posted here is queued (pgstore.Relay) for a proxy to take, and the
// proxy's answer is given if it comes within the wait; otherwise it stays
// queued (approvals.ErrQueued) and is decided when a proxy takes it.
type Queue struct {
	store *pgstore.Store
	now   func() time.Time
	wait  time.Duration

	mu      sync.Mutex
	waiters map[int64]chan struct{}
}

var _ approvals.Queue = (*Queue)(nil)

// DefaultWait is how long a hub waits for a proxy to answer a decision.
const DefaultWait = 10 * time.Second

// answerPoll is how often a waiting decision reads its row, in case the
// notification of its answer was missed.
const answerPoll = 250 * time.Millisecond

// NewQueue returns the queue over store. now is the clock that decides
// what has expired (nil: time.Now), wait how long Decide waits for an
// answer (0: DefaultWait).
func NewQueue(store *pgstore.Store, now func() time.Time, wait time.Duration) *Queue {
	if now == nil {
		now = time.Now
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	return &Queue{store: store, now: now, wait: wait, waiters: map[int64]chan struct{}{}}
}

// Get returns approval id.
func (q *Queue) Get(id string) (*approvals.Approval, error) {
	if !approvals.ValidID(id) {
		return nil, approvals.ErrNotFound
	}
	return q.store.Get(id)
}

// List returns the approvals with effective status status ("" all), oldest first.
func (q *Queue) List(status string) ([]*approvals.Approval, error) {
	if !approvals.ValidStatus(status) {
		return nil, approvals.ErrBadStatus
	}
	return q.store.List(status, q.now())
}

// ListPage returns one page of List.
func (q *Queue) ListPage(status, cursor string, limit int) (approvals.Page, error) {
	list, err := q.List(status)
	if err != nil {
		return approvals.Page{}, err
	}
	return approvals.PageOf(list, cursor, limit)
}

// Decide queues sub for the proxies and returns their answer. The hub
// checks nothing of the signature: the proxy that takes it does, against
// its own principals, and records the decision or its refusal.
func (q *Queue) Decide(id string, sub approvals.Submission) (*approvals.Approval, *approvals.Refusal, error) {
	a, err := q.Get(id)
	if err != nil {
		return nil, nil, err
	}
	ans, err := q.relay(pgstore.RelayDecision, id, sub)
	if err != nil {
		return a, nil, err
	}
	return ans.Decision()
}

// RequestOverride queues r for the proxies and returns their answer.
func (q *Queue) RequestOverride(r approvals.OverrideRequest) (*approvals.Approval, error) {
	// The requester's identity token goes with it: the proxy that takes it
	// proves the requester again with its own identity settings.
	ans, err := q.relay(pgstore.RelayOverride, "", approvals.RelayedOverride{Request: r, CallerToken: r.CallerToken})
	if err != nil {
		return nil, err
	}
	return ans.Override()
}

// relay queues v and waits for its answer; approvals.ErrQueued when none
// comes within the wait.
func (q *Queue) relay(kind, approvalID string, v any) (approvals.Answer, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return approvals.Answer{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.wait)
	defer cancel()
	id, err := q.store.Relay(ctx, kind, approvalID, body)
	if err != nil {
		return approvals.Answer{}, err
	}
	wake := q.register(id)
	defer q.unregister(id)
	tick := time.NewTicker(answerPoll)
	defer tick.Stop()
	for {
		raw, done, err := q.store.RelayAnswer(ctx, id)
		switch {
		case done:
			var ans approvals.Answer
			if err := json.Unmarshal(raw, &ans); err != nil {
				return approvals.Answer{}, fmt.Errorf("relayed %d: the proxy's answer is unreadable: %w", id, err)
			}
			return ans, nil
		case err != nil && ctx.Err() == nil:
			return approvals.Answer{}, err
		}
		select {
		case <-wake:
		case <-tick.C:
		case <-ctx.Done():
			return approvals.Answer{}, fmt.Errorf("relayed %d: %w", id, approvals.ErrQueued)
		}
	}
}

func (q *Queue) register(id int64) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch := make(chan struct{}, 1)
	q.waiters[id] = ch
	return ch
}

func (q *Queue) unregister(id int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiters, id)
}

// Notified is told of every notification on the store's channel: an
// answered row's wakes its waiter.
func (q *Queue) Notified(payload string) {
	id, ok := pgstore.RelayID(payload)
	if !ok {
		return
	}
	q.mu.Lock()
	ch := q.waiters[id]
	q.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// errNoLedger is what the hub's store says to any write: every change is
// a proxy's, recorded in its own ledger.
var errNoLedger = errors.New("the hub keeps no ledger: approvals change only at the proxies")
