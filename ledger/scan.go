package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// Scan calls fn with every stored key and record in key order, from the
// very first key (so a stray key below record 1 is seen too), in bounded
// read transactions, so that it can run beside a live writer. It stops at
// fn's first error, which it returns. Once every record has been passed, it
// returns the stored head (nil if there is none), read in the same
// transaction as the last records, so the two agree even while the writer
// appends. key and raw are copies fn may keep.
//
// Scan checks nothing: it is how a checker that trusts nothing here
// (package verifier's Verify) reads the file. Range is for readers that
// want records by seq.
func (l *Ledger) Scan(ctx context.Context, fn func(key, raw []byte) error) (head []byte, err error) {
	if err := l.visible(math.MaxUint64); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	var start []byte // nil: from the very first key
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		items, atEnd, meta, err := l.readChunk(start, math.MaxUint64)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		for _, it := range items {
			if err := fn(it.key, it.raw); err != nil {
				return nil, err
			}
		}
		if atEnd {
			if len(l.overlay) == 0 {
				return meta, nil
			}
			for _, r := range l.overlay {
				if err := fn(seqKey(r.seq), bytes.Clone(r.raw)); err != nil {
					return nil, err
				}
			}
			return l.overlayHead(), nil
		}
		if len(items) == 0 {
			return nil, errors.New("scan: read made no progress")
		}
		// The least key above the last one read.
		start = append(bytes.Clone(items[len(items)-1].key), 0)
	}
}

// RangeBorrow is Range for a reader that only looks: raw is the file's own
// memory, valid only until fn returns, and fn runs inside a read
// transaction, so it must be quick and must not call the Ledger. It saves
// the copy Range makes of every record (the archiver reads each record
// once, into its segment).
func (l *Ledger) RangeBorrow(from, to uint64, fn func(seq uint64, raw []byte) error) error {
	from = max(from, 1)
	if err := l.visible(to); err != nil {
		return fmt.Errorf("range %d-%d: %w", from, to, err)
	}
	for from <= to {
		n, next, err := l.borrowChunk(from, to, fn)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if next == 0 {
			return nil
		}
		from = next
	}
	for _, r := range l.overlay {
		if r.seq >= from && r.seq <= to {
			if err := fn(r.seq, r.raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// borrowChunk calls fn on up to chunkRecords records from seq from in one
// read transaction and returns how many, and the seq after the last (0
// after math.MaxUint64).
func (l *Ledger) borrowChunk(from, to uint64, fn func(seq uint64, raw []byte) error) (n int, next uint64, err error) {
	err = l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		size := 0
		for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
			if n == chunkRecords || size >= chunkBytes {
				return nil
			}
			if len(k) != 8 {
				return fmt.Errorf("range: %w: key %x", ErrCorrupt, k)
			}
			seq := binary.BigEndian.Uint64(k)
			if seq > to {
				return nil
			}
			if err := fn(seq, v); err != nil {
				return err
			}
			n++
			size += len(v)
			next = seq + 1
		}
		return nil
	})
	return n, next, err
}
