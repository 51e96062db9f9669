// Package approvalstore is the embedded approvals store: approvals live in
// the ledger's own bbolt file, in buckets of their own, and every change is
// written inside the same write transaction as the ledger record that tells
// of it (ledger.Entry.Tx). A pending approval therefore exists if and only
// if its request record does, and a used approval if and only if the record
// that used it does. It implements approvals.Store; nothing of bbolt leaves
// this package.
package approvalstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/passkey"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

var (
	bucketName = []byte("approvals")
	// openBucket indexes the approvals still pending (id -> nothing), so that
	// expiry sweeps and the pending list do not scan years of history.
	openBucket = []byte("approvals_open")
	// usedBucket holds the id of every token that let a request through
	// (token id -> ledger seq), a second guard beside Approval.Consumed.
	usedBucket = []byte("tokens_used")
	// counterBucket holds each passkey's highest signature counter
	// (credential id -> uint32 big-endian), so that a cloned
	// authenticator's replay is refused after years, without a scan.
	counterBucket = []byte("passkey_counters")
)

// Store keeps approvals beside the chain in the ledger's bbolt file.
type Store struct {
	l  *ledger.Ledger // nil for a Reader
	db *bolt.DB

	// open holds every approval stored as pending, decoded: filled at Open
	// before anything writes, then kept by put when its transaction
	// commits, so listing the queue decodes nothing (10,000 approvals
	// waiting at quarter end). nil for a Reader.
	mu   sync.Mutex
	open map[string]*approvals.Approval
}

var _ approvals.Store = (*Store)(nil)

// Open creates the store's buckets in l's file if needed.
func Open(l *ledger.Ledger) (*Store, error) {
	db := l.DB()
	if err := initBuckets(db); err != nil {
		return nil, err
	}
	s := &Store{l: l, db: db, open: map[string]*approvals.Approval{}}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(openBucket).ForEach(func(k, _ []byte) error {
			a, err := get(tx, string(k))
			if err != nil {
				return err
			}
			s.open[a.ID] = a
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Reader reads approvals from a ledger opened read-only (offline export):
// it has Get and List, and every write fails.
func Reader(l *ledger.Ledger) *Store { return &Store{db: l.DB()} }

func initBuckets(db *bolt.DB) error {
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(usedBucket); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketName); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(counterBucket); err != nil {
			return err
		}
		if tx.Bucket(openBucket) != nil {
			return nil
		}
		// First start with the index (or an older file): build it once.
		open, err := tx.CreateBucket(openBucket)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketName).ForEach(func(k, v []byte) error {
			var a approvals.Approval
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if a.Status == approvals.StatusPending {
				return open.Put(k, nil)
			}
			return nil
		})
	}); err != nil {
		return fmt.Errorf("create approvals bucket: %w", err)
	}
	return nil
}

var errReadOnly = errors.New("approvals store opened read-only")

// Create appends e and stores a with it, in one transaction.
func (s *Store) Create(ctx context.Context, a *approvals.Approval, e ledger.Entry) (ledger.Record, error) {
	if s.l == nil {
		return ledger.Record{}, errReadOnly
	}
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		if b := tx.Bucket(bucketName); b != nil && b.Get([]byte(a.ID)) != nil {
			return fmt.Errorf("approval %s exists already", a.ID)
		}
		a.RequestRecord = rec.Seq
		return s.put(tx, a)
	}
	return s.l.Append(ctx, e)
}

// Update appends e and stores what change makes of approval id, in one
// transaction: concurrent changes see each other.
func (s *Store) Update(ctx context.Context, id string, e ledger.Entry, change func(*approvals.Approval, *ledger.Record) error) (ledger.Record, error) {
	if s.l == nil {
		return ledger.Record{}, errReadOnly
	}
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		a, err := get(tx, id)
		if err != nil {
			return err
		}
		if err := change(a, rec); err != nil {
			return err
		}
		if err := keepCounters(tx, a, rec.Seq); err != nil {
			return err
		}
		return s.put(tx, a)
	}
	return s.l.Append(ctx, e)
}

// keepCounters raises the stored counter of the passkey of a's decision
// made by record seq, refusing a counter that does not rise.
func keepCounters(tx *bolt.Tx, a *approvals.Approval, seq uint64) error {
	b := tx.Bucket(counterBucket)
	for _, d := range a.Decisions {
		if d.WebAuthn == nil || d.Record != seq {
			continue
		}
		n := passkey.Counter(*d.WebAuthn)
		key := []byte(d.WebAuthn.CredentialID)
		if v := b.Get(key); len(v) == 4 && binary.BigEndian.Uint32(v) >= n {
			if binary.BigEndian.Uint32(v) != 0 {
				return approvals.ErrPasskeyReplayed // 0 after counting is a clone's too
			}
			continue
		}
		if err := b.Put(key, binary.BigEndian.AppendUint32(nil, n)); err != nil {
			return err
		}
	}
	return nil
}

// PasskeyCounter returns the highest counter stored for a passkey.
func (s *Store) PasskeyCounter(credentialID string) (uint32, error) {
	var n uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(counterBucket); b != nil {
			if v := b.Get([]byte(credentialID)); len(v) == 4 {
				n = binary.BigEndian.Uint32(v)
			}
		}
		return nil
	})
	return n, err
}

// Consume appends e and marks approval id and token tokenID used by it, in
// one transaction. A hook e has (a cumulative_cap charge) runs in it too,
// after the approval is marked.
func (s *Store) Consume(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	if s.l == nil {
		return ledger.Record{}, errReadOnly
	}
	then := e.Tx
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		a, err := get(tx, id)
		if err != nil {
			return fmt.Errorf("%w: %v", approvals.ErrNotApproved, err)
		}
		if err := approvals.CheckConsume(a, tokenID); err != nil {
			return err
		}
		if err := markUsed(tx, tokenID, rec.Seq); err != nil {
			return err
		}
		a.Consumed = rec.Seq
		if err := s.put(tx, a); err != nil {
			return err
		}
		if then != nil {
			return then(tx, rec)
		}
		return nil
	}
	return s.l.Append(ctx, e)
}

// UseOverride appends e and counts one use of override id under token
// tokenID by it, in one transaction. Uses racing in one group commit run
// their hooks one after another in the same transaction, each seeing the
// count the one before wrote, so the last use left goes to exactly one.
func (s *Store) UseOverride(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	if s.l == nil {
		return ledger.Record{}, errReadOnly
	}
	e.Tx = func(tx *bolt.Tx, _ *ledger.Record) error {
		a, err := get(tx, id)
		if err != nil {
			return fmt.Errorf("%w: %v", approvals.ErrNotApproved, err)
		}
		if err := approvals.CheckOverrideUse(a, tokenID); err != nil {
			return err
		}
		a.Uses++
		return s.put(tx, a)
	}
	return s.l.Append(ctx, e)
}

// Release appends e and undoes the Consume by record usedBy, in one
// transaction: the approval and its token are usable again.
func (s *Store) Release(ctx context.Context, id, tokenID string, usedBy uint64, e ledger.Entry) (ledger.Record, error) {
	if s.l == nil {
		return ledger.Record{}, errReadOnly
	}
	e.Tx = func(tx *bolt.Tx, _ *ledger.Record) error {
		a, err := get(tx, id)
		if err != nil {
			return err
		}
		if a.Consumed != usedBy || a.TokenID != tokenID {
			return fmt.Errorf("approval %s is not consumed by record %d", id, usedBy)
		}
		if b := tx.Bucket(usedBucket); b != nil {
			if err := b.Delete([]byte(tokenID)); err != nil {
				return err
			}
		}
		a.Consumed = 0
		return s.put(tx, a)
	}
	return s.l.Append(ctx, e)
}

// put writes a inside tx, keeping the pending index.
func (s *Store) put(tx *bolt.Tx, a *approvals.Approval) error {
	b := tx.Bucket(bucketName)
	if b == nil {
		return errors.New("approvals bucket missing")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // a held body is stored at its size: "<" is one byte, not six
	if err := enc.Encode(a); err != nil {
		return fmt.Errorf("encode approval %s: %w", a.ID, err)
	}
	v := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := b.Put([]byte(a.ID), v); err != nil {
		return err
	}
	open := tx.Bucket(openBucket)
	if open == nil {
		return errors.New("approvals index missing")
	}
	if s.open != nil {
		c := a.Clone()
		tx.OnCommit(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c.Status == approvals.StatusPending {
				s.open[c.ID] = c
			} else {
				delete(s.open, c.ID)
			}
		})
	}
	if a.Status == approvals.StatusPending {
		return open.Put([]byte(a.ID), nil)
	}
	return open.Delete([]byte(a.ID))
}

// pendingCopy returns copies of the approvals stored as pending, from the
// committed state put keeps; ok is false for a Reader.
func (s *Store) pendingCopy() (list []*approvals.Approval, ok bool) {
	if s.open == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	list = make([]*approvals.Approval, 0, len(s.open))
	for _, a := range s.open {
		list = append(list, a.Clone())
	}
	return list, true
}

// get reads an approval inside tx.
func get(tx *bolt.Tx, id string) (*approvals.Approval, error) {
	b := tx.Bucket(bucketName)
	if b == nil {
		return nil, errors.New("approvals bucket missing")
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	a := new(approvals.Approval)
	if err := json.Unmarshal(v, a); err != nil { // Unmarshal copies out of the mmap
		return nil, fmt.Errorf("decode approval %s: %w", id, err)
	}
	return a, nil
}

// markUsed records, inside tx, that token id was used by ledger record seq.
// A second use fails with tokens.ErrConsumed.
func markUsed(tx *bolt.Tx, id string, seq uint64) error {
	b := tx.Bucket(usedBucket)
	if b == nil {
		return errors.New("tokens bucket missing")
	}
	if b.Get([]byte(id)) != nil {
		return fmt.Errorf("%w: token %s was already used", tokens.ErrConsumed, id)
	}
	return b.Put([]byte(id), []byte(strconv.FormatUint(seq, 10)))
}

// used reports whether token id has been used.
func used(db *bolt.DB, id string) (bool, error) {
	var u bool
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(usedBucket)
		u = b != nil && b.Get([]byte(id)) != nil
		return nil
	})
	return u, err
}

// Get returns the approval with the given id.
func (s *Store) Get(id string) (*approvals.Approval, error) {
	var a *approvals.Approval
	err := s.db.View(func(tx *bolt.Tx) error {
		if s.l == nil && tx.Bucket(bucketName) == nil {
			return fmt.Errorf("%w: %s", approvals.ErrNotFound, id) // a chain from before approvals existed
		}
		var err error
		a, err = get(tx, id)
		return err
	})
	return a, err
}

// Due returns the approvals still stored as pending whose expiry has passed
// at now: what an expiry sweep must close. It reads only the pending index.
func (s *Store) Due(now time.Time) ([]*approvals.Approval, error) {
	var out []*approvals.Approval
	if list, ok := s.pendingCopy(); ok {
		for _, a := range list {
			if !now.Before(a.ExpiresAt) {
				out = append(out, a)
			}
		}
		return out, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		open := tx.Bucket(openBucket)
		if open == nil {
			return nil
		}
		return open.ForEach(func(k, _ []byte) error {
			a, err := get(tx, string(k))
			if err != nil {
				return err
			}
			if a.Status == approvals.StatusPending && !now.Before(a.ExpiresAt) {
				out = append(out, a)
			}
			return nil
		})
	})
	return out, err
}

// List returns the approvals whose effective status at now is status (all
// when status is ""), oldest first.
func (s *Store) List(status string, now time.Time) ([]*approvals.Approval, error) {
	if !approvals.ValidStatus(status) {
		return nil, approvals.ErrBadStatus
	}
	var out []*approvals.Approval
	if status == approvals.StatusPending {
		if list, ok := s.pendingCopy(); ok {
			for _, a := range list {
				if a.Effective(now) == status {
					out = append(out, a)
				}
			}
			sortOldestFirst(out)
			return out, nil
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if status == approvals.StatusPending {
			// Only stored-pending approvals can be effectively pending.
			open := tx.Bucket(openBucket)
			if open == nil {
				return nil
			}
			return open.ForEach(func(k, _ []byte) error {
				a, err := get(tx, string(k))
				if err != nil {
					return err
				}
				if a.Effective(now) == status {
					out = append(out, a)
				}
				return nil
			})
		}
		b := tx.Bucket(bucketName)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			a := new(approvals.Approval)
			if err := json.Unmarshal(v, a); err != nil {
				return err
			}
			if status == "" || a.Effective(now) == status {
				out = append(out, a)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortOldestFirst(out)
	return out, nil
}

// sortOldestFirst orders approvals by creation; the id orders those made at
// the same instant, so that pages by cursor neither skip nor repeat one.
func sortOldestFirst(out []*approvals.Approval) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
}
