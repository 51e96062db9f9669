package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
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
