// Package approvalstest has an in-memory ledger and approvals store for
// unit tests of the approvals service and of the gate: the same use-once
// and all-or-nothing rules as the embedded store, without a file.
package approvalstest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/passkey"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// Ledger is an in-memory chain of records: it numbers them and keeps them,
// nothing more (no hash). Fail, when set, makes every append fail with it,
// as a full disk would.
type Ledger struct {
	mu      sync.Mutex
	records []ledger.Record
	Fail    error
}

// Append records e.
func (l *Ledger) Append(ctx context.Context, e ledger.Entry) (ledger.Record, error) {
	return l.AppendWith(ctx, e, nil)
}

// AppendAsync records e and calls done, if any, on the caller's goroutine.
func (l *Ledger) AppendAsync(e ledger.Entry, done func(ledger.Record, error)) {
	rec, err := l.Append(context.Background(), e)
	if done != nil {
		done(rec, err)
	}
}

// AppendWith records e after hook, which sees the record about to be
// written; a hook error writes nothing and is returned.
func (l *Ledger) AppendWith(ctx context.Context, e ledger.Entry, hook func(*ledger.Record) error) (ledger.Record, error) {
	if e.Tx != nil {
		return ledger.Record{}, errors.New("approvalstest: a bbolt hook cannot run in memory")
	}
	if err := ctx.Err(); err != nil {
		return ledger.Record{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Fail != nil {
		return ledger.Record{}, l.Fail
	}
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	rec := ledger.Record{V: 1, Seq: uint64(len(l.records) + 1), Time: time.Now().UTC().Format(ledger.TimeLayout),
		Kind: e.Kind, App: e.App, Action: e.Action, Decision: e.Decision, Reason: e.Reason,
		ApprovalID: e.ApprovalID, Digest: e.Digest, Policy: e.Policy, Data: data}
	if hook != nil {
		if err := hook(&rec); err != nil {
			return ledger.Record{}, err
		}
	}
	l.records = append(l.records, rec)
	return rec, nil
}

// Records returns a copy of every record so far.
func (l *Ledger) Records() []ledger.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ledger.Record(nil), l.records...)
}

// Last returns the last record (zero if none).
func (l *Ledger) Last() ledger.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.records) == 0 {
		return ledger.Record{}
	}
	return l.records[len(l.records)-1]
}

// Store keeps approvals in memory, each change committed with its record
// in L, all or nothing.
type Store struct {
	L        *Ledger
	mu       sync.Mutex
	m        map[string]*approvals.Approval
	counters map[string]uint32 // passkey credential id -> highest counter
}

var _ approvals.Store = (*Store)(nil)

// NewStore returns an empty store writing its records to l.
func NewStore(l *Ledger) *Store { return &Store{L: l, m: map[string]*approvals.Approval{}} }

// Get returns a copy of approval id.
func (s *Store) Get(id string) (*approvals.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	return a.Clone(), nil
}

// List returns copies of the approvals whose effective status is status.
func (s *Store) List(status string, now time.Time) ([]*approvals.Approval, error) {
	if !approvals.ValidStatus(status) {
		return nil, approvals.ErrBadStatus
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*approvals.Approval
	for _, a := range s.m {
		if status == "" || a.Effective(now) == status {
			out = append(out, a.Clone())
		}
	}
	// Oldest first; the id orders approvals made at the same instant,
	// so that pages by cursor neither skip nor repeat one.
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Due returns the stored-pending approvals past expiry.
func (s *Store) Due(now time.Time) ([]*approvals.Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*approvals.Approval
	for _, a := range s.m {
		if a.Status == approvals.StatusPending && !now.Before(a.ExpiresAt) {
			out = append(out, a.Clone())
		}
	}
	return out, nil
}

// Create stores a with e.
func (s *Store) Create(ctx context.Context, a *approvals.Approval, e ledger.Entry) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[a.ID]; ok {
		return ledger.Record{}, fmt.Errorf("approval %s exists already", a.ID)
	}
	c := a.Clone()
	return s.L.AppendWith(ctx, e, func(rec *ledger.Record) error {
		a.RequestRecord, c.RequestRecord = rec.Seq, rec.Seq
		s.m[c.ID] = c
		return nil
	})
}

// Update stores what change makes of approval id, with e.
func (s *Store) Update(ctx context.Context, id string, e ledger.Entry, change func(*approvals.Approval, *ledger.Record) error) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[id]
	if !ok {
		return ledger.Record{}, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	c := cur.Clone()
	return s.L.AppendWith(ctx, e, func(rec *ledger.Record) error {
		if err := change(c, rec); err != nil {
			return err
		}
		for _, d := range c.Decisions {
			if d.WebAuthn == nil || d.Record != rec.Seq {
				continue
			}
			n := passkey.Counter(*d.WebAuthn)
			if last, ok := s.counters[d.WebAuthn.CredentialID]; ok && last >= n {
				if last != 0 {
					return approvals.ErrPasskeyReplayed // 0 after counting is a clone's too
				}
				continue
			}
			if s.counters == nil {
				s.counters = map[string]uint32{}
			}
			s.counters[d.WebAuthn.CredentialID] = n
		}
		s.m[id] = c
		return nil
	})
}

// PasskeyCounter returns the highest counter Update stored for a passkey.
func (s *Store) PasskeyCounter(credentialID string) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters[credentialID], nil
}

// Release undoes the Consume by record usedBy, with e.
func (s *Store) Release(ctx context.Context, id, tokenID string, usedBy uint64, e ledger.Entry) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[id]
	if !ok || cur.Consumed != usedBy || cur.TokenID != tokenID {
		return ledger.Record{}, fmt.Errorf("approval %s is not consumed by record %d", id, usedBy)
	}
	c := cur.Clone()
	return s.L.AppendWith(ctx, e, func(*ledger.Record) error {
		c.Consumed = 0
		s.m[id] = c
		return nil
	})
}

// Consume marks approval id used by e, once.
func (s *Store) Consume(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[id]
	if !ok {
		return ledger.Record{}, fmt.Errorf("%w: approval %s", approvals.ErrNotApproved, id)
	}
	if err := approvals.CheckConsume(cur, tokenID); err != nil {
		return ledger.Record{}, err
	}
	c := cur.Clone()
	return s.L.AppendWith(ctx, e, func(rec *ledger.Record) error {
		c.Consumed = rec.Seq
		s.m[id] = c
		return nil
	})
}

// UseOverride counts one use of override id by e, within its max_uses.
func (s *Store) UseOverride(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[id]
	if !ok {
		return ledger.Record{}, fmt.Errorf("%w: override %s", approvals.ErrNotApproved, id)
	}
	if err := approvals.CheckOverrideUse(cur, tokenID); err != nil {
		return ledger.Record{}, err
	}
	c := cur.Clone()
	return s.L.AppendWith(ctx, e, func(*ledger.Record) error {
		c.Uses++
		s.m[id] = c
		return nil
	})
}
