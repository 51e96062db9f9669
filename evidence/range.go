package evidence

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Range selects the records of a bundle. Times select records whose time
// is in [From, To); seqs select [FromSeq, ToSeq]; set both and the range is
// their intersection. Zero values leave that end open (ToSeq 0: up to the
// head as it is when the export starts).
type Range struct {
	From, To       time.Time
	FromSeq, ToSeq uint64
}

// ParseTime reads a range bound: an RFC 3339 time, or a date (YYYY-MM-DD,
// midnight UTC). A date given as the end of a range (end true) means the
// end of that day, so --from 2026-07-01 --to 2026-09-30 is the whole third
// quarter, as the seed's export_evidence_bundle(start_date, end_date) reads;
// an RFC 3339 end is exclusive as written.
func ParseTime(s string, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q is neither a date (2026-09-30) nor an RFC 3339 time (2026-09-30T17:00:00Z)", ErrBadRange, s)
	}
	return t.UTC(), nil
}

// Validate reports a range that can select nothing by construction.
func (r Range) Validate() error { return r.check() }

func (r Range) check() error {
	if !r.From.IsZero() && !r.To.IsZero() && !r.From.Before(r.To) {
		return fmt.Errorf("%w: from %s is not before to %s", ErrBadRange, r.From.Format(time.RFC3339Nano), r.To.Format(time.RFC3339Nano))
	}
	if r.ToSeq != 0 && r.FromSeq > r.ToSeq {
		return fmt.Errorf("%w: from seq %d is after to seq %d", ErrBadRange, r.FromSeq, r.ToSeq)
	}
	return nil
}

// resolve turns r into the seq range [from, to] over a chain whose head is
// head, by binary search on record time (times never decrease along the
// chain, which Verify checks). ok is false when nothing is selected.
func (r Range) resolve(src Source, head uint64) (from, to uint64, ok bool, err error) {
	from, to = max(r.FromSeq, 1), head
	if r.ToSeq != 0 {
		to = min(to, r.ToSeq)
	}
	if !r.From.IsZero() {
		n, err := firstAtOrAfter(src, r.From, head)
		if err != nil {
			return 0, 0, false, err
		}
		from = max(from, n)
	}
	if !r.To.IsZero() {
		n, err := firstAtOrAfter(src, r.To, head)
		if err != nil {
			return 0, 0, false, err
		}
		to = min(to, n-1)
	}
	return from, to, from <= to && to >= 1, nil
}

// firstAtOrAfter is the smallest seq whose time is at or after t, head+1
// if none.
func firstAtOrAfter(src Source, t time.Time, head uint64) (uint64, error) {
	lo, hi := uint64(1), head+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		rt, err := recordTime(src, mid)
		if err != nil {
			return 0, err
		}
		if rt.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

func recordTime(src Source, seq uint64) (time.Time, error) {
	raw, err := src.Get(seq)
	if err != nil {
		return time.Time{}, fmt.Errorf("read record %d: %w", seq, err)
	}
	var r struct {
		Time string `json:"time"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return time.Time{}, fmt.Errorf("record %d: %w", seq, err)
	}
	t, err := time.Parse(time.RFC3339Nano, r.Time)
	if err != nil {
		return time.Time{}, fmt.Errorf("record %d time %q: %w", seq, r.Time, err)
	}
	return t, nil
}

// ParseBound reads one end of a range as the HTTP API takes it: a JSON
// number is a seq, a string a date or RFC 3339 time (see ParseTime).
func ParseBound(raw json.RawMessage, end bool) (t time.Time, seq uint64, err error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return time.Time{}, 0, nil
	}
	if s[0] != '"' {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return time.Time{}, 0, fmt.Errorf("%w: %s is not a seq (a positive integer) or a quoted date", ErrBadRange, s)
		}
		return time.Time{}, n, nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return time.Time{}, 0, fmt.Errorf("%w: %v", ErrBadRange, err)
	}
	if str == "" {
		return time.Time{}, 0, fmt.Errorf("%w: empty date", ErrBadRange)
	}
	t, err = ParseTime(str, end)
	return t, 0, err
}
