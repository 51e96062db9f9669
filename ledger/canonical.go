package ledger

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The writer's RFC 8785 encoder. Marshalling with encoding/json and
// re-parsing with jcs.Transform cost most of the proxy's CPU, all of it in
// the single writer goroutine, so records are written in canonical form
// directly. This encoder only ever sees values this package built or
// validated itself (the types Entry.Data allows), which is what makes a
// direct encoder small enough to trust; the differential and fuzz tests in
// canonical_test.go hold it to jcs.Transform(json.Marshal(v)) byte for byte.
// Anything read back (Verify, CanonicalWithoutHash) still goes through
// jcs.Transform: a second, independent implementation checks the first.

const hexDigits = "0123456789abcdef"

// appendCanonical validates v as an Entry.Data value and appends its RFC 8785
// form to dst, walking v once. root names v in error messages ("data").
// Errors wrap ErrFloat or ErrInvalidEntry; dst is then unusable.
func appendCanonical(dst []byte, root string, v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	dst, verr := e.value(dst, v, 0)
	clear(e.keys[:cap(e.keys)]) // pin no caller's strings
	if cap(e.keys) <= maxPooledKeys {
		e.keys = e.keys[:0]
		encoders.Put(e)
	}
	if verr != nil {
		return nil, verr.toError(root)
	}
	return dst, nil
}

// encoder holds the scratch space for sorting object keys: a stack on which
// each map pushes its keys above those of the maps enclosing it. Encoders
// are pooled, so encoding allocates nothing but its output.
type encoder struct {
	keys []string
}

// maxPooledKeys keeps one huge object from pinning a huge slice in the pool.
const maxPooledKeys = 1024

var encoders = sync.Pool{New: func() any { return &encoder{keys: make([]string, 0, 32)} }}

// valueError is a refused value. The path is collected while the recursion
// unwinds, so the successful walk never builds path strings.
type valueError struct {
	err  error    // ErrFloat or ErrInvalidEntry
	segs []string // path below root, innermost first: "[2]", ".amount"
	msg  string   // follows the path: ": not valid UTF-8"
}

func (e *valueError) at(seg string) *valueError {
	e.segs = append(e.segs, seg)
	return e
}

func (e *valueError) toError(root string) error {
	var path strings.Builder
	path.WriteString(root)
	for i := len(e.segs) - 1; i >= 0; i-- {
		path.WriteString(e.segs[i])
	}
	return fmt.Errorf("%w: %s%s", e.err, path.String(), e.msg)
}

func invalid(format string, args ...any) *valueError {
	return &valueError{err: ErrInvalidEntry, msg: fmt.Sprintf(format, args...)}
}

// value allows exactly the types whose JSON form is exact and stable: that
// list, its messages and its depth rule are the contract of Entry.Data.
func (e *encoder) value(dst []byte, v any, depth int) ([]byte, *valueError) {
	if depth > maxDepth {
		return dst, invalid(": nested deeper than %d", maxDepth)
	}
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case string:
		return stringValue(dst, x)
	case float32, float64:
		return dst, &valueError{err: ErrFloat, msg: " (use a decimal string)"}
	case int:
		return intValue(dst, int64(x))
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return intValue(dst, x)
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint:
		return uintValue(dst, uint64(x))
	case uint64:
		return uintValue(dst, x)
	case json.Number:
		return numberValue(dst, string(x))
	case []string:
		if x == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i, s := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err *valueError
			if dst, err = stringValue(dst, s); err != nil {
				return dst, err.at(index(i))
			}
		}
		return append(dst, ']'), nil
	case []any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i, el := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err *valueError
			if dst, err = e.value(dst, el, depth+1); err != nil {
				return dst, err.at(index(i))
			}
		}
		return append(dst, ']'), nil
	case map[string]any:
		return e.object(dst, x, depth)
	default:
		return dst, invalid(": unsupported type %T", v)
	}
}

func (e *encoder) object(dst []byte, m map[string]any, depth int) ([]byte, *valueError) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	base := len(e.keys)
	for k := range m {
		e.keys = append(e.keys, k)
	}
	// Members nested below push their keys above base+len(m) and may move
	// e.keys to a new array; this slice keeps pointing at ours.
	keys := e.keys[base:]
	slices.SortFunc(keys, compareUTF16)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		var ok bool
		if dst, ok = appendString(dst, k); !ok {
			return dst, invalid(": key is not valid UTF-8")
		}
		dst = append(dst, ':')
		var err *valueError
		if dst, err = e.value(dst, m[k], depth+1); err != nil {
			return dst, err.at("." + k)
		}
	}
	e.keys = e.keys[:base]
	return append(dst, '}'), nil
}

func index(i int) string { return "[" + strconv.Itoa(i) + "]" }

func stringValue(dst []byte, s string) ([]byte, *valueError) {
	dst, ok := appendString(dst, s)
	if !ok {
		// encoding/json would replace invalid UTF-8 with U+FFFD, so the
		// record would silently say something other than what the caller
		// asked for.
		return dst, invalid(": not valid UTF-8")
	}
	return dst, nil
}

func intValue(dst []byte, n int64) ([]byte, *valueError) {
	if n > MaxInt || n < -MaxInt {
		return dst, invalid(": integer %d outside ±(2^53-1) (use a decimal string)", n)
	}
	return strconv.AppendInt(dst, n, 10), nil
}

func uintValue(dst []byte, n uint64) ([]byte, *valueError) {
	if n > MaxInt {
		return dst, invalid(": integer %d above 2^53-1 (use a decimal string)", n)
	}
	return strconv.AppendUint(dst, n, 10), nil
}

// numberValue writes a json.Number as JCS would after reading it as a
// double: an integer within ±(2^53-1) comes out as itself, except that "-0"
// becomes "0", which strconv gives for free.
func numberValue(dst []byte, s string) ([]byte, *valueError) {
	if !isIntLiteral(s) {
		return dst, &valueError{err: ErrFloat, msg: fmt.Sprintf(": %q is not an integer", s)}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return dst, invalid(": integer %s outside ±(2^53-1)", s)
	}
	return intValue(dst, n)
}

// isIntLiteral reports whether s is a JSON integer: -?(0|[1-9][0-9]*).
func isIntLiteral(s string) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	if len(s) == 0 {
		return false
	}
	if s[0] == '0' {
		return len(s) == 1
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// appendString appends s as an RFC 8785 string: only '"', '\\' and the
// control characters below U+0020 are escaped (the five with short forms
// as such, the rest as \u00xx in lower-case hex); everything else, '<', '>',
// '&', U+2028 and U+2029 included, is copied as UTF-8. It reports false if s
// is not valid UTF-8, checking as it copies.
func appendString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, false
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), true
}

// compareUTF16 orders valid UTF-8 strings by their UTF-16 code units, as RFC
// 8785 sorts object keys. UTF-8 byte order is code point order, and the two
// orders part only where a character above U+FFFF (a surrogate pair,
// 0xD800-0xDBFF first) meets one in U+E000-U+FFFF: UTF-16 puts the former
// first. At the first differing byte both strings are at the same point of
// the same character layout (their prefixes are equal), so lead bytes decide:
// 0xEE-0xEF begin U+E000-U+FFFF, 0xF0-0xF4 begin U+10000 and above.
func compareUTF16(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca >= 0xee && cb >= 0xee && (ca >= 0xf0) != (cb >= 0xf0) {
			if ca >= 0xf0 {
				return -1
			}
			return 1
		}
		return int(ca) - int(cb)
	}
	return len(a) - len(b)
}
