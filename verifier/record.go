package verifier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
