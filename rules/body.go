package rules

import (
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// One canonical body (docs/reference.md#reasons, ambiguous_body): what the
// gate decided on must be what the ERP reads. JSON parsers disagree on
// everything RFC 8259 leaves open, and on some things it does not: which of
// two equal keys counts (gjson the first, Go and Python the last), whether
// "AMOUNT" is "amount" (Go's encoding/json and ASP.NET say yes, with Unicode
// folding, so "lineſ" is "lines"), what a lone surrogate or an invalid UTF-8
// byte becomes, whether a byte order mark, NaN or trailing data is
// accepted. scanBody accepts only documents on which they cannot disagree:
// strict RFC 8259 in UTF-8, no two keys of one object equal after case
// folding (fold.go), no lone surrogate escapes, nesting within
// maxBodyDepth. In the same single pass it reads the amount paths.
//
// The cost is linear in the body: every byte is looked at a bounded number
// of times, each key is compared with at most smallObject others of its
// object (then hashed), and each key or index is matched against each path
// once, in time linear in the key (one wildcard per segment).

// maxBodyDepth bounds the nesting of arrays and objects in a body the gate
// reads. Deeper bodies are not judged: refused when they are JSON, and of
// unreadable amount otherwise.
const maxBodyDepth = 128

// smallObject is how many keys of one object are compared pairwise before
// they go into a map.
const smallObject = 16

// bodyResult is what scanBody found.
type bodyResult struct {
	// invalid is why the body is not one unambiguous JSON document; "" when
	// it is. Then amount and why are unset.
	invalid string
	// amount is the body's amount at the paths; why is non-empty when none
	// can be read (no path selects a number, or one selects something that is
	// not a number).
	amount decimal
	why    string
}

type frame struct {
	obj bool
	// next holds the paths that go on into this container's members (its
	// depth is the index of the segment they match next); term the paths
	// that end at this array, whose elements are then amounts.
	next, term uint64
	n          int // members so far; an array's next element has index n
	// This object's folded keys: s.keys[keyBytes:] cut at s.keyEnds[keyCount:],
	// or, past smallObject keys, the map.
	keyBytes, keyCount int
	big                map[string]struct{}
}

type scanner struct {
	b     []byte
	i     int
	paths []amountPath
	sums  []pathSum

	stack [maxBodyDepth]frame
	depth int

	keys    []byte // the folded keys of the open small objects, parent before child
	keyEnds []int
	buf     []byte // the folded key or unescaped string just read

	err string // why the body is refused, first found
	bad string // why the amount cannot be read, first found
}

// scanBody reads body once: it judges it (bodyResult.invalid) and reads the
// amount at paths (at most maxAmountPaths; none to only judge it).
func scanBody(body []byte, paths []amountPath) bodyResult {
	if len(paths) > maxAmountPaths {
		panic("rules: more than maxAmountPaths amount paths")
	}
	if len(body) == 0 {
		return bodyResult{invalid: "the body is empty"}
	}
	if strings.HasPrefix(string(body[:min(3, len(body))]), "\ufeff") {
		return bodyResult{invalid: "the body starts with a byte order mark, which JSON forbids and some parsers skip"}
	}
	s := scanners.Get().(*scanner)
	defer scanners.Put(s)
	s.reset(body, paths)
	defer s.release()
	return s.scan()
}

// scan is scanBody's reading of a body that is not empty, by a scanner just
// reset.
func (s *scanner) scan() bodyResult {
	paths := s.paths
	if len(paths) > 0 {
		s.sums = make([]pathSum, len(paths))
	}
	s.run()
	if s.err != "" {
		return bodyResult{invalid: s.err}
	}
	if len(paths) == 0 {
		return bodyResult{why: "no amount paths"}
	}
	if s.bad != "" {
		return bodyResult{why: s.bad}
	}
	amount, why := amounts(paths, s.sums)
	return bodyResult{amount: amount, why: why}
}

// scanners keeps scanners between bodies: one is large (its stack of
// frames) and its key buffers grow, and every JSON request is scanned.
var scanners = sync.Pool{New: func() any { return new(scanner) }}

// maxKeptBuffer bounds the key buffers a scanner keeps in the pool.
const maxKeptBuffer = 64 << 10

// reset readies s to scan body, in the state a new scanner has but for its
// buffers' capacity: every frame is written when it is pushed, and the key
// buffers are cut to empty.
func (s *scanner) reset(body []byte, paths []amountPath) {
	s.b, s.i, s.paths, s.sums, s.depth = body, 0, paths, nil, 0
	s.keys, s.keyEnds, s.buf = s.keys[:0], s.keyEnds[:0], s.buf[:0]
	s.err, s.bad = "", ""
}

// release drops what s refers to of the body it scanned, and buffers grown
// too large to keep; nothing scan returned refers to s.
func (s *scanner) release() {
	for i := range s.depth {
		s.stack[i].big = nil
	}
	s.b, s.paths, s.sums = nil, nil, nil
	if cap(s.keys) > maxKeptBuffer || cap(s.buf) > maxKeptBuffer || cap(s.keyEnds) > maxKeptBuffer/8 {
		s.keys, s.keyEnds, s.buf = nil, nil, nil
	}
}

func (s *scanner) fail(format string, args ...any) {
	if s.err == "" {
		s.err = fmt.Sprintf(format, args...)
	}
}

// unexpected fails at s.i: "not valid JSON: ... at byte N".
func (s *scanner) unexpected(want string) {
	if s.i >= len(s.b) {
		s.fail("not valid JSON: the body ends where %s was expected", want)
		return
	}
	s.fail("not valid JSON: %s at byte %d where %s was expected", describeByte(s.b[s.i]), s.i, want)
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// run is the whole scan: a loop over values with an explicit stack, so that
// neither depth nor length of the body can exhaust the goroutine's stack.
func (s *scanner) run() {
	all := uint64(0)
	if n := len(s.paths); n > 0 {
		all = ^uint64(0) >> (64 - n)
	}
	at, term := all, uint64(0) // the root is reached by every path, ended by none
	for {
		// A value, reached by the paths in at and ending those in term.
		s.ws()
		if !s.value(at, term) {
			return
		}
		// After a value, or a container just opened: close containers until
		// one has another member.
		for {
			if s.depth == 0 {
				s.ws()
				if s.i != len(s.b) {
					s.unexpected("the end of the body (one JSON value only)")
				}
				return
			}
			f := &s.stack[s.depth-1]
			s.ws()
			if s.i >= len(s.b) {
				s.unexpected("the rest of an array or object")
				return
			}
			if c := s.b[s.i]; c == '}' && f.obj || c == ']' && !f.obj {
				s.i++
				s.pop()
				continue
			} else if f.n > 0 {
				if c != ',' {
					if f.obj {
						s.unexpected("',' or '}'")
					} else {
						s.unexpected("',' or ']'")
					}
					return
				}
				s.i++
				s.ws()
			}
			break
		}
		f := &s.stack[s.depth-1]
		if f.obj {
			var ok bool
			if at, term, ok = s.member(f); !ok {
				return
			}
		} else {
			at, term = s.element(f)
		}
		f.n++
	}
}

func (s *scanner) pop() {
	f := &s.stack[s.depth-1]
	if f.obj && f.big == nil {
		s.keys, s.keyEnds = s.keys[:f.keyBytes], s.keyEnds[:f.keyCount]
	}
	f.big = nil
	s.depth--
}

// member reads an object member's key and ':', refuses a key equal to an
// earlier one of the object, and returns the paths that reach and end at
// the member's value.
func (s *scanner) member(f *frame) (at, term uint64, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		s.unexpected("a key")
		return 0, 0, false
	}
	keyAt := s.i
	if !s.str(true, true) {
		return 0, 0, false
	}
	if !s.addKey(f, keyAt) {
		return 0, 0, false
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		s.unexpected("':'")
		return 0, 0, false
	}
	s.i++
	if s.bad != "" {
		return 0, 0, true
	}
	k := s.depth - 1
	for m := f.next; m != 0; m &= m - 1 {
		p := bits.TrailingZeros64(m)
		if segs := s.paths[p].segs; segs[k].matchKey(s.buf) {
			at |= 1 << p
			if len(segs) == k+1 {
				term |= 1 << p
			}
		}
	}
	return at, term, true
}

// element returns the paths that reach and end at an array's next element.
func (s *scanner) element(f *frame) (at, term uint64) {
	if s.bad != "" {
		return 0, 0
	}
	k := s.depth - 1
	for m := f.next; m != 0; m &= m - 1 {
		p := bits.TrailingZeros64(m)
		if segs := s.paths[p].segs; segs[k].matchIndex(f.n) {
			at |= 1 << p
			if len(segs) == k+1 {
				term |= 1 << p
			}
		}
	}
	// The elements of an array a path ends at are its amounts.
	return at | f.term, term | f.term
}

// addKey records the folded key in s.buf as one of f's, and refuses it if
// f has it already.
func (s *scanner) addKey(f *frame, keyAt int) bool {
	if f.big != nil {
		if _, dup := f.big[string(s.buf)]; dup {
			s.duplicate(keyAt)
			return false
		}
		f.big[string(s.buf)] = struct{}{}
		return true
	}
	beg := f.keyBytes
	for _, end := range s.keyEnds[f.keyCount:] {
		if string(s.keys[beg:end]) == string(s.buf) {
			s.duplicate(keyAt)
			return false
		}
		beg = end
	}
	if len(s.keyEnds)-f.keyCount < smallObject {
		s.keys = append(s.keys, s.buf...)
		s.keyEnds = append(s.keyEnds, len(s.keys))
		return true
	}
	// f is the innermost open object, so its keys are the last ones.
	f.big = make(map[string]struct{}, 2*smallObject)
	beg = f.keyBytes
	for _, end := range s.keyEnds[f.keyCount:] {
		f.big[string(s.keys[beg:end])] = struct{}{}
		beg = end
	}
	f.big[string(s.buf)] = struct{}{}
	s.keys, s.keyEnds = s.keys[:f.keyBytes], s.keyEnds[:f.keyCount]
	return true
}

func (s *scanner) duplicate(keyAt int) {
	raw := s.b[keyAt+1 : s.i-1]
	s.fail("key %s at byte %d is equal to an earlier key of the same object (keys are compared after Unicode case folding, "+
		"as ERPs that bind keys case-insensitively do)", clip(string(raw)), keyAt)
}

// badValue notes that a path ending here selects what is not an amount.
func (s *scanner) badValue(term uint64, what string) {
	if term == 0 || s.bad != "" {
		return
	}
	s.bad = fmt.Sprintf("the value at %s is %s", s.paths[bits.TrailingZeros64(term)].text, what)
}

// amount adds d to the sums of the paths in term.
func (s *scanner) amount(term uint64, d decimal) {
	for m := term; m != 0; m &= m - 1 {
		ps := &s.sums[bits.TrailingZeros64(m)]
		ps.found = true
		if d.neg {
			ps.neg.add(d)
		} else {
			ps.pos.add(d)
		}
	}
}

// value reads one value at s.i. A scalar is read whole; a container is
// opened (pushed). It reports false when the scan must stop.
func (s *scanner) value(at, term uint64) bool {
	if s.i >= len(s.b) {
		s.unexpected("a value")
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{' || c == '[':
		if s.depth == maxBodyDepth {
			s.fail("the body nests deeper than %d levels of arrays and objects, which the gate does not read", maxBodyDepth)
			return false
		}
		s.i++
		if c == '{' && term != 0 {
			s.badValue(term, "an object, not a number")
			term = 0
		}
		s.stack[s.depth] = frame{obj: c == '{', next: at &^ term, term: term,
			keyBytes: len(s.keys), keyCount: len(s.keyEnds)}
		s.depth++
	case c == '"':
		if !s.str(term != 0, false) {
			return false
		}
		if term != 0 {
			d, ok := parseDecimal(string(s.buf), true)
			if !ok {
				s.badValue(term, "a string that is not a plain decimal number")
			} else {
				s.amount(term, d)
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		if !s.number() {
			return false
		}
		if term != 0 {
			d, ok := parseDecimal(string(s.b[start:s.i]), false)
			if !ok {
				s.badValue(term, fmt.Sprintf("a number beyond the exact range read (%d digits)", maxDecimalDigits))
			} else {
				s.amount(term, d)
			}
		}
	case c == 't':
		if !s.literal("true") {
			return false
		}
		s.badValue(term, "a boolean, not a number")
	case c == 'f':
		if !s.literal("false") {
			return false
		}
		s.badValue(term, "a boolean, not a number")
	case c == 'n':
		// An explicit null is no amount, like an absent key.
		return s.literal("null")
	default:
		s.unexpected("a value")
		return false
	}
	return true
}

// str reads the string at s.i (a '"'). With keep, its text goes into s.buf,
// unescaped, and with fold also folded (fold.go).
func (s *scanner) str(keep, fold bool) bool {
	start := s.i
	s.i++
	s.buf = s.buf[:0]
	for {
		if s.i >= len(s.b) {
			s.fail("not valid JSON: the string at byte %d does not end", start)
			return false
		}
		c := s.b[s.i]
		var r rune
		switch {
		case c == '"':
			s.i++
			return true
		case c == '\\':
			var ok bool
			if r, ok = s.escape(); !ok {
				return false
			}
		case c < 0x20:
			s.fail("not valid JSON: control byte 0x%02x in the string at byte %d (it must be escaped)", c, start)
			return false
		case c < utf8.RuneSelf:
			s.i++
			if keep {
				if fold && 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				s.buf = append(s.buf, c)
			}
			continue
		default:
			var n int
			r, n = utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				// Go's encoding/json reads U+FFFD here, so two keys that
				// differ only in their bad bytes are one key to it.
				s.fail("not valid UTF-8 at byte %d", s.i)
				return false
			}
			s.i += n
		}
		if keep {
			if fold {
				s.buf = appendFolded(s.buf, r)
			} else {
				s.buf = utf8.AppendRune(s.buf, r)
			}
		}
	}
}

// escape reads the escape sequence at s.i (a '\\') and returns its rune.
func (s *scanner) escape() (rune, bool) {
	at := s.i
	s.i++
	if s.i >= len(s.b) {
		s.unexpected("an escape sequence")
		return 0, false
	}
	c := s.b[s.i]
	s.i++
	switch c {
	case '"', '\\', '/':
		return rune(c), true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case 'u':
		r, ok := s.hex4()
		if !ok {
			return 0, false
		}
		if !utf16.IsSurrogate(r) {
			return r, true
		}
		// A surrogate pair, or a lone surrogate: no character at all, which
		// Go reads as U+FFFD and Python keeps as it is.
		if r < 0xdc00 && s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
			s.i += 2
			r2, ok := s.hex4()
			if !ok {
				return 0, false
			}
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, true
			}
		}
		s.fail("a lone surrogate escape (\\u%04x) at byte %d is not a character", r, at)
		return 0, false
	}
	s.i--
	s.fail("not valid JSON: bad escape %s at byte %d", describeByte(c), at)
	return 0, false
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		s.i = len(s.b)
		s.unexpected("four hex digits")
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			s.fail("not valid JSON: %s in a \\u escape at byte %d", describeByte(c), s.i)
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	s.i += 4
	return r, true
}

// number reads a JSON number at s.i, by RFC 8259's grammar exactly.
func (s *scanner) number() bool {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case digits() == 0:
		s.unexpected("a digit")
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			s.unexpected("a digit after '.'")
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			s.unexpected("a digit of the exponent")
			return false
		}
	}
	return true
}

func (s *scanner) literal(word string) bool {
	if !strings.HasPrefix(string(s.b[s.i:min(len(s.b), s.i+len(word))]), word) {
		s.unexpected("a value (true, false and null are lower case)")
		return false
	}
	s.i += len(word)
	return true
}
