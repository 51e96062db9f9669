package rules

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// checkAmountPath accepts the plain subset of gjson paths: keys of letters,
// digits, '_' and '-', the wildcards '*' and '?', '#' as a whole segment to
// fan out over an array, and '\' escaping one of ". * ? # \". Modifiers (@),
// pipes (|), queries (#(...)), literals (!), sub-selectors ([ {) and JSON
// lines (..) are refused: an amount path should name a place, not compute.
func checkAmountPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	if len(p) > 256 {
		return errors.New("path longer than 256 bytes")
	}
	seg := 0 // bytes in the current segment
	hash := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '.':
			if seg == 0 {
				return errors.New("empty segment")
			}
			seg, hash = 0, false
			continue
		case c == '\\':
			i++
			if i == len(p) {
				return errors.New(`trailing '\'`)
			}
			if !strings.ContainsRune(`.*?#\`, rune(p[i])) {
				return fmt.Errorf(`'\' may only escape one of . * ? # \, not %q`, p[i])
			}
		case c == '#':
			if seg != 0 || i+1 < len(p) && p[i+1] != '.' {
				return errors.New("'#' must be a whole segment (as in lines.#.amount)")
			}
			hash = true
		case c == '|' || c == '@':
			return fmt.Errorf("%q is not allowed: gjson modifiers and pipes are refused", c)
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '*', c == '?':
		default:
			return fmt.Errorf("character %q is not allowed (letters, digits, _ - . # * ? and \\ only)", c)
		}
		seg++
	}
	if seg == 0 {
		return errors.New("empty segment")
	}
	if hash {
		return errors.New("path ends with '#', which is an array's length, not an amount; name a field after it")
	}
	return nil
}

// maxBodyDepth bounds the JSON nesting we walk when reading an amount. gjson's
// validator recurses, and a 10 MiB body of '[' must not exhaust the stack.
const maxBodyDepth = 128

// readAmount returns the amount with the largest absolute value found at any
// of paths in body. why is non-empty when no amount can be read; then the
// request must be treated as if its amount were unknown.
func readAmount(body []byte, paths []string) (amount decimal, why string) {
	if len(body) == 0 {
		return decimal{}, "the body is empty"
	}
	if jsonDepthExceeds(body, maxBodyDepth) {
		return decimal{}, fmt.Sprintf("the body nests deeper than %d levels", maxBodyDepth)
	}
	s := string(body)
	if !gjson.Valid(s) {
		return decimal{}, "the body is not valid JSON"
	}
	// Parsers disagree on repeated keys (gjson reads the first, most servers
	// the last) and Go servers match keys case-insensitively: either would let
	// the ERP see an amount other than the one read here.
	if hasDuplicateKeys(gjson.Parse(s)) {
		return decimal{}, "the body repeats a key (keys are compared case-insensitively)"
	}
	var sc amountScan
	for _, p := range paths {
		sc.path = p
		sc.add(gjson.Get(s, p))
		if sc.bad != "" {
			return decimal{}, sc.bad
		}
	}
	if !sc.found {
		return decimal{}, "no number at the amount paths " + strings.Join(paths, ", ")
	}
	return sc.best, ""
}

type amountScan struct {
	path  string
	best  decimal
	found bool
	bad   string
}

func (a *amountScan) add(res gjson.Result) {
	switch res.Type {
	case gjson.Null:
		// Absent, or an explicit null: no amount here.
	case gjson.Number:
		a.consider(parseDecimal(res.Raw, false))
	case gjson.String:
		d, ok := parseDecimal(res.Str, true)
		if !ok {
			a.bad = fmt.Sprintf("the value at %s is a string that is not a plain decimal number", a.path)
			return
		}
		a.consider(d, true)
	case gjson.JSON:
		if !res.IsArray() {
			a.bad = fmt.Sprintf("the value at %s is an object, not a number", a.path)
			return
		}
		res.ForEach(func(_, v gjson.Result) bool {
			a.add(v)
			return a.bad == ""
		})
	default:
		a.bad = fmt.Sprintf("the value at %s is a boolean, not a number", a.path)
	}
}

func (a *amountScan) consider(d decimal, ok bool) {
	if !ok {
		a.bad = fmt.Sprintf("the number at %s is beyond the exact range read (%d digits)", a.path, maxDecimalDigits)
		return
	}
	if !a.found || d.cmpAbs(a.best) > 0 {
		a.best, a.found = d, true
	}
}

// jsonDepthExceeds reports whether brackets outside strings nest deeper than
// max. It does not validate; it only makes validation safe.
func jsonDepthExceeds(b []byte, max int) bool {
	depth := 0
	inStr, esc := false, false
	for _, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				return true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return false
}

// hasDuplicateKeys reports whether any object in v has two keys equal under
// simple Unicode case folding (after JSON unescaping).
func hasDuplicateKeys(v gjson.Result) bool {
	dup := false
	switch {
	case v.IsObject():
		var small []string
		var big map[string]struct{}
		v.ForEach(func(k, val gjson.Result) bool {
			fk := strings.Map(foldRune, k.Str)
			if big != nil {
				if _, ok := big[fk]; ok {
					dup = true
					return false
				}
				big[fk] = struct{}{}
			} else {
				for _, x := range small {
					if x == fk {
						dup = true
						return false
					}
				}
				small = append(small, fk)
				if len(small) > 16 {
					big = make(map[string]struct{}, 64)
					for _, x := range small {
						big[x] = struct{}{}
					}
				}
			}
			dup = hasDuplicateKeys(val)
			return !dup
		})
	case v.IsArray():
		v.ForEach(func(_, val gjson.Result) bool {
			dup = hasDuplicateKeys(val)
			return !dup
		})
	}
	return dup
}

// foldRune maps r to a canonical member of its simple case-folding orbit:
// the lower-case ASCII letter when the orbit has one (so 'K', 'k' and the
// Kelvin sign all fold to 'k'), else the smallest rune.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < m {
			m = f
		}
	}
	if 'A' <= m && m <= 'Z' {
		return m + ('a' - 'A')
	}
	return m
}
