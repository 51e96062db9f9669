package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// The docs/reference.md contract: every allow record (kind request or
// override, decision allow: the records that let a request reach the ERP)
// is followed by a forward record, or, when the proxy cannot write one, by
// an outcome record. The ledger keeps the seqs still waiting for either in
// BucketForwardPending, in the transaction of the records themselves: an
// allow record puts its seq, a forward or outcome record naming it in
// data.request_record deletes it. The bucket therefore holds only the
// requests in flight (a few per connection), and what a crash leaves in it
// is exactly what Recover must answer for, without reading the chain.
//
// Three outcome records exist:
//
//   - crash_recovery (decision unknown), by Recover at start: the proxy
//     stopped between the allow record and its forward record.
//   - forward_not_recorded (decision unknown): a forward record failed
//     with its commit (a full disk); written as soon as a commit or the
//     probe succeeds again, with the forward record's reason and data.
//   - not_forwarded (decision deny): an Append whose caller stopped
//     waiting (ErrCommitInFlight) was committed after all; its caller
//     answered 503 and forwarded nothing.
//
// An outcome record is written only while its request is still in the
// bucket (pending.onlyIfOpen), so never twice and never after a late
// forward record.

// maxOwed bounds the outcome records this process keeps in memory to
// write later; beyond it, the requests stay in BucketForwardPending and get
// theirs at the next start.
const maxOwed = 100000

// probeSize is the value the health probe writes: a few pages, so that the
// probe needs fresh pages as a real commit does, and never more than that.
const probeSize = 16 << 10

var keyProbe = []byte("probe")

// owed is an outcome record this process owes for request seq.
type owed struct {
	reason record.Reason
	fwd    *Entry // forward_not_recorded: the forward record that was lost
	queued bool   // its outcome record is queued
}

// forwardLink says whether e opens a request waiting for its forward
// record, or which request it closes (0: none).
func forwardLink(e *Entry) (opens bool, closes uint64) {
	switch e.Kind {
	case record.KindRequest, record.KindOverride:
		return e.Decision == record.Allow, 0
	case record.KindForward, record.KindOutcome:
		return false, seqOf(e.Data["request_record"])
	}
	return false, 0
}

func seqOf(v any) uint64 {
	switch n := v.(type) {
	case uint64:
		return n
	case uint:
		return uint64(n)
	case uint32:
		return uint64(n)
	case int:
		if n > 0 {
			return uint64(n)
		}
	case int64:
		if n > 0 {
			return uint64(n)
		}
	case int32:
		if n > 0 {
			return uint64(n)
		}
	}
	return 0
}

// buildPending creates BucketForwardPending from the chain: once, for a
// file written before the bucket existed.
func buildPending(tx *bolt.Tx) error {
	open, err := tx.CreateBucket(bucketPending)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketPending, err)
	}
	var r struct {
		Kind     record.Kind     `json:"kind"`
		Decision record.Decision `json:"decision"`
		Data     struct {
			RequestRecord uint64 `json:"request_record"`
		} `json:"data"`
	}
	c := tx.Bucket(bucketRecords).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r.Kind, r.Decision, r.Data.RequestRecord = "", "", 0
		if len(k) != 8 || json.Unmarshal(v, &r) != nil {
			continue // Verify reports it
		}
		opens, closes := forwardLink(&Entry{Kind: r.Kind, Decision: r.Decision,
			Data: map[string]any{"request_record": r.Data.RequestRecord}})
		if opens {
			if err := open.Put(bytes.Clone(k), nil); err != nil {
				return err
			}
		}
		if closes != 0 {
			if err := open.Delete(seqKey(closes)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pending returns the seqs of the allow records that have neither a forward
// nor an outcome record yet, oldest first: the requests in flight, and
// after a crash those Recover answers for.
func (l *Ledger) Pending() ([]uint64, error) {
	if err := l.visible(math.MaxUint64); err != nil {
		return nil, err
	}
	var out []uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPending)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) == 8 {
				out = append(out, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	return out, err
}

// Recover appends one outcome record (decision unknown, reason
// crash_recovery) for every allow record up to the head at Open that has
// neither a forward nor an outcome record: what the last run was cut short
// of. Call it once after Open, before anything is let through; a request
// already answered for is never answered for again, so calling it twice
// (or after a crash during Recover) writes nothing more. It reads only
// BucketForwardPending and the records it names, never the whole chain.
func (l *Ledger) Recover(ctx context.Context) (int, error) {
	if l.readOnly {
		return 0, ErrReadOnly
	}
	written := 0
	from := uint64(1)
	for from <= l.openHead {
		type found struct {
			seq uint64
			raw []byte
		}
		var batch []found
		err := l.db.View(func(tx *bolt.Tx) error {
			open, records := tx.Bucket(bucketPending), tx.Bucket(bucketRecords)
			if open == nil || records == nil {
				return fmt.Errorf("%w: ledger buckets missing", ErrCorrupt)
			}
			c := open.Cursor()
			for k, _ := c.Seek(seqKey(from)); k != nil && len(batch) < maxBatch; k, _ = c.Next() {
				if len(k) != 8 {
					continue
				}
				seq := binary.BigEndian.Uint64(k)
				if seq > l.openHead {
					break
				}
				batch = append(batch, found{seq, bytes.Clone(records.Get(k))})
			}
			return nil
		})
		if err != nil {
			return written, fmt.Errorf("recover: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		ps := make([]*pending, 0, len(batch))
		for _, f := range batch {
			if f.raw == nil {
				continue // a pending seq with no record: Verify reports the gap
			}
			p, err := outcomeFor(f.seq, f.raw, record.CrashRecovery, nil)
			if err != nil {
				return written, fmt.Errorf("recover: record %d: %w", f.seq, err)
			}
			p.res = make(chan result, 1)
			ps = append(ps, p)
		}
		if err := l.enqueue(ps...); err != nil {
			return written, err
		}
		for _, p := range ps {
			select {
			case r := <-p.res:
				switch {
				case r.err == nil:
					written++
				case errors.Is(r.err, errNotOpen):
				default:
					return written, fmt.Errorf("recover: outcome of record %d: %w", p.closes, r.err)
				}
			case <-ctx.Done():
				// What is queued is written all the same.
				return written, fmt.Errorf("recover: %w", ctx.Err())
			}
		}
		from = batch[len(batch)-1].seq + 1
	}
	return written, nil
}

// outcomeFor makes the outcome record of request seq (raw: its stored
// record) for reason; fwd is the lost forward record of
// forward_not_recorded.
func outcomeFor(seq uint64, raw []byte, reason record.Reason, fwd *Entry) (*pending, error) {
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	d := record.Outcome{RequestRecord: seq, RequestHash: r.Hash, RequestKind: string(r.Kind), RequestReason: string(r.Reason)}
	decision := record.Unknown
	switch reason {
	case record.CrashRecovery:
		d.ERPReceived = "unknown"
		d.Detail = "the proxy stopped after this request was recorded as allowed and before what came of it was recorded; whether the ERP received it is not known"
	case record.NotForwarded:
		decision, d.ERPReceived = record.Deny, "no"
		d.Detail = "the request record became durable only after the append timeout had passed; the agent was answered 503 ledger_unavailable and nothing was forwarded"
	case record.ForwardNotRecorded:
		d.ERPReceived = "unknown"
		d.Detail = "the forward record could not be written (its commit failed); forward_reason and forward are what the proxy knew of the ERP's answer"
		if fwd != nil {
			d.ForwardReason, d.Forward = string(fwd.Reason), maps.Clone(fwd.Data)
			switch fwd.Reason {
			case record.Forwarded, record.UpstreamError, record.TunnelClosed:
				d.ERPReceived = "yes"
			case record.UpstreamUnavailable:
				d.ERPReceived = "no"
			}
		}
	}
	p, err := prepare(Entry{Kind: record.KindOutcome, App: r.App, Action: r.Action, Decision: decision, Reason: reason,
		ApprovalID: r.ApprovalID, Digest: r.Digest, Policy: r.Policy, Data: d.Map()})
	if err != nil {
		return nil, err
	}
	p.onlyIfOpen = true
	return p, nil
}

// owe notes an outcome record owed for request seq.
func (l *Ledger) owe(seq uint64, o *owed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.owed[seq]; ok || len(l.owed) >= maxOwed {
		return
	}
	l.owed[seq] = o
}

// lost notes the forward records of a batch whose commit failed.
func (l *Ledger) lost(batch []*pending) {
	for _, p := range batch {
		if p.e.Kind == record.KindForward && p.closes != 0 {
			e := p.e
			l.owe(p.closes, &owed{reason: record.ForwardNotRecorded, fwd: &e})
		}
	}
}

// flushOwed queues the outcome records owed, off the writer's goroutine;
// it is called after each successful commit and probe.
func (l *Ledger) flushOwed() {
	l.mu.Lock()
	var todo []uint64
	for seq, o := range l.owed {
		if !o.queued {
			o.queued = true
			todo = append(todo, seq)
		}
	}
	l.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	l.callbacks.Add(1)
	go func() {
		defer l.callbacks.Done()
		for _, seq := range todo {
			l.mu.Lock()
			o := l.owed[seq]
			l.mu.Unlock()
			settle := func(err error) {
				l.mu.Lock()
				defer l.mu.Unlock()
				var ee *entryError
				if err == nil || errors.Is(err, errNotOpen) || errors.As(err, &ee) || errors.Is(err, ErrInvalidEntry) {
					delete(l.owed, seq)
					return
				}
				o.queued = false // the next successful commit tries again
			}
			raw, err := l.Get(seq)
			if err != nil {
				settle(nil) // no such request record: nothing to say
				continue
			}
			p, err := outcomeFor(seq, raw, o.reason, o.fwd)
			if err == nil {
				p.done = func(_ Record, err error) { settle(err) }
				err = l.enqueue(p)
			}
			if err != nil {
				settle(err)
			}
		}
	}()
}

// probeLoop, while the last commit has failed, tries a small synced write
// beside the chain every probeEvery and clears the failure when it
// succeeds: readiness then comes back without waiting for a request.
func (l *Ledger) probeLoop() {
	defer close(l.probeDone)
	t := time.NewTicker(l.probeEvery)
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-t.C:
		}
		l.mu.Lock()
		failed, failures := l.err != nil, l.stats.Failures
		l.mu.Unlock()
		if !failed {
			continue
		}
		err := l.probe()
		l.mu.Lock()
		switch {
		case l.stats.Failures != failures || l.err == nil:
			// A commit ran meanwhile: its result stands.
		case err != nil:
			l.err = SpaceError(l.path, err)
		default:
			l.err = nil
		}
		healthy := l.err == nil
		l.mu.Unlock()
		if healthy {
			l.flushOwed()
		}
	}
}

// probe checks what a commit needs and writes probeSize bytes, synced,
// over the last probe's: the file never grows by more than that.
func (l *Ledger) probe() error {
	if err := l.scrub(); err != nil {
		return err
	}
	return l.db.Update(func(tx *bolt.Tx) error {
		if tx.DB().NoSync {
			return errors.New("bbolt NoSync is set: records would not be durable")
		}
		records := tx.Bucket(bucketRecords)
		if records == nil || tx.Bucket(bucketMeta) == nil || tx.Bucket(bucketPending) == nil {
			return fmt.Errorf("%w: ledger buckets missing", ErrCorrupt)
		}
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if err := checkTail(records, h, false); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketProbe)
		if err != nil {
			return err
		}
		v := make([]byte, probeSize)
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		if err := b.Put(keyProbe, v); err != nil {
			return err
		}
		if f := l.failProbe.Load(); f != nil {
			return (*f)()
		}
		return nil
	})
}
