package verifier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// The record format, as docs/reference.md#records gives it. These are the
// verifier's own: it shares no code with the writer, so a mistake in one is
// caught by the other.
const (
	zeroHash   = "0000000000000000000000000000000000000000000000000000000000000000"
	timeLayout = "2006-01-02T15:04:05.000000000Z07:00" // UTC, nine fractional digits
	maxInt     = 1<<53 - 1                             // the largest integer JCS carries exactly
)

// recordFields is every member a record has, and the only ones it may have.
var recordFields = []string{
	"v", "seq", "time", "kind", "app", "action", "decision", "reason",
	"approval_id", "digest", "policy", "data", "prev", "hash",
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

var intPattern = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

func parseSeq(raw json.RawMessage) (uint64, error) {
	s := string(raw)
	if !intPattern.MatchString(s) {
		return 0, fmt.Errorf("seq %s is not an integer", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 1 || n > maxInt {
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
// ±(2^53-1): records carry no floats, and bigger integers do not survive
// JCS.
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
		if err := checkNumber(n); err != nil {
			return err
		}
	}
}

func checkNumber(n json.Number) error {
	s := string(n)
	if !intPattern.MatchString(s) {
		return fmt.Errorf("%q is not an integer (floats are not allowed)", s)
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil || i > maxInt || i < -maxInt {
		return fmt.Errorf("integer %s outside ±(2^53-1)", s)
	}
	return nil
}

// parseTime accepts only UTC with exactly nine fractional digits, so that
// one instant has one spelling.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, err
	}
	if t.UTC().Format(timeLayout) != s {
		return time.Time{}, fmt.Errorf("%q is not UTC with 9 fractional digits", s)
	}
	return t, nil
}

// ComputeHash returns a record's hash: hex SHA-256 of the 32 bytes of prev
// (hex-decoded; 32 zero bytes for record 1) followed by the canonical JSON
// of the record without its hash member (docs/reference.md#records).
func ComputeHash(prev string, canonicalWithoutHash []byte) (string, error) {
	p, err := decodeHash(prev)
	if err != nil {
		return "", fmt.Errorf("prev: %w", err)
	}
	h := sha256.New()
	h.Write(p)
	h.Write(canonicalWithoutHash)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// decodeHash accepts only the form records carry: 64 lower-case hex digits.
// Upper case would hash the same bytes but compare unequal as a string,
// which would let two spellings of one chain exist.
func decodeHash(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("not lower-case hex at offset %d", i)
		}
	}
	return hex.DecodeString(s)
}

// CanonicalWithoutHash returns the RFC 8785 canonical JSON of the record raw
// with its top-level "hash" member removed: the bytes a record's hash covers
// after prev. raw must be a JSON object; duplicate keys and invalid UTF-8
// are refused.
func CanonicalWithoutHash(raw []byte) ([]byte, error) {
	// jcs first: encoding/json would quietly keep the last of two
	// duplicate keys, and a verifier must not see a different record than
	// another program would.
	if _, err := jcs.Transform(raw); err != nil {
		return nil, fmt.Errorf("not canonicalizable JSON: %w", err)
	}
	fields, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	return canonicalWithout(fields, "hash")
}

func parseObject(raw []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if fields == nil {
		return nil, errors.New("not a JSON object: null")
	}
	return fields, nil
}

// canonicalWithout is the JCS form of fields less key. encoding/json output
// differs from JCS (HTML escaping, number forms, key order), so it is always
// re-run through jcs.Transform.
func canonicalWithout(fields map[string]json.RawMessage, key string) ([]byte, error) {
	rest := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if k != key {
			rest[k] = v
		}
	}
	b, err := json.Marshal(rest)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// checked is one record as the chain check needs it, from either path:
// what parseRecord gives, with the hashes decoded and the record's own
// hash re-computed from its prev and content. err is parseRecord's.
type checked struct {
	err      error
	seq      uint64
	time     time.Time
	timeText string
	prev     [32]byte
	hash     [32]byte // as the record says
	computed [32]byte // as its content gives it
}

// sortedFields is recordFields in the order canonical JSON has them.
var sortedFields = func() []string {
	s := slices.Clone(recordFields)
	slices.Sort(s)
	return s
}()

// Where each member is in sortedFields.
const (
	fAction = iota
	fApp
	fApprovalID
	fData
	fDecision
	fDigest
	fHash
	fKind
	fPolicy
	fPrev
	fReason
	fSeq
	fTime
	fV
)

// plainFields are the members parseRecord only needs to be strings.
var plainFields = [...]int{fAction, fApp, fApprovalID, fDecision, fDigest, fPolicy, fReason}

// scratch is what checking a record reuses from one record to the next;
// one per goroutine.
type scratch struct {
	h   hash.Hash
	pre []byte // prev, copied: what is given to h escapes
	sum []byte
	ms  []member
}

func newScratch() *scratch {
	return &scratch{h: sha256.New(), pre: make([]byte, sha256.Size), sum: make([]byte, 0, sha256.Size), ms: make([]member, 0, len(recordFields))}
}

// hash sets dst to SHA-256(prev || a || b).
func (s *scratch) hash(dst *[32]byte, prev *[32]byte, a, b []byte) {
	copy(s.pre, prev[:])
	s.h.Reset()
	s.h.Write(s.pre)
	s.h.Write(a)
	s.h.Write(b)
	s.sum = s.h.Sum(s.sum[:0])
	copy(dst[:], s.sum)
}

// checkRecord checks raw on its own: by the fast path when it can prove
// raw canonical, else by parseRecord and jcs.
func checkRecord(raw []byte, s *scratch) checked {
	if c, ok := fastRecord(raw, s); ok {
		return c
	}
	return slowRecord(raw, s)
}

func slowRecord(raw []byte, s *scratch) checked {
	r, err := parseRecord(raw)
	if err != nil {
		return checked{err: err}
	}
	c := checked{seq: r.seq, time: r.time, timeText: r.timeText}
	// parseRecord has checked both are 64 lower-case hex digits.
	hex.Decode(c.prev[:], []byte(r.prev))
	hex.Decode(c.hash[:], []byte(r.hash))
	s.hash(&c.computed, &c.prev, r.body, nil)
	return c
}

// fastRecord is parseRecord for a record the scanner proves canonical,
// with every field exactly as parseRecord wants it. ok false: not sure, ask
// parseRecord (it alone words the refusals).
func fastRecord(raw []byte, s *scratch) (c checked, ok bool) {
	ms, ok := canonicalObject(raw, s.ms[:0])
	if !ok || len(ms) != len(sortedFields) {
		return c, false
	}
	for i, m := range ms {
		if string(raw[m.nameAt:m.nameEnd]) != sortedFields[i] {
			return c, false
		}
	}
	val := func(f int) []byte { return raw[ms[f].valueAt:ms[f].valueEnd] }
	// The strings parseRecord only needs to be strings.
	for _, f := range plainFields {
		if val(f)[0] != '"' {
			return c, false
		}
	}
	if v := val(fV); len(v) != 1 || v[0] != '1' {
		return c, false
	}
	if val(fData)[0] != '{' {
		return c, false // the scanner only let integers within ±(2^53-1) through
	}
	seq := val(fSeq)
	if seq[0] < '1' || seq[0] > '9' {
		return c, false
	}
	for _, d := range seq {
		c.seq = c.seq*10 + uint64(d-'0') // at most 16 digits and 2^53-1: no overflow
	}
	kind, ok := plainString(val(fKind))
	if !ok || !record.Kind(kind).Known() {
		return c, false
	}
	tt, ok := plainString(val(fTime))
	if !ok {
		return c, false
	}
	if c.time, ok = fastTime(tt); !ok {
		return c, false
	}
	if !hexHash(c.prev[:], val(fPrev)) || !hexHash(c.hash[:], val(fHash)) {
		return c, false
	}
	c.timeText = string(tt)
	// The hash member is never the first: cut it with its leading comma.
	cut, end := ms[fHash].nameAt-2, ms[fHash].valueEnd
	s.hash(&c.computed, &c.prev, raw[:cut], raw[end:])
	return c, true
}

// plainString is the content of a JSON string value without escapes.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	s := v[1 : len(v)-1]
	for _, c := range s {
		if c == '\\' {
			return nil, false
		}
	}
	return s, true
}

// hexHash decodes a JSON string of 64 lower-case hex digits into dst.
func hexHash(dst, v []byte) bool {
	if len(v) != 66 || v[0] != '"' || len(dst) != 32 {
		return false
	}
	v = v[1:65]
	bad := byte(0)
	for i := range dst {
		hi, lo := lowerHex[v[2*i]], lowerHex[v[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0x80 == 0
}

// lowerHex maps a lower-case hex digit to its value and every other byte
// to 0x80.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0x80
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	return t
}()

// fastTime is parseTime for the one spelling it accepts,
// 2006-01-02T15:04:05.000000000Z, without the layout machinery: every
// field in range (a day that exists in its month), else not sure.
func fastTime(s []byte) (time.Time, bool) {
	if len(s) != 30 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[29] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range s[from:to] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 7)
	d, ok3 := num(8, 10)
	hh, ok4 := num(11, 13)
	mi, ok5 := num(14, 16)
	ss, ok6 := num(17, 19)
	ns, ok7 := num(20, 29)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 || mo < 1 || mo > 12 || d < 1 || hh > 23 || mi > 59 || ss > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, hh, mi, ss, ns, time.UTC)
	if t.Day() != d || t.Month() != time.Month(mo) || t.Year() != y {
		return time.Time{}, false // 31 April, 29 February of a common year
	}
	return t, true
}
