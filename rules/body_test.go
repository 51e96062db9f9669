package rules

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
)

func withReq(r *Request, f func(*Request)) *Request { f(r); return r }

func jsonReq(path, body string) *Request {
	r := req("POST", path, body)
	r.ContentType = "application/json"
	return r
}

// The attack's probes, each a request the old amount reading let through
// under the cap (or accepted as a manifest).
func TestAttackProbes(t *testing.T) {
	sox := loadEngine(t, "testdata/sox-financial.json")
	dual := Requirement{Policy: DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
	const je = "/api/v1/journal-entries"
	tenLines := `{"account":"4000","lines":[` + strings.TrimSuffix(strings.Repeat(`{"amount":900000},`, 10), ",") + `]}`
	tests := []struct {
		name    string
		r       *Request
		outcome Outcome
		reason  string
		amount  string
	}{
		// 1. Key spelling: gjson's paths saw credit 1; Go's encoding/json
		// binds AMOUNT to the field Amount.
		{"AMOUNT upper case beside credit 1", jsonReq(je, `{"account":"4000","AMOUNT":"5000000","credit":"1"}`),
			Pending, string(ReasonAmountOverCap), "5000000"},
		{"AMOUNT upper case, not sent as JSON", req("POST", je, `{"account":"4000","AMOUNT":"5000000","credit":"1"}`),
			Pending, string(ReasonAmountOverCap), "5000000"},
		{"Kelvin sign: kind and \u212aind are one key", jsonReq(je, `{"amount":1,"memo":{"kind":"a","\u212aind":"b"}}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"long s U+017F: lineſ is lines", jsonReq(je, `{"account":"4000","credit":"1","line\u017f":[{"amount":5000000}]}`),
			Pending, string(ReasonAmountOverCap), "5000000"},
		{"long s U+017F raw in UTF-8", jsonReq(je, "{\"credit\":1,\"line\u017f\":[{\"\u017fomething\":0,\"AMOUNT\":5000000}]}"),
			Pending, string(ReasonAmountOverCap), "5000000"},
		{"dotless i: lınes is lines to .NET", jsonReq(je, `{"credit":1,"l\u0131nes":[{"amount":5000000}]}`),
			Pending, string(ReasonAmountOverCap), "5000000"},
		{"amount and AMOUNT in one object", jsonReq(je, `{"amount":1,"AMOUNT":5000000}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"lines and lineſ in one object", jsonReq(je, `{"lines":[{"amount":1}],"line\u017f":[{"amount":5000000}]}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"exact duplicate key", jsonReq(je, `{"amount":1,"amount":5000000}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"duplicate by escape", jsonReq(je, `{"amount":1,"\u0041mount":5000000}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"duplicate in a nested line", jsonReq(je, `{"lines":[{"amount":1},{"amount":2,"Amount":5000000}]}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"duplicate far from any amount", jsonReq(je, `{"amount":1,"meta":{"a":{"b":[{"note":1,"NOTE":2}]}}}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"invalid UTF-8 in a key", jsonReq(je, "{\"amount\":1,\"amount\xff\":5000000}"),
			Deny, string(ReasonAmbiguousBody), ""},
		{"lone surrogate in a key", jsonReq(je, `{"amount":1,"amount\ud800":5000000}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"byte order mark", jsonReq(je, "\ufeff{\"amount\":5000000}"),
			Deny, string(ReasonAmbiguousBody), ""},
		{"trailing second document", jsonReq(je, `{"amount":1} {"amount":5000000}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"NaN", jsonReq(je, `{"amount":NaN}`),
			Deny, string(ReasonAmbiguousBody), ""},
		{"duplicate keys, vendor +json type", withReq(jsonReq(je, `{"amount":1,"AMOUNT":5000000}`), func(r *Request) {
			r.ContentType = "Application/Vnd.Erp+JSON; charset=utf-8"
		}), Deny, string(ReasonAmbiguousBody), ""},
		{"duplicate keys not sent as JSON: unreadable, escalated", req("POST", je, `{"amount":1,"AMOUNT":5000000}`),
			Pending, string(ReasonAmountUnreadable), ""},
		// 2. Structuring inside one entry.
		{"ten lines of 900000", jsonReq(je, tenLines), Pending, string(ReasonAmountOverCap), "9000000"},
		{"balanced entry counts its debits", jsonReq(je, `{"lines":[{"amount":600000},{"amount":600000},{"amount":-600000},{"amount":-600000}]}`),
			Pending, string(ReasonAmountOverCap), "1200000"},
		{"credits split in negative lines", jsonReq(je, `{"lines":[{"amount":1},{"amount":-700000},{"amount":"-700000"}]}`),
			Pending, string(ReasonAmountOverCap), "1400000"},
		{"debit lines split", jsonReq(je, `{"lines":[{"debit":"500000.00"},{"debit":500000.01},{"credit":1000000.01}]}`),
			Pending, string(ReasonAmountOverCap), "1000000.01"},
		{"split lines under the cap", jsonReq(je, `{"lines":[{"debit":400000},{"debit":"600000"},{"credit":1e6}]}`),
			Pending, string(ReasonApprovalRequired), "1000000"},
		{"a line in exponent form", jsonReq(je, `{"lines":[{"amount":9e5},{"amount":0.9E6},{"amount":"900000"}]}`),
			Pending, string(ReasonAmountOverCap), "2700000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := sox.Decide(tt.r)
			if d.Outcome != tt.outcome || string(d.Reason) != tt.reason || d.Amount != tt.amount {
				t.Fatalf("got %v %s amount %q (%s); want %v %s amount %q", d.Outcome, d.Reason, d.Amount, d.Detail, tt.outcome, tt.reason, tt.amount)
			}
			if d.Outcome == Pending && d.Reason != ReasonApprovalRequired && !equalRequirement(d.Requirement, dual) {
				t.Errorf("requirement %+v, want the escalation", d.Requirement)
			}
			if d.Reason == ReasonAmbiguousBody && d.Action != "journal_entry" {
				t.Errorf("action %q", d.Action)
			}
		})
	}
}

func equalRequirement(a, b Requirement) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// 3. The super-linear pattern is refused by check, saying why.
func TestCheckRefusesManyWildcards(t *testing.T) {
	for _, p := range []string{"*a*a*a*a*a*a*a*b*a", "lines.#.a*b*", "a?b?", "*?", `x.*a\*b*`} {
		m := fmt.Sprintf(`{"app_id":"a","actions":{"je":{"approval_policy":"AUTO_APPROVE","amount_cap":1,"amount":[%q],"match":[{"path":"/je"}]}}}`, p)
		_, err := ParseManifest([]byte(m))
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "actions.je.amount[0]" ||
			!strings.Contains(ve.Problems[0].Message, "more than one wildcard") || !strings.Contains(ve.Problems[0].Message, "grows faster than the body") {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"amount*", "*_amount", "lines.#.amo?nt", `a\*\*.*`, "*"} {
		if err := checkAmountPath(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	many := make([]string, maxAmountPaths+1)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("a%d", i))
	}
	m := `{"app_id":"a","actions":{"je":{"approval_policy":"AUTO_APPROVE","amount":[` + strings.Join(many, ",") + `],"match":[{"path":"/je"}]}}}`
	if _, err := ParseManifest([]byte(m)); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 paths: %v", err)
	}
}

// Path semantics: keys folded, wildcards select every key they match,
// indices, '#', and arrays at the end of a path.
func TestAmountPathSelection(t *testing.T) {
	tests := []struct {
		name  string
		paths []string
		body  string
		want  string // "" when unreadable
	}{
		{"wildcard selects every key it matches", []string{"*_amount"}, `{"a_amount":1,"memo":"x","B_AMOUNT":"2"}`, "3"},
		{"wildcard prefix", []string{"amount*"}, `{"amount_net":5,"amount_tax":"1.5"}`, "6.5"},
		{"question mark is one character", []string{"amo?nt"}, `{"amount":5,"amoXXnt":7,"amont":9,"amo\u017fnt":4}`, "9"},
		{"question mark is one folded rune", []string{"amoun?"}, `{"amoun\u212a":5}`, "5"},
		{"wildcard over folded keys", []string{"lines.#.*mount"}, `{"LINES":[{"AMOUNT":3},{"Amount":4}]}`, "7"},
		{"index", []string{"lines.1.amount"}, `{"lines":[{"amount":3},{"amount":4}]}`, "4"},
		{"digits name a key too", []string{"lines.1.amount"}, `{"lines":{"1":{"amount":8}}}`, "8"},
		{"nested arrays", []string{"entries.#.lines.#.amount"}, `{"entries":[{"lines":[{"amount":1},{"amount":2}]},{"lines":[{"amount":3}]}]}`, "6"},
		{"top-level array", []string{"#.amount"}, `[{"amount":1},{"amount":-5},{"amount":2}]`, "5"},
		{"hash on an object selects nothing", []string{"lines.#.amount"}, `{"lines":{"x":{"amount":5}}}`, ""},
		{"escaped dot", []string{`a\.b`}, `{"a.b":5,"a":{"b":7}}`, "5"},
		{"escaped star is literal", []string{`a\*`}, `{"a*":5,"ab":7}`, "5"},
		{"largest path wins", []string{"a", "b"}, `{"a":10,"b":[4,4,4]}`, "12"},
		{"sum of negatives", []string{"b"}, `{"b":[-4,"-4.5",1]}`, "8.5"},
		{"exact sum of many decimals", []string{"b"}, `{"b":[0.1,0.2,0.3,1e-3,"2e2"]}`, "200.601"},
		{"sum beyond uint64", []string{"b"}, `{"b":[18446744073709551615,18446744073709551615,1e-5]}`, "36893488147419103230.00001"},
		{"sum of far exponents", []string{"b"}, `{"b":[1e300,1e-300]}`, "1" + strings.Repeat("0", 300) + "." + strings.Repeat("0", 299) + "1"},
		{"sum beyond the exact range", []string{"b"}, `{"b":[1e1000,1e-1000]}`, ""},
		{"zero is an amount", []string{"a"}, `{"a":0}`, "0"},
		{"negative zero", []string{"a"}, `{"a":-0}`, "0"},
		{"null is none", []string{"a", "b"}, `{"a":null,"b":1}`, "1"},
		{"object at a path", []string{"a"}, `{"a":{"v":1}}`, ""},
		{"object in an array at a path", []string{"a"}, `{"a":[1,{"v":1}]}`, ""},
		{"boolean in a line", []string{"lines.#.amount"}, `{"lines":[{"amount":1},{"amount":false}]}`, ""},
		{"path through a scalar", []string{"a.b"}, `{"a":5}`, ""},
		{"escaped digits in a string", []string{"a"}, `{"a":"\u0035\u0030"}`, "50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := readAmount([]byte(tt.body), compilePaths(t, tt.paths...))
			if tt.want == "" {
				if why == "" {
					t.Errorf("read %s, want unreadable", got)
				}
				return
			}
			if why != "" {
				t.Fatalf("unreadable: %s", why)
			}
			if got.String() != tt.want {
				t.Errorf("amount %s, want %s", got, tt.want)
			}
		})
	}
}

// Bodies in the manner of JSONTestSuite: y_ must be accepted, n_ refused,
// and i_ (what RFC 8259 leaves to implementations) is refused too, since
// parsers differ on it.
func TestScanBodyJudges(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"y_object", `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, true},
		{"y_empty object", `{}`, true},
		{"y_empty array", `[]`, true},
		{"y_top-level string", `"x"`, true},
		{"y_top-level number", `-0.5e+10`, true},
		{"y_top-level null", ` null `, true},
		{"y_whitespace around", " \t\r\n{\"a\" : [ 1 , 2 ] }\n", true},
		{"y_escapes", `{"a":"\"\\\/\b\f\n\r\t\u0000\u00e9\ud83d\ude00"}`, true},
		{"y_raw UTF-8", "{\"caf\u00e9\":\"\U0001F600\"}", true},
		{"y_U+FFFD written out", "{\"\ufffd\":1,\"a\":\"\ufffd\"}", true},
		{"y_keys differing only in a delimiter", `{"line_items":1,"lineitems":2,"line-items":3}`, true},
		{"y_same key in sibling objects", `[{"a":1},{"a":2},{"A":{"a":3}}]`, true},
		{"y_numbers", `[0,-0,1.0,1e6,1E-6,-1.5e+3,123456789012345678901234567890]`, true},
		{"y_128 levels", deep(128), true},
		{"y_many keys", `{` + manyKeys(200, "k") + `}`, true},
		{"y_duplicate-looking across the map threshold", `{` + manyKeys(40, "k") + `,"K40":1}`, true},
		{"n_empty", ``, false},
		{"n_whitespace only", `  `, false},
		{"n_duplicate key", `{"a":1,"a":1}`, false},
		{"n_duplicate key after 16", `{` + manyKeys(40, "k") + `,"K7":1}`, false},
		{"n_duplicate key before 16, found after", `{"k3":0,` + manyKeys(40, "x") + `,"K3":1}`, false},
		{"n_duplicate in a deep object", strings.Repeat(`{"a":`, 100) + `{"x":1,"X":2}` + strings.Repeat("}", 100), false},
		{"n_duplicate Kelvin", `{"k":1,"\u212a":2}`, false},
		{"n_duplicate raw Kelvin", "{\"k\":1,\"\u212a\":2}", false},
		{"n_duplicate long s", `{"s":1,"\u017f":2}`, false},
		{"n_duplicate sigma", "{\"\u03c3\":1,\"\u03c2\":2}", false},
		{"n_duplicate dotted I", "{\"i\":1,\"\u0130\":2}", false},
		{"n_duplicate escaped surrogate pair vs raw", "{\"\U0001F600\":1,\"\\ud83d\\ude00\":2}", false},
		{"n_129 levels", deep(129), false},
		{"n_10000 levels", deep(10000), false},
		{"n_unclosed", `{"a":1`, false},
		{"n_unclosed string", `{"a":"1}`, false},
		{"n_trailing comma", `{"a":1,}`, false},
		{"n_trailing comma in array", `[1,]`, false},
		{"n_leading comma", `[,1]`, false},
		{"n_missing colon", `{"a" 1}`, false},
		{"n_single quotes", `{'a':1}`, false},
		{"n_unquoted key", `{a:1}`, false},
		{"n_trailing garbage", `{"a":1}x`, false},
		{"n_two values", `1 2`, false},
		{"n_BOM", "\ufeff{}", false},
		{"n_invalid UTF-8", "[\"\xff\"]", false},
		{"n_overlong UTF-8", "[\"\xc0\xaf\"]", false},
		{"n_UTF-8 encoded surrogate", "[\"\xed\xa0\x80\"]", false},
		{"n_truncated UTF-8", "[\"\xe2\x82\"]", false},
		{"n_UTF-16", "\x00{\x00}", false},
		{"n_control byte in string", "[\"a\x01\"]", false},
		{"n_raw newline in string", "[\"a\nb\"]", false},
		{"n_bad escape", `["\x41"]`, false},
		{"n_short unicode escape", `["\u12"]`, false},
		{"n_leading zero", `[01]`, false},
		{"n_leading plus", `[+1]`, false},
		{"n_bare dot", `[.5]`, false},
		{"n_dot without digits", `[1.]`, false},
		{"n_exponent without digits", `[1e]`, false},
		{"n_minus alone", `[-]`, false},
		{"n_hex number", `[0x10]`, false},
		{"n_Infinity", `[Infinity]`, false},
		{"n_-Infinity", `[-Infinity]`, false},
		{"n_NaN", `[NaN]`, false},
		{"n_True", `[True]`, false},
		{"n_nul", `[nul]`, false},
		{"n_comment", `{"a":1 /* x */}`, false},
		{"n_NUL byte outside", "{}\x00", false},
		{"n_mismatched brackets", `[}`, false},
		{"n_close without open", `]`, false},
		{"i_lone high surrogate", `["\ud800"]`, false},
		{"i_lone low surrogate", `["\udc00"]`, false},
		{"i_reversed surrogates", `["\udc00\ud800"]`, false},
		{"i_high surrogate then letter", `["\ud800\u0041"]`, false},
		{"i_lone surrogate in a key", `{"\udbff":1}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := scanBody([]byte(tt.body), nil)
			if ok := res.invalid == ""; ok != tt.ok {
				t.Errorf("accepted %v (%s)", ok, res.invalid)
			}
		})
	}
}

func manyKeys(n int, prefix string) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf(`"%s%d":%d`, prefix, i, i)
	}
	return strings.Join(keys, ",")
}

func TestAmbiguousBodyDetail(t *testing.T) {
	sox := loadEngine(t, "testdata/sox-financial.json")
	for _, tt := range []struct{ body, want string }{
		{`{"amount":1,"AMOUNT":5000000}`, `key "AMOUNT" at byte 12 is equal to an earlier key of the same object`},
		{"{\"a\":\"\xff\"}", "not valid UTF-8 at byte 6"},
		{`{"a":1}{}`, `not valid JSON: '{' at byte 7 where the end of the body (one JSON value only) was expected`},
		{deepBody(200), "nests deeper than 128 levels"},
		{`["\ud800"]`, `a lone surrogate escape (\ud800) at byte 2 is not a character`},
	} {
		d := sox.Decide(jsonReq("/api/v1/journal-entries", tt.body))
		if d.Reason != ReasonAmbiguousBody || !strings.Contains(d.Detail, tt.want) || !strings.Contains(d.Detail, `sent as "application/json"`) {
			t.Errorf("%q: %s %s", tt.body, d.Reason, d.Detail)
		}
	}
}

func deepBody(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }

// The body is judged for every request that could be forwarded, whatever
// its action; refusals by policy keep their own reason.
func TestAmbiguousBodyOrder(t *testing.T) {
	dec := loadEngine(t, "testdata/decide.yaml")
	dup := `{"memo":1,"MEMO":2}`
	for _, tt := range []struct {
		name   string
		r      *Request
		reason string
	}{
		{"action without amount", jsonReq("/multi", dup), string(ReasonAmbiguousBody)},
		{"roles_allowed refusal keeps its reason", withReq(jsonReq("/recon/1", dup), func(r *Request) { r.Method = "GET" }), string(ReasonRoleNotAllowed)},
		{"record_and_allow", jsonReq("/nowhere", dup), string(ReasonAmbiguousBody)},
		{"record_and_allow, fine body", jsonReq("/nowhere", `{"memo":1}`), string(ReasonRecordAndAllow)},
		{"denylisted keeps its reason", jsonReq("/purge", dup), string(ReasonDenylisted)},
		{"policy deny keeps its reason", jsonReq("/frozen", dup), string(ReasonPolicyDeny)},
		{"empty JSON body is no body", jsonReq("/multi", ""), string(ReasonApprovalRequired)},
		{"not JSON: not judged", withReq(req("POST", "/multi", dup), func(r *Request) { r.ContentType = "text/plain" }), string(ReasonApprovalRequired)},
		{"form: not judged", withReq(req("POST", "/multi", "a=1&a=2"), func(r *Request) { r.ContentType = "application/x-www-form-urlencoded" }), string(ReasonApprovalRequired)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if d := dec.Decide(tt.r); string(d.Reason) != tt.reason {
				t.Errorf("%s (%s), want %s", d.Reason, d.Detail, tt.reason)
			}
		})
	}
}

func TestJSONContentTypes(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "APPLICATION/JSON": true, "application/json; charset=utf-8": true,
		" application/json ;charset=utf-16": true, "application/problem+json": true, "application/vnd.api+JSON": true,
		"application/merge-patch+json;x=1": true, "text/plain": false, "": false, "application/jsonx": false,
		"+json": false, "application/x-www-form-urlencoded": false, "multipart/form-data; boundary=x": false,
		"application/json-seq": false, "text/json": false,
	} {
		r := &Request{Body: []byte("{}"), ContentType: ct}
		if got := isJSONBody(r); got != want {
			t.Errorf("%q: %v", ct, got)
		}
	}
}

// Every pair of runes that Go's encoding/json, strings.EqualFold or a
// simple case mapping take for one letter folds to one representative.
func TestFoldCoversEveryCaseRelation(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		f := foldRune(r)
		for _, o := range [...]rune{unicode.SimpleFold(r), unicode.ToUpper(r), unicode.ToLower(r), unicode.ToTitle(r)} {
			if foldRune(o) != f {
				t.Fatalf("%U folds to %U but its relative %U to %U", r, f, o, foldRune(o))
			}
		}
		if foldRune(f) != f {
			t.Fatalf("%U: representative %U is not its own", r, f)
		}
		if len(string(f)) > len(string(r)) {
			t.Fatalf("%U: representative %U is longer", r, f)
		}
	}
	for _, tt := range [][2]rune{{'K', 0x212a}, {'s', 0x17f}, {'i', 0x130}, {'I', 0x131}, {0x3c3, 0x3c2}, {0xdf, 0x1e9e}} {
		if foldRune(tt[0]) != foldRune(tt[1]) {
			t.Errorf("%U and %U fold apart", tt[0], tt[1])
		}
	}
}

// BenchmarkScanShapes: reading is linear in the body. Bodies built against
// the scanner (many keys, long keys matched by a wildcard, deep nesting,
// far exponents) at 256 KiB and 1 MiB; make bench prints ns per byte, which
// should not grow with the size (measured, not asserted: timing belongs in
// benchmarks).
func BenchmarkScanShapes(b *testing.B) {
	paths := compilePaths(b, "*a", "lines.#.amount", "x*", "a?", "b", "#.x.#.y")
	shapes := map[string]func(n int) string{
		"long keys for a wildcard": func(n int) string {
			k := strings.Repeat("a", 1000)
			var b strings.Builder
			b.WriteString("{")
			for i := 0; b.Len() < n; i++ {
				fmt.Fprintf(&b, `"%s%d":1,`, k, i)
			}
			return strings.TrimSuffix(b.String(), ",") + "}"
		},
		"many small keys": func(n int) string {
			var b strings.Builder
			b.WriteString("{")
			for i := 0; b.Len() < n; i++ {
				fmt.Fprintf(&b, `"k%d":%d,`, i, i)
			}
			return strings.TrimSuffix(b.String(), ",") + "}"
		},
		"many lines": func(n int) string {
			var b strings.Builder
			b.WriteString(`{"lines":[`)
			for b.Len() < n {
				b.WriteString(`{"amount":"900000.01"},`)
			}
			return strings.TrimSuffix(b.String(), ",") + "]}"
		},
		"far exponents": func(n int) string {
			var b strings.Builder
			b.WriteString(`{"b":[`)
			for i := 0; b.Len() < n; i++ {
				fmt.Fprintf(&b, "1e%d,", i%2001-1000)
			}
			return strings.TrimSuffix(b.String(), ",") + "]}"
		},
		"deep and wide": func(n int) string {
			var b strings.Builder
			b.WriteString("[")
			for b.Len() < n {
				b.WriteString(deepBody(120) + ",")
			}
			return strings.TrimSuffix(b.String(), ",") + "]"
		},
	}
	for name, shape := range shapes {
		for _, size := range []int{256 << 10, 1 << 20} {
			body := []byte(shape(size))
			b.Run(fmt.Sprintf("%s/%dKiB", name, size>>10), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					scanBody(body, paths)
				}
			})
		}
	}
}
