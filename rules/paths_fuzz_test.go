package rules

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// FuzzPathsAgainstGJSON checks the path reading against gjson, whose syntax
// the paths borrow: on bodies where folding changes nothing (no upper case,
// no escapes, no non-ASCII byte) and paths without wildcards, the gate
// selects exactly the values gjson does, so both give the same amount.
// (Elsewhere it selects more: keys in other cases, every key a wildcard
// matches.)
func FuzzPathsAgainstGJSON(f *testing.F) {
	for _, s := range [][2]string{
		{"lines.#.amount", `{"lines":[{"amount":1},{"amount":"2"},{"debit":3}]}`},
		{"lines.1.amount", `{"lines":[{"amount":1},{"amount":-5}]}`},
		{"a.0", `{"a":{"0":7}}`},
		{"a", `{"a":[1,[2,[3]],null]}`},
		{"#.x.#.y", `[{"x":[{"y":1},{"y":2}]},{"x":{"y":4}}]`},
		{`a\.b`, `{"a.b":1,"a":{"b":2}}`},
		{"e.#.f", `{"e":[[{"f":1}],{"f":2}]}`},
		{"a.b", `{"a":[{"b":1}]}`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		ap, err := compileAmountPath(path)
		if err != nil || strings.ContainsAny(path, "*?ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			return
		}
		for _, c := range body {
			if c >= 'A' && c <= 'Z' || c >= 0x80 || c == '\\' {
				return
			}
		}
		res := scanBody(body, []amountPath{ap})
		if res.invalid != "" {
			return
		}
		if t := strings.TrimLeft(string(body), " \t\r\n"); t[0] != '{' && t[0] != '[' {
			return // gjson reads paths into a bare string or number
		}
		var vals []decimal
		bad := false
		var walk func(r gjson.Result)
		walk = func(r gjson.Result) {
			switch r.Type {
			case gjson.Null:
			case gjson.Number:
				d, ok := parseDecimal(r.Raw, false)
				bad = bad || !ok
				vals = append(vals, d)
			case gjson.String:
				d, ok := parseDecimal(r.Str, true)
				bad = bad || !ok
				vals = append(vals, d)
			case gjson.JSON:
				if !r.IsArray() {
					bad = true
					return
				}
				r.ForEach(func(_, v gjson.Result) bool { walk(v); return true })
			default:
				bad = true
			}
		}
		walk(gjson.GetBytes(body, path))
		if bad != (res.why != "" && !strings.HasPrefix(res.why, "no number")) {
			t.Fatalf("gjson bad %v, gate %q", bad, res.why)
		}
		if bad {
			return
		}
		var pos, neg decSum
		for _, d := range vals {
			if d.neg {
				neg.add(d)
			} else {
				pos.add(d)
			}
		}
		p, pok := pos.total()
		n, nok := neg.total()
		if !pok || !nok {
			return
		}
		want := p
		if n.cmpAbs(p) > 0 {
			want = n
		}
		if len(vals) == 0 {
			if res.why == "" {
				t.Fatalf("gjson selects nothing; the gate reads %s", res.amount)
			}
			return
		}
		if res.why != "" || res.amount.cmpAbs(want) != 0 {
			t.Fatalf("gjson gives %s; the gate %s (%s)", want, res.amount, res.why)
		}
	})
}
