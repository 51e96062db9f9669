package rules

import (
	"math/big"
	"math/bits"
	"slices"
	"strconv"
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

// decSum is an exact sum of the absolute values of decimals. While the sum
// fits in a uint64 mantissa (every real ledger entry) it is kept as m×10^e
// and adding allocates nothing; past that, terms are summed per exponent, so
// that adding costs the size of the term, never the size of the sum: a body
// alternating 1e1000 and 1e-1000 stays linear to read.
type decSum struct {
	m    uint64
	e    int
	some bool             // m, e hold a term
	big  map[int]*big.Int // terms per exponent, once m overflowed
	tmp  *big.Int
}

var pow10u64 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// mulPow10 returns m×10^k and whether it fits in a uint64.
func mulPow10(m uint64, k int) (uint64, bool) {
	if m == 0 {
		return 0, true
	}
	if k >= len(pow10u64) {
		return 0, false
	}
	hi, lo := bits.Mul64(m, pow10u64[k])
	return lo, hi == 0
}

// add adds |d|.
func (s *decSum) add(d decimal) {
	if d.digits == "" {
		return
	}
	if s.big == nil {
		if s.addSmall(d) {
			return
		}
		s.big = map[int]*big.Int{}
		s.tmp = new(big.Int)
		if s.some {
			s.big[s.e] = new(big.Int).SetUint64(s.m)
		}
	}
	b := s.big[d.exp]
	if b == nil {
		b = new(big.Int)
		s.big[d.exp] = b
	}
	s.tmp.SetString(d.digits, 10)
	b.Add(b, s.tmp)
}

func (s *decSum) addSmall(d decimal) bool {
	if len(d.digits) > 19 {
		return false
	}
	v, err := strconv.ParseUint(d.digits, 10, 64)
	if err != nil {
		return false
	}
	if !s.some {
		s.m, s.e, s.some = v, d.exp, true
		return true
	}
	m, e := s.m, s.e
	if d.exp >= e {
		var ok bool
		if v, ok = mulPow10(v, d.exp-e); !ok {
			return false
		}
	} else {
		var ok bool
		if m, ok = mulPow10(m, e-d.exp); !ok {
			return false
		}
		e = d.exp
	}
	sum, carry := bits.Add64(m, v, 0)
	if carry != 0 {
		return false
	}
	s.m, s.e = sum, e
	return true
}

// total returns the sum, non-negative, and false when it is beyond the exact
// range parseDecimal reads.
func (s *decSum) total() (decimal, bool) {
	var digits string
	var exp int
	switch {
	case s.big != nil:
		exps := make([]int, 0, len(s.big))
		for e := range s.big {
			exps = append(exps, e)
		}
		slices.Sort(exps)
		// Horner, from the largest exponent down.
		acc := new(big.Int)
		ten := big.NewInt(10)
		p := new(big.Int)
		for i := len(exps) - 1; i >= 0; i-- {
			if i < len(exps)-1 {
				acc.Mul(acc, p.Exp(ten, big.NewInt(int64(exps[i+1]-exps[i])), nil))
			}
			acc.Add(acc, s.big[exps[i]])
		}
		digits, exp = acc.String(), exps[0]
	case s.some:
		digits, exp = strconv.FormatUint(s.m, 10), s.e
	default:
		return decimal{}, true
	}
	t := strings.TrimRight(digits, "0")
	exp += len(digits) - len(t)
	if t == "" {
		return decimal{}, true
	}
	if len(t) > maxDecimalDigits || exp > maxDecimalExp || exp < -maxDecimalExp {
		return decimal{}, false
	}
	return decimal{digits: t, exp: exp}, true
}
