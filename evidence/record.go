package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// rec is the part of a ledger record (docs/reference.md#records) the
// bundle needs. The chain itself is checked by the verifier on the raw
// bytes; this is only read after that.
type rec struct {
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"`
	Kind       record.Kind     `json:"kind"`
	App        string          `json:"app"`
	Action     string          `json:"action"`
	Decision   record.Decision `json:"decision"`
	Reason     record.Reason   `json:"reason"`
	ApprovalID string          `json:"approval_id"`
	Digest     string          `json:"digest"`
	Policy     string          `json:"policy"`
	Data       json.RawMessage `json:"data"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash"`

	data   any  // the typed data member, parsed on first use
	parsed bool // data has been looked at (it may still be nil)
}

// parseRecord reads a record as json.Unmarshal does; a record whose bytes
// are provably canonical (verifier.Members), as every stored record is, is
// read without the general decoder (FuzzParseRecordFast holds the two to
// the same result).
func parseRecord(raw []byte) (*rec, error) {
	if r, ok := parseCanonical(raw); ok {
		return r, nil
	}
	r := new(rec)
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, err
	}
	return r, nil
}

// recordNames are a record's members in canonical order.
var recordNames = [...]string{"action", "app", "approval_id", "data", "decision", "digest", "hash", "kind", "policy", "prev", "reason", "seq", "time", "v"}

// parseCanonical is json.Unmarshal into a rec for a canonical record with
// exactly the record's members, its strings without escapes and its seq a
// plain integer; false (not sure) for anything else.
func parseCanonical(raw []byte) (*rec, bool) {
	var buf [len(recordNames) + 2]verifier.Member
	ms, ok := verifier.Members(raw, buf[:0])
	if !ok || len(ms) != len(recordNames) {
		return nil, false
	}
	for i, m := range ms {
		if string(m.Name) != recordNames[i] {
			return nil, false
		}
	}
	// One copy of the record, which the strings share.
	all := string(raw)
	str := func(i int, dst *string) bool {
		v := ms[i].Value
		if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
			return false
		}
		*dst = all[ms[i].At+1 : ms[i].At+len(v)-1]
		return true
	}
	r := new(rec)
	var kind, decision, reason string
	if !str(0, &r.Action) || !str(1, &r.App) || !str(2, &r.ApprovalID) || !str(4, &decision) || !str(5, &r.Digest) ||
		!str(6, &r.Hash) || !str(7, &kind) || !str(8, &r.Policy) || !str(9, &r.Prev) || !str(10, &reason) || !str(12, &r.Time) {
		return nil, false
	}
	r.Kind, r.Decision, r.Reason = record.Kind(kind), record.Decision(decision), record.Reason(reason)
	seq := ms[11].Value
	if len(seq) == 0 || len(seq) > 16 {
		return nil, false
	}
	for _, c := range seq {
		if c < '0' || c > '9' {
			return nil, false
		}
		r.Seq = r.Seq*10 + uint64(c-'0')
	}
	r.Data = json.RawMessage(bytes.Clone(ms[3].Value))
	return r, true
}

// newData returns the typed data member that records of this kind and
// decision carry (a pointer to one of the record package's structs), or nil
// for a shape the bundle does not read (notification, outcome).
func newData(kind record.Kind, decision record.Decision) any {
	switch kind {
	case record.KindRequest:
		return new(record.Request)
	case record.KindOverride:
		switch decision {
		case record.Pending:
			return new(record.OverrideRequest)
		case record.Issued:
			return new(record.Token)
		}
		return new(record.Request) // a request the override let through
	case record.KindApproval:
		switch decision {
		case record.Approve, record.Reject:
			return new(record.Signature)
		case record.Refused:
			return new(record.Refusal)
		case record.Expired:
			return new(record.Expiry)
		}
	case record.KindCapability:
		return new(record.Token)
	case record.KindForward:
		return new(record.Forward)
	case record.KindConfig:
		return new(record.Config)
	case record.KindCheckpoint:
		return new(record.Checkpoint)
	case record.KindArchive:
		return new(record.Archive)
	}
	return nil
}

// typedData returns r's data member parsed by its kind and decision, or nil
// when the record has no such shape or its data does not decode into it: a
// member of an unexpected type leaves the whole data unread rather than
// failing, as the chain check has already vouched for the bytes and the
// report must be reproducible from them.
func (r *rec) typedData() any {
	if !r.parsed {
		r.parsed = true
		d := newData(r.Kind, r.Decision)
		if d != nil && json.Unmarshal(r.Data, d) == nil {
			r.data = d
		}
	}
	return r.data
}

// dataOf returns r's data as a *T when r carries that shape, else a zero T,
// so that readers need no nil checks for fields they only show.
func dataOf[T any](r *rec) *T {
	if d, ok := r.typedData().(*T); ok {
		return d
	}
	return new(T)
}

// is reports whether the record has this kind, decision (if not None) and
// (if any given) one of the reasons.
func (r *rec) is(kind record.Kind, decision record.Decision, reasons ...record.Reason) bool {
	if r.Kind != kind || (decision != record.None && r.Decision != decision) {
		return false
	}
	return len(reasons) == 0 || slices.Contains(reasons, r.Reason)
}

// shortTime shows a record time to the second: 2026-11-17 16:00:05Z.
func shortTime(t string) string {
	if len(t) >= 19 && t[10] == 'T' {
		return t[:10] + " " + t[11:19] + "Z"
	}
	return t
}

// Evidence lists bound memory whatever the range: seqs are kept as runs,
// up to maxRuns per item, detail rows up to maxRows per table; counts are
// always complete.
const (
	maxRuns  = 5000
	maxRows  = 1000
	showRows = 200 // rows and runs shown in report.html and control-mapping.md
)

// seqList is a set of seqs seen in increasing order, kept as runs.
type seqList struct {
	runs      [][2]uint64
	count     uint64
	truncated bool
}

func (s *seqList) add(seq uint64) {
	s.count++
	if s.truncated {
		return
	}
	if n := len(s.runs); n > 0 && s.runs[n-1][1]+1 == seq {
		s.runs[n-1][1] = seq
		return
	}
	if len(s.runs) >= maxRuns {
		s.truncated = true
		return
	}
	s.runs = append(s.runs, [2]uint64{seq, seq})
}

// text renders at most limit runs: "3, 7-9, 12".
func (s *seqList) text(limit int) string {
	var b strings.Builder
	for i, r := range s.runs {
		if i == limit {
			fmt.Fprintf(&b, ", … (%d more runs)", len(s.runs)-limit)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatUint(r[0], 10))
		if r[1] != r[0] {
			b.WriteString("-")
			b.WriteString(strconv.FormatUint(r[1], 10))
		}
	}
	if s.truncated {
		b.WriteString(", … (list cut at " + strconv.Itoa(maxRuns) + " runs; the count is complete)")
	}
	return b.String()
}

// linkCheck re-hashes records as Prepare reads them: seq contiguous, prev
// the previous hash, hash = SHA-256(prev || the record without its hash
// member), times never going back. It relies on the stored bytes being the
// canonical JSON the ledger writes (then removing the one top-level "hash"
// member leaves the canonical form of the rest); Verify runs the full,
// format-checking chain verifier (package verifier) on the bundle, at about
// ten times the cost per record. Any change to a record's bytes changes what is hashed,
// so an edit, a removal or a reorder is caught here all the same.
type linkCheck struct {
	next     uint64
	prev     string
	prevTime string
}

var hashMember = []byte(`,"hash":"`)

func (c *linkCheck) add(raw []byte, r *rec) error {
	if err := c.inOrder(r); err != nil {
		return err
	}
	if err := ownHash(raw, r); err != nil {
		return err
	}
	c.advance(r)
	return nil
}

// inOrder is what linkCheck checks against the records before r.
func (c *linkCheck) inOrder(r *rec) error {
	if r.Seq != c.next {
		return fmt.Errorf("record %d: found record %d where %d should be", c.next, r.Seq, c.next)
	}
	if r.Prev != c.prev {
		return fmt.Errorf("record %d: prev %s is not the previous record's hash %s", r.Seq, r.Prev, c.prev)
	}
	if r.Time < c.prevTime || len(r.Time) != len(ledger.TimeLayout)-5 {
		return fmt.Errorf("record %d: time %q is malformed or before the previous record's", r.Seq, r.Time)
	}
	return nil
}

func (c *linkCheck) advance(r *rec) { c.next, c.prev, c.prevTime = r.Seq+1, r.Hash, r.Time }

// ownHash is what linkCheck checks of r alone: its hash is SHA-256 of its
// prev and its bytes without the hash member. It needs no other record, so
// Prepare runs it on every core.
func ownHash(raw []byte, r *rec) error {
	i := bytes.LastIndex(raw, hashMember)
	end := i + len(hashMember) + 64
	if i < 0 || end >= len(raw) || raw[end] != '"' || string(raw[i+len(hashMember):end]) != r.Hash {
		return fmt.Errorf("record %d: no top-level hash member in canonical form", r.Seq)
	}
	var prev [sha256.Size]byte
	if len(r.Prev) != 2*sha256.Size {
		return fmt.Errorf("record %d: prev is not a hex SHA-256", r.Seq)
	}
	if _, err := hex.Decode(prev[:], []byte(r.Prev)); err != nil {
		return fmt.Errorf("record %d: prev is not a hex SHA-256", r.Seq)
	}
	h := sha256.New()
	h.Write(prev[:])
	h.Write(raw[:i])
	h.Write(raw[end+1:])
	var sum [sha256.Size]byte
	if got := hex.EncodeToString(h.Sum(sum[:0])); got != r.Hash {
		return fmt.Errorf("record %d: hash_mismatch: its content hashes to %s, not %s", r.Seq, got, r.Hash)
	}
	return nil
}
