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

// ScanBatches is Scan handing fn the records of one read transaction at a
// time, copied into one buffer per transaction instead of two allocations a
// record: keys[i] and raws[i] are slices of it, which fn may keep. It is
// what the verifier reads the file through when it checks records on every
// core; everything else Scan promises holds.
func (l *Ledger) ScanBatches(ctx context.Context, fn func(keys, raws [][]byte) error) (head []byte, err error) {
	if err := l.visible(math.MaxUint64); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	var start []byte  // nil: from the very first key
	hint := 256 << 10 // the buffer a batch starts with: the last one's size
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		keys, raws, atEnd, meta, err := l.readBatch(start, hint)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		if len(raws) > 0 {
			if err := fn(keys, raws); err != nil {
				return nil, err
			}
		}
		if atEnd {
			if len(l.overlay) == 0 {
				return meta, nil
			}
			keys, raws := make([][]byte, len(l.overlay)), make([][]byte, len(l.overlay))
			for i, r := range l.overlay {
				keys[i], raws[i] = seqKey(r.seq), bytes.Clone(r.raw)
			}
			if err := fn(keys, raws); err != nil {
				return nil, err
			}
			return l.overlayHead(), nil
		}
		if len(raws) == 0 {
			return nil, errors.New("scan: read made no progress")
		}
		start = append(bytes.Clone(keys[len(keys)-1]), 0)
		if last := raws[len(raws)-1]; cap(last) > 0 {
			hint = max(hint, len(keys)*(len(keys[0])+len(last))*9/8)
		}
	}
}

// readBatch is readChunk with every key and record copied into one buffer.
func (l *Ledger) readBatch(start []byte, hint int) (keys, raws [][]byte, atEnd bool, meta []byte, err error) {
	err = l.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRecords); b != nil {
			c := b.Cursor()
			k, v := c.First()
			if start != nil {
				k, v = c.Seek(start)
			}
			var buf []byte
			var offs [][3]int // key start, record start, record end
			for ; k != nil; k, v = c.Next() {
				if len(offs) == chunkRecords || len(buf) >= chunkBytes {
					break
				}
				if buf == nil {
					buf = make([]byte, 0, hint)
				}
				at := len(buf)
				buf = append(append(buf, k...), v...)
				offs = append(offs, [3]int{at, at + len(k), len(buf)})
			}
			keys, raws = make([][]byte, len(offs)), make([][]byte, len(offs))
			for i, o := range offs {
				keys[i], raws[i] = buf[o[0]:o[1]:o[1]], buf[o[1]:o[2]:o[2]]
			}
			if k != nil {
				return nil
			}
		}
		atEnd = true
		if m := tx.Bucket(bucketMeta); m != nil {
			meta = bytes.Clone(m.Get(keyHead))
		}
		return nil
	})
	return keys, raws, atEnd, meta, err
}
