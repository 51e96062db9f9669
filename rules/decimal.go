package rules

import (
	"math/big"
	"strings"
)

// decimal is an exact decimal number, (-1)^neg × digits × 10^exp, where
// digits has neither leading nor trailing zeros ("" is zero). Amounts are
// money: they are never rounded through a float.
type decimal struct {
	neg    bool
	digits string
	exp    int
}

// Bounds on the numbers we accept exactly. Anything beyond them is not an
// amount we can read, which holds the request for approval (fail closed)
// rather than spending memory on 1e999999999.
const (
	maxDecimalDigits = 1000
	maxDecimalExp    = 1000
)

// parseDecimal parses s exactly. Strict mode takes the JSON number grammar.
// Loose mode, for numbers quoted in strings and YAML floats, also takes
// surrounding spaces, a leading '+', and ".5" or "5." forms, since a server
// would likely read those as numbers too.
func parseDecimal(s string, loose bool) (decimal, bool) {
	var d decimal
	if loose {
		s = strings.Trim(s, " \t\r\n")
	}
	i := 0
	if i < len(s) && (s[i] == '-' || loose && s[i] == '+') {
		d.neg = s[i] == '-'
		i++
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intPart := s[start:i]
	var frac string
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		frac = s[fs:i]
		if frac == "" && !loose {
			return decimal{}, false
		}
	}
	if intPart == "" && (!loose || frac == "") {
		return decimal{}, false
	}
	if !loose && len(intPart) > 1 && intPart[0] == '0' {
		return decimal{}, false
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		es := i
		for i < len(s) && isDigit(s[i]) {
			if exp < 1_000_000 {
				exp = exp*10 + int(s[i]-'0')
			}
			i++
		}
		if i == es {
			return decimal{}, false
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return decimal{}, false
	}
	e := exp - len(frac)
	ip := strings.TrimLeft(intPart, "0")
	var digits string
	switch {
	case ip == "":
		digits = strings.TrimLeft(frac, "0")
	case frac == "":
		digits = ip
	default:
		f := strings.TrimRight(frac, "0")
		e += len(frac) - len(f)
		digits = ip + f
	}
	t := strings.TrimRight(digits, "0")
	e += len(digits) - len(t)
	digits = t
	if digits == "" {
		return decimal{}, true // zero, without sign
	}
	if len(digits) > maxDecimalDigits || e > maxDecimalExp || e < -maxDecimalExp {
		return decimal{}, false
	}
	d.digits, d.exp = digits, e
	return d, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// cmpAbs compares |d| and |o|: -1, 0 or +1.
func (d decimal) cmpAbs(o decimal) int {
	switch {
	case d.digits == "" && o.digits == "":
		return 0
	case d.digits == "":
		return -1
	case o.digits == "":
		return 1
	}
	dm, om := len(d.digits)+d.exp, len(o.digits)+o.exp
	if dm != om {
		if dm < om {
			return -1
		}
		return 1
	}
	// Same magnitude; without trailing zeros, string order is numeric order
	// ("12" is 120.. < "123").
	return strings.Compare(d.digits, o.digits)
}

// String renders the plain decimal text, without exponent: "1200000", "-5.25",
// "0.001".
func (d decimal) String() string {
	if d.digits == "" {
		return "0"
	}
	var b strings.Builder
	n := len(d.digits)
	b.Grow(n + abs(d.exp) + 3)
	if d.neg {
		b.WriteByte('-')
	}
	switch {
	case d.exp >= 0:
		b.WriteString(d.digits)
		for range d.exp {
			b.WriteByte('0')
		}
	case -d.exp < n:
		b.WriteString(d.digits[:n+d.exp])
		b.WriteByte('.')
		b.WriteString(d.digits[n+d.exp:])
	default:
		b.WriteString("0.")
		for range -d.exp - n {
			b.WriteByte('0')
		}
		b.WriteString(d.digits)
	}
	return b.String()
}

// Rat returns the exact value as a big.Rat.
func (d decimal) Rat() *big.Rat {
	r, _ := new(big.Rat).SetString(d.String())
	return r
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
