package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Problem.Reason codes. They are stable: tools and tests match on them.
const (
	ReasonBadRecord      = "bad_record"       // not a well-formed §5 record (JSON, fields, types, kind, time, floats, canonical form)
	ReasonBadKey         = "bad_key"          // a bbolt key that is not the 8-byte seq expected there
	ReasonSeqGap         = "seq_gap"          // the expected record is missing: a later one comes first
	ReasonSeqOrder       = "seq_out_of_order" // a record repeats or comes after a later one
	ReasonKeyMismatch    = "key_mismatch"     // a bbolt key holds a record with another seq (records swapped)
	ReasonPrevMismatch   = "prev_mismatch"    // prev is not the previous record's hash (fork, removal)
	ReasonHashMismatch   = "hash_mismatch"    // the record's content does not give its hash (edited)
	ReasonTimeOrder      = "time_out_of_order"
	ReasonHeadMismatch   = "head_mismatch"   // the stored head is not the last record (tail truncated or extended)
	ReasonAnchorMismatch = "anchor_mismatch" // a record differs from a trusted head for its seq (history rewritten)
	ReasonTruncated      = "truncated"       // the chain ends before a trusted head
)

// recordFields is every member a §5 record has, and the only ones it may have.
var recordFields = []string{
	"v", "seq", "time", "kind", "app", "action", "decision", "reason",
	"approval_id", "digest", "policy", "data", "prev", "hash",
}

// Verifier checks a stream of raw records from a known starting point. It
// trusts nothing but the bytes it is given and the start and anchors it was
// built with: every record is re-parsed and re-hashed. It stops at the first
// problem. The zero value is not usable; call NewVerifier.
type Verifier struct {
	next     uint64 // seq the next record must carry
	prev     string // hash the next record's prev must equal
	prevTime time.Time
	head     Head
	records  uint64
	anchors  map[uint64]string
	problem  *Problem
}

// NewVerifier starts a chain check at record startSeq (0 means 1) whose prev
// must be startPrev ("" means ZeroHash, right for record 1). Anchors are
// heads known from outside the records (a signed checkpoint, an auditor's
// note): the record at each anchor's seq must carry its hash, and the chain
// must reach it. Anchors below startSeq are ignored.
func NewVerifier(startSeq uint64, startPrev string, anchors ...Head) *Verifier {
	startSeq = max(startSeq, 1)
	if startPrev == "" {
		startPrev = ZeroHash
	}
	v := &Verifier{
		next:    startSeq,
		prev:    startPrev,
		head:    Head{Seq: startSeq - 1, Hash: startPrev},
		anchors: make(map[uint64]string, len(anchors)),
	}
	for _, a := range anchors {
		if a.Seq >= startSeq {
			v.anchors[a.Seq] = a.Hash
		}
	}
	return v
}

// Add checks the next record. It reports false once a problem has been found;
// later records are then ignored.
func (v *Verifier) Add(raw []byte) bool { return v.add(raw, 0, false) }

// addKeyed checks the record stored under a bbolt key, which must be the
// next seq as well.
func (v *Verifier) addKeyed(key, raw []byte) bool {
	if v.problem != nil {
		return false
	}
	if len(key) != 8 {
		return v.fail(v.next, ReasonBadKey, fmt.Sprintf("key %x is not an 8-byte sequence number", key))
	}
	k := binary.BigEndian.Uint64(key)
	if k > v.next {
		return v.fail(v.next, ReasonSeqGap, fmt.Sprintf("record %d is missing: the next stored key is %d", v.next, k))
	}
	if k < v.next {
		return v.fail(v.next, ReasonBadKey, fmt.Sprintf("unexpected key %d where record %d should be", k, v.next))
	}
	return v.add(raw, k, true)
}

func (v *Verifier) add(raw []byte, key uint64, keyed bool) bool {
	if v.problem != nil {
		return false
	}
	r, err := parseRecord(raw)
	if err != nil {
		return v.fail(v.next, ReasonBadRecord, fmt.Sprintf("record %d: %v", v.next, err))
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
	if r.prev != v.prev {
		return v.fail(r.seq, ReasonPrevMismatch, fmt.Sprintf("record %d has prev %s but the previous hash is %s", r.seq, r.prev, v.prev))
	}
	hash, err := ComputeHash(r.prev, r.body)
	if err != nil {
		return v.fail(r.seq, ReasonBadRecord, fmt.Sprintf("record %d: %v", r.seq, err))
	}
	if hash != r.hash {
		return v.fail(r.seq, ReasonHashMismatch, fmt.Sprintf("record %d says hash %s but its content hashes to %s", r.seq, r.hash, hash))
	}
	if r.time.Before(v.prevTime) {
		return v.fail(r.seq, ReasonTimeOrder, fmt.Sprintf("record %d time %s is before the previous record's %s", r.seq, r.timeText, v.head.Time))
	}
	if want, ok := v.anchors[r.seq]; ok && want != r.hash {
		return v.fail(r.seq, ReasonAnchorMismatch, fmt.Sprintf("record %d has hash %s but the trusted head says %s", r.seq, r.hash, want))
	}
	v.prev, v.prevTime = r.hash, r.time
	v.head = Head{Seq: r.seq, Hash: r.hash, Time: r.timeText}
	v.records++
	v.next++
	return true
}

func (v *Verifier) fail(seq uint64, reason, detail string) bool {
	v.problem = &Problem{Seq: seq, Reason: reason, Detail: detail}
	return false
}

// checkStoredHead compares the head the writer stored with the last record
// seen, both read in one transaction. A missing head is the empty chain.
func (v *Verifier) checkStoredHead(raw []byte) {
	if v.problem != nil {
		return
	}
	h := Head{Hash: ZeroHash}
	if raw != nil {
		if err := json.Unmarshal(raw, &h); err != nil {
			v.fail(v.head.Seq, ReasonHeadMismatch, fmt.Sprintf("stored head is unreadable: %v", err))
			return
		}
	}
	switch {
	case h.Seq > v.head.Seq:
		v.fail(v.head.Seq+1, ReasonHeadMismatch, fmt.Sprintf("stored head names record %d but the chain ends at record %d: tail truncated", h.Seq, v.head.Seq))
	case h.Seq < v.head.Seq:
		v.fail(h.Seq+1, ReasonHeadMismatch, fmt.Sprintf("the chain runs to record %d past the stored head %d", v.head.Seq, h.Seq))
	case h != v.head:
		v.fail(h.Seq, ReasonHeadMismatch, fmt.Sprintf("stored head %+v differs from record %d %+v", h, v.head.Seq, v.head))
	}
}

// Finish ends the stream and returns the report. The chain must reach every
// anchor; records that merely stop early are otherwise indistinguishable from
// a shorter chain.
func (v *Verifier) Finish() Report {
	if v.problem == nil && len(v.anchors) > 0 {
		last := slices.Max(slices.Collect(maps.Keys(v.anchors)))
		if last >= v.next {
			v.fail(v.next, ReasonTruncated, fmt.Sprintf("the chain ends at record %d but a trusted head names record %d", v.head.Seq, last))
		}
	}
	return Report{OK: v.problem == nil, Records: v.records, Head: v.head, Problem: v.problem}
}

// VerifyRecords checks the records next yields, in order, starting at
// startSeq with prev startPrev (see NewVerifier): an evidence bundle's
// records.jsonl, an admin API page. It stops at the first problem. The error
// is next's, never a chain problem: those are in the Report.
func VerifyRecords(next func() (raw []byte, ok bool, err error), startPrev string, startSeq uint64) (Report, error) {
	v := NewVerifier(startSeq, startPrev)
	for {
		raw, ok, err := next()
		if err != nil {
			return v.Finish(), fmt.Errorf("read record %d: %w", v.next, err)
		}
		if !ok || !v.Add(raw) {
			return v.Finish(), nil
		}
	}
}

// Verify re-checks the whole stored chain from record 1, in bounded read
// transactions so that it can run beside a live writer, and then the stored
// head against the last record. Anchors are trusted heads (see NewVerifier);
// without one, a tail truncated together with a rewritten head cannot be told
// from a shorter chain. The error is for I/O or ctx; chain problems are in
// the Report.
func (l *Ledger) Verify(ctx context.Context, anchors ...Head) (Report, error) {
	v := NewVerifier(1, ZeroHash, anchors...)
	var start []byte // nil: from the very first key, so stray keys below 1 are seen
	for {
		if err := ctx.Err(); err != nil {
			return Report{}, err
		}
		items, atEnd, meta, err := l.readChunk(start, math.MaxUint64)
		if err != nil {
			return Report{}, fmt.Errorf("verify: %w", err)
		}
		for _, it := range items {
			if !v.addKeyed(it.key, it.raw) {
				return v.Finish(), nil
			}
		}
		if atEnd {
			v.checkStoredHead(meta)
			return v.Finish(), nil
		}
		if len(items) == 0 {
			return Report{}, errors.New("verify: read made no progress")
		}
		start = seqKey(v.next)
	}
}

// parsed is a record that passed every check that needs no other record.
type parsed struct {
	seq      uint64
	time     time.Time
	timeText string
	prev     string
	hash     string
	body     []byte // canonical JSON without hash
}

// parseRecord checks one record on its own. Stored and exported records are
// canonical JSON, so anything else (even an equivalent spelling) is refused:
// the bytes are the evidence.
func parseRecord(raw []byte) (parsed, error) {
	var r parsed
	canon, err := jcs.Transform(raw)
	if err != nil {
		return r, fmt.Errorf("not valid JSON: %v", err)
	}
	if !bytes.Equal(canon, raw) {
		return r, errors.New("not in RFC 8785 canonical form")
	}
	fields, err := parseObject(raw)
	if err != nil {
		return r, err
	}
	for _, name := range recordFields {
		if _, ok := fields[name]; !ok {
			return r, fmt.Errorf("missing field %q", name)
		}
	}
	if len(fields) != len(recordFields) {
		var extra []string
		for name := range fields {
			if !slices.Contains(recordFields, name) {
				extra = append(extra, name)
			}
		}
		slices.Sort(extra)
		return r, fmt.Errorf("unknown field %q", extra[0])
	}
	if string(fields["v"]) != "1" {
		return r, fmt.Errorf("v is %s, want 1", fields["v"])
	}
	if r.seq, err = parseSeq(fields["seq"]); err != nil {
		return r, err
	}
	strs := map[string]string{}
	for _, name := range recordFields {
		if name == "v" || name == "seq" || name == "data" {
			continue
		}
		s, err := parseString(fields[name])
		if err != nil {
			return r, fmt.Errorf("field %q: %v", name, err)
		}
		strs[name] = s
	}
	if !record.Kind(strs["kind"]).Known() {
		return r, fmt.Errorf("unknown kind %q", strs["kind"])
	}
	if r.time, err = parseTime(strs["time"]); err != nil {
		return r, fmt.Errorf("field \"time\": %v", err)
	}
	r.timeText, r.prev, r.hash = strs["time"], strs["prev"], strs["hash"]
	if _, err := decodeHash(r.prev); err != nil {
		return r, fmt.Errorf("field \"prev\": %v", err)
	}
	if _, err := decodeHash(r.hash); err != nil {
		return r, fmt.Errorf("field \"hash\": %v", err)
	}
	if err := checkData(fields["data"]); err != nil {
		return r, fmt.Errorf("field \"data\": %v", err)
	}
	if r.body, err = canonicalWithout(fields, "hash"); err != nil {
		return r, err
	}
	return r, nil
}

func parseSeq(raw json.RawMessage) (uint64, error) {
	s := string(raw)
	if !intPattern.MatchString(s) {
		return 0, fmt.Errorf("seq %s is not an integer", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 1 || n > MaxInt {
		return 0, fmt.Errorf("seq %s out of range", s)
	}
	return n, nil
}

func parseString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// checkData requires an object whose numbers are all integers within
// ±(2^53-1): §5 forbids floats, and bigger integers do not survive JCS.
func checkData(raw json.RawMessage) error {
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not an object")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		n, ok := tok.(json.Number)
		if !ok {
			continue
		}
		if err := checkNumber("data", n); err != nil {
			return err
		}
	}
}
