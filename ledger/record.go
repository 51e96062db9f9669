package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ZeroHash is the prev of record 1 and the hash of an empty chain.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimeLayout is the only time format a record may carry: RFC 3339 in UTC with
// exactly nine fractional digits, so that times sort as strings and every
// program renders the same instant with the same bytes.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// MaxInt is the largest integer magnitude a record may carry. JCS (RFC 8785)
// reads numbers as IEEE 754 doubles, so a larger integer would be silently
// rounded and the hash would cover a different value than the one written.
const MaxInt = 1<<53 - 1

// maxDepth bounds nesting in Entry.Data; ledger data is flat in practice and a
// bound keeps a hostile body from costing the writer goroutine.
const maxDepth = 32

// recordParts is a record's stored form less what only the writer knows
// (seq, time, prev, hash), made on the caller's goroutine so that the
// writer, which holds the one write transaction every request waits on, only
// splices. A record's members are fixed, and so is their JCS order:
//
//	action app approval_id data decision digest hash kind policy prev reason seq time v
//
// buf holds everything from "{" up to the digits of seq, with the place of
// "hash" (absent from the hashed form) and of prev's digits marked.
type recordParts struct {
	buf    []byte // {"action":…,"digest":…, | "kind":…,"policy":…,"prev":" | ","reason":…,"seq":
	hashAt int    // offset where `"hash":"…",` goes in the stored form
	prevAt int    // offset where prev's 64 hex digits go
	own    *[]byte
}

// partsPool recycles parts buffers: the writer releases an entry's parts
// once that entry has its outcome, when nothing can encode it again (a
// batch re-encoded after a failing hook holds only unanswered entries).
// Stored records never point into parts: encoding copies them out.
var partsPool sync.Pool // of *[]byte

// maxPooledParts keeps one huge entry from pinning a huge buffer.
const maxPooledParts = 16 << 10

// release gives p's buffer back to partsPool; p must not be encoded again
// (its buf is nil, so encoding it fails, never writing another
// entry's bytes).
func (p *recordParts) release() {
	own := p.own
	if own == nil {
		return
	}
	if cap(p.buf) <= maxPooledParts {
		*own = p.buf[:0]
		partsPool.Put(own)
	}
	*p = recordParts{}
}

// encodeParts validates e.Data and encodes the entry's own fields, so a bad
// entry never reaches the writer. Run checkEntry first: it reports bad
// fixed fields with their names.
func encodeParts(e *Entry) (recordParts, error) {
	var p recordParts
	// Room for the members and a typical data member, so that the common
	// record is built without growing.
	n := 160 + len(e.Action) + len(e.App) + len(e.ApprovalID) + len(e.Decision) +
		len(e.Digest) + len(e.Kind) + len(e.Policy) + len(e.Reason) + 64*len(e.Data)
	own, _ := partsPool.Get().(*[]byte)
	if own == nil {
		own = new([]byte)
	}
	b := *own
	if cap(b) < n {
		b = make([]byte, 0, n)
	}
	b = b[:0]
	p.own = own
	var err error
	field := func(name, v string) {
		if err != nil {
			return
		}
		b = append(b, name...)
		var ok bool
		if b, ok = appendString(b, v); !ok {
			err = fmt.Errorf("%w: %s: not valid UTF-8", ErrInvalidEntry, strings.Trim(name, `{,":`))
		}
	}
	field(`{"action":`, e.Action)
	field(`,"app":`, e.App)
	field(`,"approval_id":`, e.ApprovalID)
	if err != nil {
		return p, err
	}
	b = append(b, `,"data":`...)
	if e.Data == nil {
		b = append(b, "{}"...)
	} else if b, err = appendCanonical(b, "data", e.Data); err != nil {
		return p, err
	}
	field(`,"decision":`, string(e.Decision))
	field(`,"digest":`, e.Digest)
	b = append(b, ',')
	p.hashAt = len(b)
	field(`"kind":`, string(e.Kind))
	field(`,"policy":`, e.Policy)
	b = append(b, `,"prev":"`...)
	p.prevAt = len(b)
	b = append(b, '"')
	field(`,"reason":`, string(e.Reason))
	b = append(b, `,"seq":`...)
	if err != nil {
		return p, err
	}
	p.buf = b
	return p, nil
}

// recordEncoder is the writer's: it writes each record of a batch once,
// straight into its stored form in one buffer shared by the batch (slab),
// and hashes it in place, around the hash member, with one SHA-256 state.
// A record's bytes then are copied once on the writer, from its parts; the
// slab is handed on with the records (bbolt keeps them until its commit,
// the journal's unapplied list until they are applied) and never reused.
type recordEncoder struct {
	h    hash.Hash
	sum  []byte // h's output, reused: the last record's hash
	last string // that hash in hex ("" once sum is not it)
	prev [sha256.Size]byte
	slab []byte
}

// storedMax is the most room record p can need beyond len(p.buf): the hash
// member, prev's digits, seq, time (formatTime's 30 characters, plus room)
// and v.
const storedMax = hashMember + 64 + 20 + len(`,"time":""`) + len(TimeLayout) + len(`,"v":`) + 20 + 1

const hashMember = len(`"hash":"",`) + 2*sha256.Size

// begin starts a slab for batch: every record of it fits without growing.
func (w *recordEncoder) begin(batch []*pending) {
	n := 0
	for _, p := range batch {
		n += len(p.parts.buf) + storedMax
	}
	w.slab = make([]byte, 0, n)
}

// encode fills rec.Hash and returns the stored bytes of rec: the canonical
// form of the whole record, hash included, so that re-canonicalizing a
// stored record is the identity (TestWriterEncoderMatchesOld holds them to
// the former encoder's bytes).
func (w *recordEncoder) encode(rec *Record, p *recordParts) ([]byte, error) {
	if rec.Seq > MaxInt {
		// JCS would round it: the hash would cover another seq.
		return nil, fmt.Errorf("record %d: seq above 2^53-1", rec.Seq)
	}
	if len(p.buf) == 0 {
		// Released (or never made): there is nothing to write.
		return nil, fmt.Errorf("record %d: its entry's encoding was released", rec.Seq)
	}
	// SHA-256 input: prev's 32 bytes, then the record without hash. Within
	// a batch prev is the hash just made: its bytes are at hand.
	if rec.Prev != w.last || w.last == "" {
		if _, err := appendHashBytes(w.prev[:0], rec.Prev); err != nil {
			return nil, fmt.Errorf("hash record %d: prev: %w", rec.Seq, err)
		}
	} else {
		copy(w.prev[:], w.sum)
	}
	w.last = ""
	start := len(w.slab)
	b := w.slab
	b = append(b, p.buf[:p.hashAt]...)
	at := len(b) + len(`"hash":"`)
	b = append(b, `"hash":"`...)
	b = append(b, zeroHex[:]...) // the digits go here once the rest is hashed
	b = append(b, `",`...)
	rest := len(b)
	b = append(b, p.buf[p.hashAt:p.prevAt]...)
	b = append(b, rec.Prev...) // lower-case hex, checked above
	b = append(b, p.buf[p.prevAt:]...)
	b = strconv.AppendUint(b, rec.Seq, 10)
	b = append(b, `,"time":`...)
	var ok bool
	if b, ok = appendString(b, rec.Time); !ok {
		w.slab = b[:start]
		return nil, fmt.Errorf("record %d: time is not valid UTF-8", rec.Seq)
	}
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, int64(rec.V), 10)
	b = append(b, '}')
	w.slab = b
	if w.h == nil {
		w.h = sha256.New()
	}
	w.h.Reset()
	w.h.Write(w.prev[:])
	w.h.Write(b[start : at-len(`"hash":"`)])
	w.h.Write(b[rest:])
	w.sum = w.h.Sum(w.sum[:0])
	hex.Encode(b[at:at+2*sha256.Size], w.sum)
	rec.Hash = string(b[at : at+2*sha256.Size])
	w.last = rec.Hash
	// Full slice expression: a record never grows into its neighbour.
	return b[start:len(b):len(b)], nil
}

var zeroHex = [2 * sha256.Size]byte{}

// decodeHash accepts only the form the ledger writes: 64 lower-case hex
// digits. Upper case would hash the same bytes but compare unequal as a
// string, which would let two spellings of one chain exist.
func decodeHash(s string) ([]byte, error) {
	return appendHashBytes(nil, s)
}

// appendHashBytes appends the 32 bytes of hex hash s, which must have the
// form decodeHash accepts.
func appendHashBytes(dst []byte, s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("not lower-case hex at offset %d", i)
		}
	}
	for i := 0; i < len(s); i += 2 {
		dst = append(dst, unhex(s[i])<<4|unhex(s[i+1]))
	}
	return dst, nil
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

func checkString(path, s string) error {
	// encoding/json would replace invalid UTF-8 with U+FFFD, so the record
	// would silently say something other than what the caller asked for.
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s: not valid UTF-8", ErrInvalidEntry, path)
	}
	return nil
}

// checkEntry validates the fixed fields; Data is checked by encodeParts.
func checkEntry(e *Entry) error {
	if !e.Kind.Known() {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidEntry, e.Kind)
	}
	for _, f := range []struct{ name, v string }{
		{"app", e.App}, {"action", e.Action}, {"decision", string(e.Decision)},
		{"reason", string(e.Reason)}, {"approval_id", e.ApprovalID},
		{"digest", e.Digest}, {"policy", e.Policy},
	} {
		if err := checkString(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

// formatTime is t.UTC().Format(TimeLayout), written directly for the
// years 0 to 9999 (the writer formats every record's time).
func formatTime(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(TimeLayout)
	}
	hour, minute, sec := t.Clock()
	var b [len("2006-01-02T15:04:05.000000000Z")]byte
	digits(b[0:4], year)
	b[4] = '-'
	digits(b[5:7], int(month))
	b[7] = '-'
	digits(b[8:10], day)
	b[10] = 'T'
	digits(b[11:13], hour)
	b[13] = ':'
	digits(b[14:16], minute)
	b[16] = ':'
	digits(b[17:19], sec)
	b[19] = '.'
	digits(b[20:29], t.Nanosecond())
	b[29] = 'Z'
	return string(b[:])
}

// digits writes n, which is not negative, zero-padded into all of b.
func digits(b []byte, n int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
}

// parseTime accepts only what formatTime produces.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}, err
	}
	if formatTime(t) != s {
		return time.Time{}, fmt.Errorf("%q is not UTC with 9 fractional digits", s)
	}
	return t, nil
}
