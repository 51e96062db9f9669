package verifier

import "unicode/utf8"

// The fast path. A record is stored as the RFC 8785 form of itself, so
// instead of re-deriving that form with jcs (a parse, a sort and a
// re-encode for every record, most of the verifier's cost) the verifier
// first tries to prove, in one pass over the bytes, that they already are
// what jcs.Transform would write: no whitespace, members strictly ascending
// in UTF-16 order (so no duplicates), strings with exactly the escapes JCS
// writes and valid UTF-8, and only numbers whose JCS form is their own
// text. The bytes a record's hash covers are then the stored bytes with the
// one top-level "hash" member cut out: removing a member from a canonical
// object leaves the canonical form of the rest.
//
// The scanner only ever says "certainly canonical" or "not sure": anything
// it does not recognise (a float, an exponent, an integer outside
// ±(2^53-1), a key needing more than a byte comparison, deep nesting)
// goes to the slow path, which alone decides what is wrong with a record.
// FuzzFastMatchesSlow holds the two to the same verdict and bytes.

// member is one top-level member of a canonical object: the name's bytes
// (between the quotes, as escaped) and the value's, as offsets into the
// input.
type member struct {
	nameAt, nameEnd   int
	valueAt, valueEnd int
}

// maxFastDepth bounds the nesting the fast path follows; deeper documents
// go to jcs, whose own limit then applies.
const maxFastDepth = 64

// plain marks the bytes that stand for themselves inside a canonical
// string: printable ASCII but '"' and '\\'. Bytes from 0x80 start a UTF-8
// sequence, checked on their own.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

type canonScanner struct {
	b     []byte
	i     int
	depth int
}

// canonicalObject reports whether raw is certainly a JSON object in the
// form jcs.Transform gives it, appending its top-level members to dst. false
// means not sure, never that raw is wrong.
func canonicalObject(raw []byte, dst []member) ([]member, bool) {
	s := canonScanner{b: raw}
	if len(raw) == 0 || raw[0] != '{' {
		return dst, false
	}
	dst, ok := s.object(dst, true)
	return dst, ok && s.i == len(raw)
}

func (s *canonScanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		_, ok := s.object(nil, false)
		return ok
	case c == '[':
		return s.array()
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

func (s *canonScanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number accepts the integers within ±(2^53-1) written as JCS writes them
// (no leading zero, no "-0", no fraction or exponent): exactly the numbers a
// record may hold, whose ES6 form is their own text. Anything else is left
// to the slow path.
func (s *canonScanner) number() bool {
	start := s.i
	neg := s.b[s.i] == '-'
	if neg {
		s.i++
	}
	if s.i >= len(s.b) {
		return false
	}
	if s.b[s.i] == '0' {
		if neg {
			return false // -0: jcs writes 0
		}
		s.i++
	} else {
		d := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		switch n := s.i - d; {
		case n == 0 || n > 16:
			return false
		case n == 16 && string(s.b[d:s.i]) > "9007199254740991":
			return false
		}
	}
	// What follows must end the number: a fraction, an exponent or more
	// digits (after a 0) are not for the fast path.
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return false
		}
	}
	return s.i > start
}

// str scans a string at s.i and reports whether it holds an escape. The
// escapes JCS writes are \" \\ \b \f \n \r \t and \u00xx (lower-case hex)
// for the other control characters; every other character is itself, in
// valid UTF-8.
func (s *canonScanner) str() (escaped, ok bool) {
	s.i, escaped, ok = scanString(s.b, s.i+1)
	return escaped, ok
}

// scanString scans the rest of a string from b[i], just past its opening
// quote, to just past its closing one.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	for {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, escaped, false
		}
		switch c := b[i]; {
		case c == '"':
			i++
			return i, escaped, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, escaped, false
			}
			escaped = true
			switch b[i+1] {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || b[i+2] != '0' || b[i+3] != '0' {
					return i, escaped, false
				}
				hi, lo := b[i+4], b[i+5]
				var v byte
				switch {
				case hi == '0' || hi == '1':
					v = (hi - '0') << 4
				default:
					return i, escaped, false
				}
				switch {
				case lo >= '0' && lo <= '9':
					v |= lo - '0'
				case lo >= 'a' && lo <= 'f':
					v |= lo - 'a' + 10
				default:
					return i, escaped, false
				}
				switch v {
				case '\b', '\t', '\n', '\f', '\r':
					return i, escaped, false // JCS writes these short
				}
				i += 6
			default:
				return i, escaped, false
			}
		case c < 0x20:
			return i, escaped, false
		default: // c >= 0x80
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, escaped, false
			}
			i += size
		}
	}
}

func (s *canonScanner) array() bool {
	if s.depth++; s.depth > maxFastDepth {
		return false
	}
	defer func() { s.depth-- }()
	s.i++ // '['
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return true
	}
	for {
		if !s.value() || s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// object scans an object at s.i. Its members must be strictly ascending by
// name; the fast path compares names only where byte order is UTF-16 order
// (no escapes, no character at or above U+E000, whose UTF-8 lead bytes are
// 0xEE and up) and leaves the rest to jcs.
func (s *canonScanner) object(dst []member, top bool) ([]member, bool) {
	if s.depth++; s.depth > maxFastDepth {
		return dst, false
	}
	defer func() { s.depth-- }()
	s.i++ // '{'
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return dst, true
	}
	var prev []byte
	for n := 0; ; n++ {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return dst, false
		}
		at := s.i + 1
		escaped, ok := s.str()
		if !ok || escaped {
			return dst, false
		}
		name := s.b[at : s.i-1]
		for _, c := range name {
			if c >= 0xEE {
				return dst, false
			}
		}
		if n > 0 && string(prev) >= string(name) {
			return dst, false
		}
		prev = name
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return dst, false
		}
		s.i++
		vat := s.i
		if !s.value() {
			return dst, false
		}
		if top {
			dst = append(dst, member{nameAt: at, nameEnd: at + len(name), valueAt: vat, valueEnd: s.i})
		}
		if s.i >= len(s.b) {
			return dst, false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return dst, true
		default:
			return dst, false
		}
	}
}

// Member is a top-level member of a canonical JSON object: its name as
// written (between the quotes; never escaped) and its value's bytes, both
// slices of the object given to Members.
type Member struct {
	Name, Value []byte
	At          int // where Value starts in the object
}

// Members returns the top-level members of raw, in order, when the
// verifier's fast path can prove raw an RFC 8785 canonical JSON object (see
// the package doc); false means not sure, never that raw is wrong. It lets
// a reader of records that the chain check vouches for skip a general JSON
// decoder; it checks nothing a record must hold beyond the form.
func Members(raw []byte, dst []Member) ([]Member, bool) {
	var buf [16]member
	ms, ok := canonicalObject(raw, buf[:0])
	if !ok {
		return dst, false
	}
	for _, m := range ms {
		dst = append(dst, Member{Name: raw[m.nameAt:m.nameEnd:m.nameEnd], Value: raw[m.valueAt:m.valueEnd:m.valueEnd], At: m.valueAt})
	}
	return dst, true
}
