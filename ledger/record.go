package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
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

var kinds = map[string]bool{
	KindRequest: true, KindApproval: true, KindCapability: true, KindOverride: true,
	KindForward: true, KindCheckpoint: true, KindArchive: true, KindConfig: true,
}

// KnownKind reports whether kind is one of the Kind* constants.
func KnownKind(kind string) bool { return kinds[kind] }

// wireRecord is Record with data already canonical. Hash is omitempty so the
// same type gives both the hashed form (no hash) and the stored form.
type wireRecord struct {
	V          int             `json:"v"`
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"`
	Kind       string          `json:"kind"`
	App        string          `json:"app"`
	Action     string          `json:"action"`
	Decision   string          `json:"decision"`
	Reason     string          `json:"reason"`
	ApprovalID string          `json:"approval_id"`
	Digest     string          `json:"digest"`
	Policy     string          `json:"policy"`
	Data       json.RawMessage `json:"data"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash,omitempty"`
}

// canonical returns the RFC 8785 form of v. encoding/json output differs from
// JCS (HTML escaping, number forms, key order), so it is always re-run
// through jcs.Transform.
func canonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// encodeRecord fills rec.Hash and returns the stored bytes: the canonical
// form of the whole record, hash included, so that re-canonicalizing a stored
// record is the identity.
func encodeRecord(rec *Record, data []byte) ([]byte, error) {
	w := wireRecord{
		V: rec.V, Seq: rec.Seq, Time: rec.Time, Kind: rec.Kind, App: rec.App,
		Action: rec.Action, Decision: rec.Decision, Reason: rec.Reason,
		ApprovalID: rec.ApprovalID, Digest: rec.Digest, Policy: rec.Policy,
		Data: data, Prev: rec.Prev,
	}
	body, err := canonical(w)
	if err != nil {
		return nil, fmt.Errorf("canonicalize record %d: %w", rec.Seq, err)
	}
	if w.Hash, err = ComputeHash(rec.Prev, body); err != nil {
		return nil, fmt.Errorf("hash record %d: %w", rec.Seq, err)
	}
	full, err := canonical(w)
	if err != nil {
		return nil, fmt.Errorf("canonicalize record %d: %w", rec.Seq, err)
	}
	rec.Hash = w.Hash
	return full, nil
}

// ComputeHash returns the record hash of CONTRACT §5: hex SHA-256 of the 32
// bytes of prev (hex-decoded; ZeroHash for record 1) followed by the
// canonical JSON of the record without its hash field.
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

// decodeHash accepts only the form the ledger writes: 64 lower-case hex
// digits. Upper case would hash the same bytes but compare unequal as a
// string, which would let two spellings of one chain exist.
func decodeHash(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("not lower-case hex at offset %d", i)
		}
	}
	return hex.DecodeString(s)
}

// CanonicalWithoutHash returns the RFC 8785 canonical JSON of the record raw
// with its top-level "hash" member removed: the bytes §5 hashes after prev.
// raw must be a JSON object; duplicate keys and invalid UTF-8 are refused.
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

func canonicalWithout(fields map[string]json.RawMessage, key string) ([]byte, error) {
	rest := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if k != key {
			rest[k] = v
		}
	}
	return canonical(rest)
}

// encodeData validates data and returns its canonical JSON. It runs on the
// caller's goroutine before queuing, so a bad entry never reaches the writer
// and the caller may reuse its map as soon as Append or AppendAsync returns.
func encodeData(data map[string]any) ([]byte, error) {
	if data == nil {
		return []byte("{}"), nil
	}
	if err := checkValue("data", data, 0); err != nil {
		return nil, err
	}
	b, err := canonical(data)
	if err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrInvalidEntry, err)
	}
	return b, nil
}

// checkValue allows exactly the types whose JSON form is exact and stable.
func checkValue(path string, v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: %s: nested deeper than %d", ErrInvalidEntry, path, maxDepth)
	}
	switch x := v.(type) {
	case nil, bool:
		return nil
	case string:
		return checkString(path, x)
	case float32, float64:
		return fmt.Errorf("%w: %s (use a decimal string)", ErrFloat, path)
	case int:
		return checkInt(path, int64(x))
	case int8, int16, int32, uint8, uint16, uint32:
		return nil
	case int64:
		return checkInt(path, x)
	case uint:
		return checkUint(path, uint64(x))
	case uint64:
		return checkUint(path, x)
	case json.Number:
		return checkNumber(path, x)
	case []string:
		for i, s := range x {
			if err := checkString(fmt.Sprintf("%s[%d]", path, i), s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		for i, e := range x {
			if err := checkValue(fmt.Sprintf("%s[%d]", path, i), e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for k, e := range x {
			p := path + "." + k
			if !utf8.ValidString(k) {
				return fmt.Errorf("%w: %s: key is not valid UTF-8", ErrInvalidEntry, path)
			}
			if err := checkValue(p, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: %s: unsupported type %T", ErrInvalidEntry, path, v)
	}
}

func checkString(path, s string) error {
	// encoding/json would replace invalid UTF-8 with U+FFFD, so the record
	// would silently say something other than what the caller asked for.
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s: not valid UTF-8", ErrInvalidEntry, path)
	}
	return nil
}

func checkInt(path string, n int64) error {
	if n > MaxInt || n < -MaxInt {
		return fmt.Errorf("%w: %s: integer %d outside ±(2^53-1) (use a decimal string)", ErrInvalidEntry, path, n)
	}
	return nil
}

func checkUint(path string, n uint64) error {
	if n > MaxInt {
		return fmt.Errorf("%w: %s: integer %d above 2^53-1 (use a decimal string)", ErrInvalidEntry, path, n)
	}
	return nil
}

var intPattern = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

func checkNumber(path string, n json.Number) error {
	s := string(n)
	if !intPattern.MatchString(s) {
		return fmt.Errorf("%w: %s: %q is not an integer", ErrFloat, path, s)
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s: integer %s outside ±(2^53-1)", ErrInvalidEntry, path, s)
	}
	return checkInt(path, i)
}

// checkEntry validates the fixed fields; Data is checked by encodeData.
func checkEntry(e *Entry) error {
	if !kinds[e.Kind] {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidEntry, e.Kind)
	}
	for _, f := range []struct{ name, v string }{
		{"app", e.App}, {"action", e.Action}, {"decision", e.Decision},
		{"reason", e.Reason}, {"approval_id", e.ApprovalID},
		{"digest", e.Digest}, {"policy", e.Policy},
	} {
		if err := checkString(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

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
