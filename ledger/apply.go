package ledger

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// applyRecords puts journaled records into bbolt inside tx: each record, its
// BucketForwardPending change, and the head. Records bbolt holds already
// are skipped; the first one it does not must follow its head.
func applyRecords(tx *bolt.Tx, recs []jrec) error {
	records, meta, open := tx.Bucket(bucketRecords), tx.Bucket(bucketMeta), tx.Bucket(bucketPending)
	if records == nil || meta == nil || open == nil {
		return fmt.Errorf("%w: ledger buckets missing", ErrCorrupt)
	}
	// Keys only ever grow: full pages waste no space and split less.
	records.FillPercent = 1.0
	if len(recs) == 0 {
		return nil
	}
	h, err := readHead(tx)
	if err != nil {
		return err
	}
	for len(recs) > 0 && recs[0].seq <= h.Seq {
		recs = recs[1:]
	}
	if len(recs) == 0 {
		return nil
	}
	first := recs[0].seq
	if first != h.Seq+1 {
		return fmt.Errorf("%w: journaled record %d does not follow ledger.db's head %d", ErrCorrupt, first, h.Seq)
	}
	// A request opened and closed within recs (its forward record came
	// in time, as nearly all do) leaves BucketForwardPending as it was:
	// neither its Put nor its Delete is made. No key from first on can be
	// in the bucket before recs put it there: bbolt's head is first-1.
	closed := make([]bool, len(recs))
	for i, r := range recs {
		if r.seq != first+uint64(i) {
			return fmt.Errorf("%w: journaled record %d follows %d", ErrCorrupt, r.seq, first+uint64(i)-1)
		}
		if r.closes >= first && r.closes < r.seq {
			closed[r.closes-first] = true
		}
	}
	for i, r := range recs {
		k := seqKey(r.seq)
		if err := records.Put(k, r.raw); err != nil {
			return fmt.Errorf("put record %d: %w", r.seq, err)
		}
		if r.opens && !closed[i] {
			if err := open.Put(k, nil); err != nil {
				return fmt.Errorf("put pending %d: %w", r.seq, err)
			}
		}
		if r.closes != 0 && (r.closes < first || r.closes >= r.seq) {
			if err := open.Delete(seqKey(r.closes)); err != nil {
				return fmt.Errorf("delete pending %d: %w", r.closes, err)
			}
		}
	}
	last := recs[len(recs)-1]
	hb, err := json.Marshal(Head{Seq: last.seq, Hash: last.hash, Time: last.time})
	if err != nil {
		return err
	}
	return meta.Put(keyHead, hb)
}

// applyNow copies every journaled record into bbolt in one synced
// transaction. After it returns nil, bbolt holds every record that was in
// the journal when it was called.
func (l *Ledger) applyNow() error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.umu.Lock()
	todo := l.unapplied
	l.umu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		if tx.DB().NoSync {
			return errNoSync
		}
		return applyRecords(tx, todo)
	})
	if err != nil {
		err = fmt.Errorf("apply journaled records %d-%d to ledger.db: %w", todo[0].seq, todo[len(todo)-1].seq, SpaceError(l.path, err))
		l.umu.Lock()
		l.applyErr = err
		l.umu.Unlock()
		return err
	}
	l.appliedTo(len(todo), todo[len(todo)-1].seq)
	l.mu.Lock()
	l.stats.Applies++
	l.mu.Unlock()
	return nil
}

// appliedTo notes that bbolt now holds the first n unapplied records and
// every record up to seq.
func (l *Ledger) appliedTo(n int, seq uint64) {
	l.umu.Lock()
	defer l.umu.Unlock()
	if n == len(l.unapplied) {
		// Keep the array for the next records: whoever read these
		// (holding applyMu, as the caller does) is done with them.
		clear(l.unapplied)
		l.unapplied = l.unapplied[:0]
		if cap(l.unapplied) > 4*applyMax {
			l.unapplied = nil
		}
	} else {
		// Records came while these were applied (under load, every
		// time): move them to the front rather than slice the front
		// off, or each apply would leave the writer a shorter array to
		// grow again.
		m := copy(l.unapplied, l.unapplied[n:])
		clear(l.unapplied[m:])
		l.unapplied = l.unapplied[:m]
	}
	l.applied, l.applyErr = max(l.applied, seq), nil
}

// applyFailed returns the last apply's failure, after trying once more.
func (l *Ledger) applyFailed() error {
	l.umu.Lock()
	err := l.applyErr
	l.umu.Unlock()
	if err == nil {
		return nil
	}
	return l.applyNow()
}

// visible makes sure bbolt holds every record up to seq (capped at the
// head) before a reader looks there.
func (l *Ledger) visible(seq uint64) error {
	if l.readOnly || l.j == nil {
		return nil
	}
	l.umu.Lock()
	behind := len(l.unapplied) > 0 && l.applied < seq
	l.umu.Unlock()
	if !behind {
		return nil
	}
	return l.applyNow()
}

// applyLoop copies journaled records into bbolt in the background, letting
// them gather for applyDelay; after a failure it tries again every
// probeEvery until Close.
func (l *Ledger) applyLoop() {
	defer close(l.applyDone)
	t := time.NewTimer(applyDelay)
	for {
		select {
		case <-l.applyWake:
		case <-l.quit:
			return
		}
		l.umu.Lock()
		n := len(l.unapplied)
		l.umu.Unlock()
		if n < applyMax {
			t.Reset(applyDelay)
			select {
			case <-t.C:
			case <-l.quit:
				return
			}
		}
		if err := l.applyNow(); err != nil {
			t.Reset(l.probeEvery)
			select {
			case <-t.C:
			case <-l.quit:
				return
			}
			select {
			case l.applyWake <- struct{}{}:
			default:
			}
		}
	}
}
