package ledger

import (
	"bytes"
	"context"
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
			return meta, nil
		}
		if len(items) == 0 {
			return nil, errors.New("scan: read made no progress")
		}
		// The least key above the last one read.
		start = append(bytes.Clone(items[len(items)-1].key), 0)
	}
}

// ScanBatches is Scan handing fn the records of one read transaction at a
// time, copied into one buffer per transaction instead of two allocations a
// record: keys[i] and raws[i] are slices of it, which fn may keep. It is
// what the verifier reads the file through when it checks records on every
// core; everything else Scan promises holds.
func (l *Ledger) ScanBatches(ctx context.Context, fn func(keys, raws [][]byte) error) (head []byte, err error) {
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
			return meta, nil
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
