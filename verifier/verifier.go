package verifier

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Problem.Reason codes. They are stable: tools and tests match on them.
const (
	ReasonBadRecord      = "bad_record"       // not a well-formed record (JSON, fields, types, kind, time, floats, canonical form)
	ReasonBadKey         = "bad_key"          // a stored key that is not the 8-byte seq expected there
	ReasonSeqGap         = "seq_gap"          // the expected record is missing: a later one comes first
	ReasonSeqOrder       = "seq_out_of_order" // a record repeats or comes after a later one
	ReasonKeyMismatch    = "key_mismatch"     // a stored key holds a record with another seq (records swapped)
	ReasonPrevMismatch   = "prev_mismatch"    // prev is not the previous record's hash (fork, removal)
	ReasonHashMismatch   = "hash_mismatch"    // the record's content does not give its hash (edited)
	ReasonTimeOrder      = "time_out_of_order"
	ReasonHeadMismatch   = "head_mismatch"   // the stored head is not the last record (tail truncated or extended)
	ReasonAnchorMismatch = "anchor_mismatch" // a record differs from a trusted head for its seq (history rewritten)
	ReasonTruncated      = "truncated"       // the chain ends before a trusted head
)

// Head is a record the chain ends on, or must pass through: its seq, hash
// and time. Anchors given to New are heads known from outside the records.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"` // 64 zero hex digits for an empty chain
	Time string `json:"time"`
}

// Problem names the first record that breaks the chain. Seq is the position
// where the chain first goes wrong: the record that fails a check, or the seq
// that should have come next when a record is missing or out of place.
type Problem struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"` // a Reason* code
	Detail string `json:"detail"`
}

// Report is the result of a check. Head and Records describe the records
// that passed, up to the first problem.
type Report struct {
	OK      bool     `json:"ok"`
	Records uint64   `json:"records"`
	Head    Head     `json:"head"`
	Problem *Problem `json:"problem,omitempty"`
}

// Verifier checks a stream of raw records from a known starting point. It
// trusts nothing but the bytes it is given and the start and anchors it was
// built with: every record is re-parsed and re-hashed. It stops at the first
// problem. The zero value is not usable; call New.
type Verifier struct {
	next uint64   // seq the next record must carry
	prev [32]byte // hash the next record's prev must equal
	// prevText is a start prev that is not 64 lower-case hex digits: no
	// record's prev can equal it.
	prevText string
	prevTime time.Time
	headSeq  uint64
	headTime string
	records  uint64
	anchors  map[uint64]string
	problem  *Problem

	scratch *scratch // for Add's records
}

// New starts a chain check at record startSeq (0 means 1) whose prev must
// be startPrev ("" means 64 zero hex digits, right for record 1). Anchors
// are heads known from outside the records (a signed checkpoint, an
// auditor's note): the record at each anchor's seq must carry its hash, and
// the chain must reach it. Anchors below startSeq are ignored.
func New(startSeq uint64, startPrev string, anchors ...Head) *Verifier {
	startSeq = max(startSeq, 1)
	if startPrev == "" {
		startPrev = zeroHash
	}
	v := &Verifier{
		next:    startSeq,
		headSeq: startSeq - 1,
		anchors: make(map[uint64]string, len(anchors)),
	}
	if p, err := decodeHash(startPrev); err == nil {
		copy(v.prev[:], p)
	} else {
		v.prevText = startPrev
	}
	for _, a := range anchors {
		if a.Seq >= startSeq {
			v.anchors[a.Seq] = a.Hash
		}
	}
	return v
}

// prevHex is the hash the next record's prev must equal, as text.
func (v *Verifier) prevHex() string {
	if v.prevText != "" {
		return v.prevText
	}
	return hex.EncodeToString(v.prev[:])
}

// head is the last record that passed (or the start).
func (v *Verifier) head() Head {
	return Head{Seq: v.headSeq, Hash: v.prevHex(), Time: v.headTime}
}

// Add checks the next record. It reports false once a problem has been found;
// later records are then ignored.
func (v *Verifier) Add(raw []byte) bool {
	if v.problem != nil {
		return false
	}
	c := v.check(raw)
	return v.link(&c, 0, false)
}

// AddKeyed checks the record stored under key, which must be the next seq
// as 8 bytes big-endian, as the ledger's bbolt file keeps them.
func (v *Verifier) AddKeyed(key, raw []byte) bool {
	k, ok := v.checkKey(key)
	if !ok {
		return false
	}
	c := v.check(raw)
	return v.link(&c, k, true)
}

func (v *Verifier) check(raw []byte) checked {
	if v.scratch == nil {
		v.scratch = newScratch()
	}
	return checkRecord(raw, v.scratch)
}

// checkKey is what AddKeyed checks before it looks at the record.
func (v *Verifier) checkKey(key []byte) (uint64, bool) {
	if v.problem != nil {
		return 0, false
	}
	if len(key) != 8 {
		return 0, v.fail(v.next, ReasonBadKey, fmt.Sprintf("key %x is not an 8-byte sequence number", key))
	}
	k := binary.BigEndian.Uint64(key)
	if k > v.next {
		return 0, v.fail(v.next, ReasonSeqGap, fmt.Sprintf("record %d is missing: the next stored key is %d", v.next, k))
	}
	if k < v.next {
		return 0, v.fail(v.next, ReasonBadKey, fmt.Sprintf("unexpected key %d where record %d should be", k, v.next))
	}
	return k, true
}

// link checks a record, checked on its own, against the chain so far: the
// part of the check that has to go in order, and costs a few comparisons.
func (v *Verifier) link(r *checked, key uint64, keyed bool) bool {
	if v.problem != nil {
		return false
	}
	if r.err != nil {
		return v.fail(v.next, ReasonBadRecord, fmt.Sprintf("record %d: %v", v.next, r.err))
	}
	if keyed && r.seq != key {
		return v.fail(key, ReasonKeyMismatch, fmt.Sprintf("key %d holds record %d", key, r.seq))
	}
	if r.seq > v.next {
		return v.fail(v.next, ReasonSeqGap, fmt.Sprintf("record %d is missing: found record %d", v.next, r.seq))
	}
	if r.seq < v.next {
		return v.fail(v.next, ReasonSeqOrder, fmt.Sprintf("expected record %d, found record %d again or out of order", v.next, r.seq))
	}
	if v.prevText != "" || r.prev != v.prev {
		return v.fail(r.seq, ReasonPrevMismatch, fmt.Sprintf("record %d has prev %x but the previous hash is %s", r.seq, r.prev, v.prevHex()))
	}
	if r.computed != r.hash {
		return v.fail(r.seq, ReasonHashMismatch, fmt.Sprintf("record %d says hash %x but its content hashes to %x", r.seq, r.hash, r.computed))
	}
	if r.time.Before(v.prevTime) {
		return v.fail(r.seq, ReasonTimeOrder, fmt.Sprintf("record %d time %s is before the previous record's %s", r.seq, r.timeText, v.headTime))
	}
	if len(v.anchors) > 0 {
		if want, ok := v.anchors[r.seq]; ok && want != hex.EncodeToString(r.hash[:]) {
			v.problem = AnchorMismatch(r.seq, hex.EncodeToString(r.hash[:]), want)
			return false
		}
	}
	v.prev, v.prevText, v.prevTime = r.hash, "", r.time
	v.headSeq, v.headTime = r.seq, r.timeText
	v.records++
	v.next++
	return true
}

// AnchorMismatch is the problem a Verifier reports at record seq, whose
// hash is hash, when an anchor says want: for a caller that holds a chain
// checked without its anchors to them afterwards (an evidence bundle read
// once, whose checkpoint records come after the records they sign).
func AnchorMismatch(seq uint64, hash, want string) *Problem {
	return &Problem{Seq: seq, Reason: ReasonAnchorMismatch, Detail: fmt.Sprintf("record %d has hash %s but the trusted head says %s", seq, hash, want)}
}

func (v *Verifier) fail(seq uint64, reason, detail string) bool {
	v.problem = &Problem{Seq: seq, Reason: reason, Detail: detail}
	return false
}

// StoredHead compares the head a store keeps beside the records (the
// ledger's bucket "meta", key "head": JSON {seq, hash, time}) with the last
// record seen, both read in one transaction. A missing head (nil) is the
// empty chain.
func (v *Verifier) StoredHead(raw []byte) {
	if v.problem != nil {
		return
	}
	h := Head{Hash: zeroHash}
	if raw != nil {
		if err := json.Unmarshal(raw, &h); err != nil {
			v.fail(v.headSeq, ReasonHeadMismatch, fmt.Sprintf("stored head is unreadable: %v", err))
			return
		}
	}
	head := v.head()
	switch {
	case h.Seq > head.Seq:
		v.fail(head.Seq+1, ReasonHeadMismatch, fmt.Sprintf("stored head names record %d but the chain ends at record %d: tail truncated", h.Seq, head.Seq))
	case h.Seq < head.Seq:
		v.fail(h.Seq+1, ReasonHeadMismatch, fmt.Sprintf("the chain runs to record %d past the stored head %d", head.Seq, h.Seq))
	case h != head:
		v.fail(h.Seq, ReasonHeadMismatch, fmt.Sprintf("stored head %+v differs from record %d %+v", h, head.Seq, head))
	}
}

// Next is the seq the next record must carry.
func (v *Verifier) Next() uint64 { return v.next }

// Finish ends the stream and returns the report. The chain must reach every
// anchor; records that merely stop early are otherwise indistinguishable from
// a shorter chain.
func (v *Verifier) Finish() Report {
	if v.problem == nil && len(v.anchors) > 0 {
		last := slices.Max(slices.Collect(maps.Keys(v.anchors)))
		if last >= v.next {
			v.fail(v.next, ReasonTruncated, fmt.Sprintf("the chain ends at record %d but a trusted head names record %d", v.headSeq, last))
		}
	}
	return Report{OK: v.problem == nil, Records: v.records, Head: v.head(), Problem: v.problem}
}

// VerifyRecords checks the records next yields, in order, starting at
// startSeq with prev startPrev (see New): an evidence bundle's
// records.jsonl, an admin API page. It stops at the first problem. The error
// is next's, never a chain problem: those are in the Report. The records are
// checked on every core (see pipeline); next's slices are copied, so next
// may reuse them.
func VerifyRecords(next func() (raw []byte, ok bool, err error), startPrev string, startSeq uint64) (Report, error) {
	v := New(startSeq, startPrev)
	p := newPipeline(v, false)
	var rerr error
	for !p.stopped() {
		raw, ok, err := next()
		if err != nil {
			rerr = err
			break
		}
		if !ok {
			break
		}
		p.add(nil, raw)
	}
	p.finish()
	if rerr != nil && v.problem == nil {
		return v.Finish(), fmt.Errorf("read record %d: %w", v.next, rerr)
	}
	return v.Finish(), nil
}

// Store is a chain kept under keys with its head beside it: the ledger's
// bbolt file, read through ledger.Ledger.Scan.
type Store interface {
	// Scan calls fn with every stored key and record in key order, from
	// the very first key, stopping at fn's first error, which it returns.
	// Once every record has been passed it returns the stored head (nil
	// for none) as read together with the last of them.
	Scan(ctx context.Context, fn func(key, raw []byte) error) (head []byte, err error)
}

// batchStore is a Store that can also hand out the records of one read
// transaction at once, in one buffer (ledger.Ledger.ScanBatches, with
// Scan's promises): Verify then reads without two allocations a record.
type batchStore interface {
	ScanBatches(ctx context.Context, fn func(keys, raws [][]byte) error) (head []byte, err error)
}

// errStop ends a Scan at the first problem; the problem is in the report.
var errStop = errors.New("verifier: stop")

// Verify re-checks the whole stored chain from record 1, then the stored
// head against the last record. Anchors are trusted heads (see New);
// without one, a tail truncated together with a rewritten head cannot be
// told from a shorter chain. The error is the store's or ctx's; chain
// problems are in the Report. Records are checked on every core (see
// pipeline), with the same verdict, problem and wording as one Verifier
// fed them one by one.
func Verify(ctx context.Context, s Store, anchors ...Head) (Report, error) {
	v := New(1, zeroHash, anchors...)
	p := newPipeline(v, true)
	var head []byte
	var err error
	if bs, ok := s.(batchStore); ok {
		head, err = bs.ScanBatches(ctx, func(keys, raws [][]byte) error {
			for i := range raws {
				if p.stopped() {
					return errStop
				}
				p.add(keys[i], raws[i])
			}
			return nil
		})
	} else {
		head, err = s.Scan(ctx, func(key, raw []byte) error {
			if p.stopped() {
				return errStop
			}
			p.add(key, raw) // Scan's slices are copies we may keep
			return nil
		})
	}
	p.finish()
	switch {
	case v.problem != nil:
		// The records before the problem were all read; a read error
		// after it is not what is wrong with the chain.
		return v.Finish(), nil
	case errors.Is(err, errStop):
		return v.Finish(), nil
	case err != nil:
		return Report{}, fmt.Errorf("verify: %w", err)
	}
	v.StoredHead(head)
	return v.Finish(), nil
}
