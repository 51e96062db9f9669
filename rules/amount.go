package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Amount paths (docs/reference.md#manifest) are written in a plain subset of
// gjson syntax, but the gate does not read them with gjson: gjson matches
// keys case-sensitively and takes the first key a wildcard matches, while
// the ERP's binder may match keys case-insensitively. The gate reads a path
// the way the most lenient ERP would: a key segment matches every key equal
// to it after case folding (fold.go), a wildcard segment every key it
// matches, '#' every element of an array. The body is walked once
// (body.go), whatever the paths.

// maxAmountPaths bounds an action's amount paths; the body scanner tracks
// them in one 64-bit mask per open container.
const maxAmountPaths = 64

// amountPath is an amount path compiled for the body scanner.
type amountPath struct {
	text string
	segs []pathSeg
}

type segKind uint8

const (
	segKey  segKind = iota // a key; when all digits, also an array index
	segEach                // '#': every element of an array
	segWild                // a key pattern with one '*' or '?'
)

// pathSeg is one segment of an amount path, folded (fold.go) so that it is
// compared with a body's folded keys byte for byte.
type pathSeg struct {
	kind segKind
	key  string // segKey: the key; segWild: the text before the wildcard
	tail string // segWild: the text after the wildcard
	one  bool   // segWild: the wildcard is '?', exactly one character
	// index is the array index a segKey of digits names, -1 for others.
	index int
}

// matchKey reports whether folded, a key folded by the scanner, is matched.
func (s *pathSeg) matchKey(folded []byte) bool {
	switch s.kind {
	case segKey:
		return string(folded) == s.key
	case segWild:
		n, t := len(s.key), len(s.tail)
		if len(folded) < n+t || string(folded[:n]) != s.key || string(folded[len(folded)-t:]) != s.tail {
			return false
		}
		if !s.one {
			return true
		}
		mid := folded[n : len(folded)-t]
		_, w := utf8.DecodeRune(mid)
		return len(mid) > 0 && w == len(mid)
	}
	return false
}

// matchIndex reports whether the array element at index i is matched.
func (s *pathSeg) matchIndex(i int) bool {
	return s.kind == segEach || s.kind == segKey && s.index == i
}

// checkAmountPath reports why p is not an acceptable amount path.
func checkAmountPath(p string) error {
	_, err := compileAmountPath(p)
	return err
}

// compileAmountPath accepts the plain subset of gjson paths: keys of letters,
// digits, '_' and '-', at most one wildcard ('*' or '?') per segment, '#' as
// a whole segment to fan out over an array, and '\' escaping one of
// ". * ? # \". Modifiers (@), pipes (|), queries (#(...)), literals (!),
// sub-selectors ([ {) and JSON lines (..) are refused: an amount path should
// name a place, not compute.
func compileAmountPath(p string) (amountPath, error) {
	if p == "" {
		return amountPath{}, errors.New("empty path")
	}
	if len(p) > 256 {
		return amountPath{}, errors.New("path longer than 256 bytes")
	}
	ap := amountPath{text: p}
	var (
		lit      strings.Builder // the current segment's text, unescaped
		head     string          // text before the wildcard, once seen
		wild     byte            // '*' or '?' once seen, else 0
		digits   = true          // the segment is digits only, unescaped
		hash     bool
		segStart = true
	)
	end := func() error {
		if segStart {
			return errors.New("empty segment")
		}
		s := pathSeg{index: -1}
		switch {
		case hash:
			s.kind = segEach
		case wild != 0:
			s.kind, s.key, s.tail, s.one = segWild, foldString(head), foldString(lit.String()), wild == '?'
		default:
			s.key = foldString(lit.String())
			if digits && len(s.key) <= 9 {
				s.index, _ = strconv.Atoi(s.key)
			}
		}
		ap.segs = append(ap.segs, s)
		lit.Reset()
		head, wild, digits, hash, segStart = "", 0, true, false, true
		return nil
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '.':
			if err := end(); err != nil {
				return amountPath{}, err
			}
			continue
		case c == '\\':
			i++
			if i == len(p) {
				return amountPath{}, errors.New(`trailing '\'`)
			}
			if !strings.ContainsRune(`.*?#\`, rune(p[i])) {
				return amountPath{}, fmt.Errorf(`'\' may only escape one of . * ? # \, not %q`, p[i])
			}
			lit.WriteByte(p[i])
			digits = false
		case c == '#':
			if !segStart || i+1 < len(p) && p[i+1] != '.' {
				return amountPath{}, errors.New("'#' must be a whole segment (as in lines.#.amount)")
			}
			hash = true
		case c == '*' || c == '?':
			if wild != 0 {
				return amountPath{}, errors.New("more than one wildcard ('*' or '?') in a segment: matching such patterns " +
					"can take time that grows faster than the body, so one request could stall the gate; use one per segment")
			}
			head, wild, digits = lit.String(), c, false
			lit.Reset()
		case c == '|' || c == '@':
			return amountPath{}, fmt.Errorf("%q is not allowed: gjson modifiers and pipes are refused", c)
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-':
			lit.WriteByte(c)
			digits = false
		case c >= '0' && c <= '9':
			lit.WriteByte(c)
		default:
			return amountPath{}, fmt.Errorf("character %q is not allowed (letters, digits, _ - . # * ? and \\ only)", c)
		}
		segStart = false
	}
	if hash && !segStart {
		return amountPath{}, errors.New("path ends with '#', which is an array's length, not an amount; name a field after it")
	}
	if err := end(); err != nil {
		return amountPath{}, err
	}
	return ap, nil
}

// readAmount returns the amount of body at paths (docs/reference.md#manifest):
// for each path, the larger of the sum of the positive values it selects and
// the sum of the absolute values of its negative ones; the largest over the
// paths. why is non-empty when no amount can be read; then the request must
// be treated as if its amount were unknown.
func readAmount(body []byte, paths []amountPath) (amount decimal, why string) {
	r := scanBody(body, paths)
	if r.invalid != "" {
		return decimal{}, r.invalid
	}
	return r.amount, r.why
}

// pathSum is what one path has selected so far.
type pathSum struct {
	pos, neg decSum
	found    bool
}

// amounts folds the per-path sums into the body's amount.
func amounts(paths []amountPath, sums []pathSum) (decimal, string) {
	var best decimal
	found := false
	for i := range sums {
		s := &sums[i]
		if !s.found {
			continue
		}
		found = true
		for _, part := range [...]*decSum{&s.pos, &s.neg} {
			d, ok := part.total()
			if !ok {
				return decimal{}, fmt.Sprintf("the sum at %s is beyond the exact range read (%d digits)", paths[i].text, maxDecimalDigits)
			}
			if d.cmpAbs(best) > 0 {
				best = d
			}
		}
	}
	if !found {
		texts := make([]string, len(paths))
		for i := range paths {
			texts[i] = paths[i].text
		}
		return decimal{}, "no number at the amount paths " + strings.Join(texts, ", ")
	}
	return best, ""
}
