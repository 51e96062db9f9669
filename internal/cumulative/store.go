// Package cumulative keeps, per action, the amounts the gate let through
// below the escalation level, for cumulative_cap. They live in the
// ledger's own bbolt file, in a bucket of their own, and each amount is
// written inside the write transaction of the request record that let its
// request through (ledger.Entry.Tx): an amount counts if and only if its
// record exists, across restarts. The sum is checked again inside that
// transaction, so requests racing in one group commit cannot together
// pass the cap. Nothing of bbolt leaves this package.
//
// # Layout
//
// Bucket "cumulative", one sub-bucket per action; keys are the time the
// gate decided (Unix nanoseconds, big-endian) then the record's seq (both
// 8 bytes), so keys sort by time; values are the amount as exact decimal
// text (big.Rat form). Entries older than the longest window a manifest may
// name are pruned as time moves, so a manifest that widens its window
// still sees what it should.
package cumulative

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

var bucketName = []byte("cumulative")

// ErrOverCap (the gate's ErrCumulativeOverCap) is returned, wrapped, by an append whose charge would take the
// window's sum over its cap: nothing was written.
var ErrOverCap = gate.ErrCumulativeOverCap

// pruneBatch bounds the expired entries one charge deletes, so that a
// transaction stays small after a long pause.
const pruneBatch = 256

// Store keeps the sums beside the chain in the ledger's bbolt file.
type Store struct{ db *bolt.DB }

// Open creates the store's bucket in l's file if needed.
func Open(l *ledger.Ledger) (*Store, error) {
	db := l.DB()
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		return nil, fmt.Errorf("create cumulative bucket: %w", err)
	}
	return &Store{db: db}, nil
}

// Sum returns the amounts counted for action in the window ending at now
// (times t with now-window < t <= now).
func (s *Store) Sum(action string, now time.Time, window time.Duration) (*big.Rat, error) {
	sum := new(big.Rat)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		sum, err = sumIn(tx, action, now, window)
		return err
	})
	return sum, err
}

// Charge returns e with a transaction hook that counts amount for action
// at time at, in the transaction of e's record, provided the window's sum
// plus amount stays within limit; otherwise the append fails with
// ErrOverCap and writes nothing. Any hook e had runs first.
func (s *Store) Charge(e ledger.Entry, action string, at time.Time, window time.Duration, amount, limit *big.Rat) ledger.Entry {
	prev := e.Tx
	amt := new(big.Rat).Set(amount)
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		if prev != nil {
			if err := prev(tx, rec); err != nil {
				return err
			}
		}
		sum, err := sumIn(tx, action, at, window)
		if err != nil {
			return err
		}
		if sum.Add(sum, amt).Cmp(limit) > 0 {
			return fmt.Errorf("%w: action %s would reach %s", ErrOverCap, action, sum.FloatString(2))
		}
		b, err := actionBucket(tx, action)
		if err != nil {
			return err
		}
		if err := prune(b, at.Add(-rules.MaxCumulativeWindow)); err != nil {
			return err
		}
		return b.Put(key(at, rec.Seq), []byte(amt.RatString()))
	}
	return e
}

func actionBucket(tx *bolt.Tx, action string) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketName)
	if root == nil {
		return nil, errors.New("cumulative bucket missing")
	}
	return root.CreateBucketIfNotExists([]byte(action))
}

func sumIn(tx *bolt.Tx, action string, now time.Time, window time.Duration) (*big.Rat, error) {
	sum := new(big.Rat)
	root := tx.Bucket(bucketName)
	if root == nil {
		return nil, errors.New("cumulative bucket missing")
	}
	b := root.Bucket([]byte(action))
	if b == nil {
		return sum, nil
	}
	// Strictly after now-window: the first key of the next nanosecond.
	from := key(now.Add(-window).Add(1), 0)
	end := now.UnixNano()
	c := b.Cursor()
	var x big.Rat
	for k, v := c.Seek(from); k != nil; k, v = c.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) > end {
			break
		}
		if _, ok := x.SetString(string(v)); !ok {
			return nil, fmt.Errorf("cumulative: bad amount %q for action %s", v, action)
		}
		sum.Add(sum, &x)
	}
	return sum, nil
}

// prune deletes up to pruneBatch entries older than before. Keys are
// collected first: a bbolt cursor skips an element after Delete.
func prune(b *bolt.Bucket, before time.Time) error {
	limit := string(key(before, 0))
	var old [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(old) < pruneBatch && string(k) < limit; k, _ = c.Next() {
		old = append(old, append([]byte(nil), k...))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func key(t time.Time, seq uint64) []byte {
	k := make([]byte, 16)
	ns := t.UnixNano()
	if ns < 0 {
		ns = 0
	}
	binary.BigEndian.PutUint64(k[:8], uint64(ns))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

var _ gate.Cumulative = (*Store)(nil)
