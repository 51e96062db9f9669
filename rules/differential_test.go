package rules

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

// The gate's amount reading is checked against real ERP-side parsers, the
// way the canonical encoder is checked against an independent one: for
// every body, the gate refuses it (ambiguous_body), or holds it as of
// unreadable amount (the escalation applies), or reads an amount no smaller
// than what any of these ERPs would store. The ERPs:
//
//   - go-unmarshal: Go's encoding/json, json.Unmarshal into a struct with
//     Amount, Credit, Debit and Lines fields (keys bound case-insensitively,
//     the last of repeated keys winning);
//   - go-decoder: the same through json.NewDecoder(body).Decode, as most Go
//     handlers read a request, which stops after the first value;
//   - python: Python's json module on the raw bytes (testdata/erp_parse.py).

// paths the sox manifest's journal_entry reads, which the ERP structs mirror.
const diffPath = "/api/v1/journal-entries"

// erpMoney is an ERP's money field: a JSON number or a numeric string, kept
// exactly.
type erpMoney struct{ r *big.Rat }

func (m *erpMoney) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return fmt.Errorf("not a number: %q", s)
	}
	m.r = r
	return nil
}

type erpLine struct {
	Account string
	Amount  erpMoney
	Debit   erpMoney
	Credit  erpMoney
}

type erpEntry struct {
	Account string
	Memo    string
	Amount  erpMoney
	Credit  erpMoney
	Debit   erpMoney
	Lines   []erpLine
}

// amount is the gate's rule applied to what the ERP bound.
func (e *erpEntry) amount() *big.Rat {
	best := new(big.Rat)
	for _, m := range []erpMoney{e.Amount, e.Credit, e.Debit} {
		if m.r != nil && new(big.Rat).Abs(m.r).Cmp(best) > 0 {
			best = new(big.Rat).Abs(m.r)
		}
	}
	for _, field := range []func(l *erpLine) erpMoney{
		func(l *erpLine) erpMoney { return l.Amount },
		func(l *erpLine) erpMoney { return l.Debit },
		func(l *erpLine) erpMoney { return l.Credit },
	} {
		pos, neg := new(big.Rat), new(big.Rat)
		for i := range e.Lines {
			m := field(&e.Lines[i])
			if m.r == nil {
				continue
			}
			if m.r.Sign() > 0 {
				pos.Add(pos, m.r)
			} else {
				neg.Sub(neg, m.r)
			}
		}
		for _, s := range []*big.Rat{pos, neg} {
			if s.Cmp(best) > 0 {
				best = s
			}
		}
	}
	return best
}

// erpRead is one ERP's reading of a body: ok false when it refuses it.
type erpRead struct {
	ok     bool
	inf    bool
	amount *big.Rat
	err    string
}

func goUnmarshal(body []byte) erpRead {
	var e erpEntry
	if err := json.Unmarshal(body, &e); err != nil {
		return erpRead{err: err.Error()}
	}
	return erpRead{ok: true, amount: e.amount()}
}

func goDecoder(body []byte) erpRead {
	var e erpEntry
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&e); err != nil {
		return erpRead{err: err.Error()}
	}
	return erpRead{ok: true, amount: e.amount()}
}

// pythonReads runs testdata/erp_parse.py over every body at once.
func pythonReads(t *testing.T, bodies [][]byte) []erpRead {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("the differential test needs python3: %v", err)
	}
	in := make([]string, len(bodies))
	for i, b := range bodies {
		in[i] = base64.StdEncoding.EncodeToString(b)
	}
	stdin, _ := json.Marshal(in)
	cmd := exec.Command(py, "-I", "testdata/erp_parse.py")
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("erp_parse.py: %v\n%s", err, stderr.String())
	}
	var res []struct {
		OK     bool   `json:"ok"`
		Amount string `json:"amount"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(bodies) {
		t.Fatalf("erp_parse.py answered %d results for %d bodies: %v", len(res), len(bodies), err)
	}
	reads := make([]erpRead, len(res))
	for i, r := range res {
		switch {
		case !r.OK:
			reads[i] = erpRead{err: r.Error}
		case r.Amount == "inf":
			reads[i] = erpRead{ok: true, inf: true}
		default:
			a, ok := new(big.Rat).SetString(r.Amount)
			if !ok {
				t.Fatalf("erp_parse.py amount %q", r.Amount)
			}
			reads[i] = erpRead{ok: true, amount: a}
		}
	}
	return reads
}

// gateRead is the gate's verdict on body sent to the journal entry
// endpoint: refused, unreadable, or the amount read.
type gateRead struct {
	refused, unreadable bool
	amount              *big.Rat
	d                   Decision
}

func readThroughGate(e *Engine, body []byte, contentType string) gateRead {
	r := &Request{Method: "POST", Scheme: "https", Host: "erp.example.com", Path: diffPath, Body: body,
		ContentType: contentType, Time: monday}
	d := e.Decide(r)
	g := gateRead{d: d}
	switch d.Reason {
	case ReasonAmbiguousBody:
		g.refused = true
	case ReasonAmountUnreadable:
		g.unreadable = true
	default:
		a, ok := new(big.Rat).SetString(d.Amount)
		if !ok {
			panic(fmt.Sprintf("decision %s with amount %q", d.Reason, d.Amount))
		}
		g.amount = a
	}
	return g
}

// checkAgainst fails unless the gate's reading is safe against erp's.
func checkAgainst(t *testing.T, name string, g gateRead, erp erpRead) {
	t.Helper()
	if !erp.ok || g.refused || g.unreadable {
		return
	}
	if erp.inf {
		t.Errorf("%s stores an infinite amount; the gate read %s (%s)", name, g.amount.FloatString(6), g.d.Detail)
		return
	}
	if g.amount.Cmp(erp.amount) < 0 {
		t.Errorf("%s stores %s, more than the gate's %s (%s %s)", name, erp.amount.RatString(), g.amount.RatString(), g.d.Reason, g.d.Detail)
	}
}

// outcome says, for the test log, what happened.
func (g gateRead) String() string {
	switch {
	case g.refused:
		return "refused"
	case g.unreadable:
		return "unreadable"
	}
	return g.amount.RatString()
}

func (r erpRead) String() string {
	switch {
	case !r.ok:
		return "rejects"
	case r.inf:
		return "inf"
	}
	return r.amount.RatString()
}

// diffBodies are the differential table: the attack's probes, and bodies in
// the manner of JSONTestSuite (y_ valid, n_ invalid, i_ left to the
// implementation) aimed at what parsers disagree on.
var diffBodies = []struct {
	name string
	body string
	// gate, when set, is what the gate must do: "refused", "unreadable" or
	// the amount.
	gate string
}{
	// The attack.
	{"probe AMOUNT beside credit 1", `{"account":"4000","AMOUNT":"5000000","credit":"1"}`, "5000000"},
	{"probe lineſ is lines", `{"account":"4000","credit":"1","line\u017f":[{"amount":5000000}]}`, "5000000"},
	{"probe raw lineſ", "{\"credit\":1,\"line\u017f\":[{\"AMOUNT\":5000000}]}", "5000000"},
	{"probe ten lines of 900000", `{"lines":[` + strings.TrimSuffix(strings.Repeat(`{"amount":900000},`, 10), ",") + `]}`, "9000000"},
	{"probe balanced split entry", `{"lines":[{"debit":600000},{"debit":600000},{"credit":600000},{"credit":600000}]}`, "1200000"},
	{"probe signed split entry", `{"lines":[{"amount":"600000"},{"amount":600000},{"amount":-1200000}]}`, "1200000"},
	// Keys equal after folding.
	{"n_duplicate amount", `{"amount":1,"amount":5000000}`, "refused"},
	{"n_duplicate AMOUNT", `{"amount":1,"AMOUNT":5000000}`, "refused"},
	{"n_duplicate Amount escaped", `{"amount":1,"\u0041mount":5000000}`, "refused"},
	{"n_duplicate lines and lineſ", `{"lines":[{"amount":1}],"line\u017f":[{"amount":5000000}]}`, "refused"},
	{"n_duplicate lines and LINES", `{"lines":[{"amount":1}],"LINES":[{"amount":5000000}]}`, "refused"},
	{"n_duplicate in a nested line", `{"lines":[{"amount":1},{"debit":2,"DEBIT":5000000}]}`, "refused"},
	{"n_duplicate deep in a memo", `{"amount":1,"memo":{"x":[{"y":{"z":1,"Z":2}}]}}`, "refused"},
	{"n_duplicate Kelvin sign", `{"amount":1,"memo":{"kind":1,"\u212aind":2}}`, "refused"},
	{"n_duplicate raw Kelvin sign", "{\"amount\":1,\"memo\":{\"kind\":1,\"\u212aind\":2}}", "refused"},
	{"n_duplicate dotless i in credit", "{\"credit\":1,\"cred\u0131t\":5000000}", "refused"},
	{"n_duplicate DeBiT", `{"debit":1,"DeBiT":5000000}`, "refused"},
	// Case-folded keys alone: bound by Go, ignored by Python.
	{"y_Amount", `{"Amount":5000000}`, "5000000"},
	{"y_CREDIT", `{"CREDIT":"-5000000"}`, "5000000"},
	{"y_Lines with AMOUNT", `{"Lines":[{"AMOUNT":700000},{"Amount":700000}]}`, "1400000"},
	{"y_LiNeS and dEbIt", `{"LiNeS":[{"dEbIt":3}]}`, "3"},
	{"y_lınes dotless i", `{"l\u0131nes":[{"amount":5000000}]}`, "5000000"},
	{"y_unrelated Kelvin key", `{"\u212a":1,"amount":2}`, "2"},
	// Strings.
	{"n_invalid UTF-8 in a key", "{\"amount\":1,\"amount\xff\":5000000}", "refused"},
	{"n_invalid UTF-8 in two keys", "{\"a\xfe\":1,\"a\xff\":5000000}", "refused"},
	{"n_invalid UTF-8 in a value", "{\"amount\":1,\"memo\":\"\xc3\"}", "refused"},
	{"n_overlong slash", "{\"amount\":1,\"memo\":\"\xc0\xaf\"}", "refused"},
	{"n_UTF-8 surrogate", "{\"amount\":1,\"memo\":\"\xed\xa0\x80\"}", "refused"},
	{"i_lone surrogate key", `{"amount":1,"amount\ud800":5000000}`, "refused"},
	{"i_two lone surrogates Go reads as one key", `{"a\ud800":1,"a\udc00":2,"amount":3}`, "refused"},
	{"i_lone surrogate value", `{"amount":1,"memo":"\udfff"}`, "refused"},
	{"y_surrogate pair", `{"amount":1,"memo":"\ud83d\ude00"}`, "1"},
	{"y_escaped amount digits", `{"amount":"\u0035\u0030\u0030"}`, "500"},
	{"n_control byte in a string", "{\"amount\":1,\"memo\":\"a\tb\"}", "refused"},
	// Numbers.
	{"y_1e6", `{"amount":1e6}`, "1000000"},
	{"y_1E+6 string", `{"amount":"1E+6"}`, "1000000"},
	{"y_-0", `{"amount":-0}`, "0"},
	{"y_1.0", `{"amount":1.0}`, "1"},
	{"y_tiny", `{"amount":1e-7}`, "1/10000000"},
	{"y_big integer", `{"amount":123456789012345678901234567890}`, "123456789012345678901234567890"},
	{"y_many decimals", `{"amount":1000000.0000000000000000001}`, "10000000000000000000000001/10000000000000000000"},
	{"y_spaces in a string", `{"amount":" 5000000 "}`, "5000000"},
	{"y_plus in a string", `{"amount":"+5000000"}`, "5000000"},
	{"n_leading zero", `{"amount":05000000}`, "refused"},
	{"n_plus number", `{"amount":+5000000}`, "refused"},
	{"n_NaN", `{"amount":NaN}`, "refused"},
	{"n_Infinity", `{"amount":Infinity}`, "refused"},
	{"n_-Infinity", `{"amount":-Infinity}`, "refused"},
	{"n_hex", `{"amount":0x4C4B40}`, "refused"},
	{"y_Infinity string", `{"amount":"Infinity"}`, "unreadable"},
	{"y_underscores string", `{"amount":"5_000_000"}`, "unreadable"},
	{"y_fullwidth digits string", `{"amount":"\uff15\uff10"}`, "unreadable"},
	{"y_fraction string", `{"amount":"10000000/3"}`, "unreadable"},
	{"y_huge exponent", `{"amount":1e400}`, "1" + strings.Repeat("0", 400)},
	{"y_beyond the exact range", `{"amount":1e1001}`, "unreadable"},
	{"y_boolean", `{"amount":true}`, "unreadable"},
	{"y_array amount", `{"amount":[5000000]}`, "5000000"},
	{"y_null amount", `{"amount":null,"credit":2}`, "2"},
	// Structure.
	{"n_BOM", "\ufeff{\"amount\":5000000}", "refused"},
	{"n_UTF-16LE", "{\x00\"\x00a\x00m\x00o\x00u\x00n\x00t\x00\"\x00:\x005\x00}\x00", "refused"},
	{"n_UTF-16BE with BOM", "\xfe\xff\x00{\x00\"\x00a\x00\"\x00:\x005\x00}", "refused"},
	{"n_trailing garbage", `{"amount":1}x`, "refused"},
	{"n_trailing second entry", `{"amount":1}{"amount":5000000}`, "refused"},
	{"n_trailing comma", `{"amount":1,}`, "refused"},
	{"n_unclosed", `{"amount":5000000`, "refused"},
	{"n_NUL after", "{\"amount\":1}\x00", "refused"},
	{"n_non-breaking space", "{\"amount\":1,\u00a0\"credit\":5000000}", "refused"},
	{"n_comment", `{"amount":1 /*,"credit":5000000*/}`, "refused"},
	{"n_single quotes", `{'amount':5000000}`, "refused"},
	{"y_whitespace", " \r\n\t{ \"amount\" : 5 } \n", "5"},
	{"y_deep memo", `{"amount":1,"memo":` + strings.Repeat("[", 126) + strings.Repeat("]", 126) + `}`, "1"},
	{"n_deep memo", `{"amount":1,"memo":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "refused"},
	{"n_very deep", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), "refused"},
	{"y_top-level array", `[{"amount":5000000}]`, "unreadable"},
	{"y_top-level string", `"5000000"`, "unreadable"},
	{"y_lines is an object", `{"lines":{"amount":5000000}}`, "unreadable"},
	{"y_empty object", `{}`, "unreadable"},
	{"y_keys differing in a delimiter", `{"amount":1,"amount_":2,"am-ount":3}`, "1"},
}

func TestAmountAgainstERPParsers(t *testing.T) {
	sox := loadEngine(t, "testdata/sox-financial.json")
	bodies := make([][]byte, len(diffBodies))
	for i, c := range diffBodies {
		bodies[i] = []byte(c.body)
	}
	py := pythonReads(t, bodies)
	for i, c := range diffBodies {
		t.Run(c.name, func(t *testing.T) {
			g := readThroughGate(sox, bodies[i], "application/json")
			gu, gd := goUnmarshal(bodies[i]), goDecoder(bodies[i])
			t.Logf("gate %s; go-unmarshal %s; go-decoder %s; python %s", g, gu, gd, py[i])
			// Sent without a JSON Content-Type the body is not refused, but
			// an ERP may parse it all the same: unreadable holds it.
			plain := readThroughGate(sox, bodies[i], "text/plain")
			if plain.refused || g.refused && !plain.unreadable || !g.refused && plain.String() != g.String() {
				t.Errorf("as text/plain: %s; as JSON: %s", plain, g)
			}
			checkAgainst(t, "go-unmarshal", g, gu)
			checkAgainst(t, "go-decoder", g, gd)
			checkAgainst(t, "python", g, py[i])
			if c.gate != "" && g.String() != c.gate {
				want, ok := new(big.Rat).SetString(c.gate)
				if !ok || g.amount == nil || g.amount.Cmp(want) != 0 {
					t.Errorf("gate %s, want %s (%s)", g, c.gate, g.d.Detail)
				}
			}
		})
	}
	// Where the ERPs disagree with each other the gate must refuse or hold:
	// the table has such bodies, or it tests nothing.
	disagreements := 0
	for i := range diffBodies {
		gu, gd := goUnmarshal(bodies[i]), goDecoder(bodies[i])
		if gu.String() != gd.String() || gu.String() != py[i].String() {
			disagreements++
		}
	}
	if disagreements < 10 {
		t.Errorf("only %d bodies on which the ERP parsers disagree", disagreements)
	}
}

// FuzzAmountAgainstEncodingJSON holds the differential property for any
// body against Go's encoding/json, and that the gate accepts nothing
// encoding/json finds invalid.
func FuzzAmountAgainstEncodingJSON(f *testing.F) {
	for _, c := range diffBodies {
		f.Add([]byte(c.body))
	}
	sox := loadEngine(f, "testdata/sox-financial.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		gu, gd := goUnmarshal(body), goDecoder(body)
		g := readThroughGate(sox, body, "application/json")
		checkAgainst(t, "go-unmarshal", g, gu)
		checkAgainst(t, "go-decoder", g, gd)
		plain := readThroughGate(sox, body, "")
		checkAgainst(t, "go-unmarshal, no Content-Type", plain, gu)
		checkAgainst(t, "go-decoder, no Content-Type", plain, gd)
		if plain.refused {
			t.Fatal("refused without a JSON Content-Type")
		}
		res := scanBody(body, nil)
		if res.invalid == "" && (!json.Valid(body) || !utf8.Valid(body)) {
			t.Fatalf("the gate accepts a body encoding/json finds invalid")
		}
		if g.refused != (res.invalid != "" && len(body) > 0) { // an empty body is no body
			t.Fatalf("refused %v, scan says %q", g.refused, res.invalid)
		}
		if res.invalid == "" {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			var doc any
			if err := dec.Decode(&doc); err != nil || dec.Decode(&doc) != io.EOF {
				t.Fatalf("encoding/json cannot decode an accepted body: %v", err)
			}
		}
		if res.invalid != "" && len(body) > 0 && json.Valid(body) && utf8.Valid(body) && !strings.Contains(res.invalid, "equal to an earlier key") &&
			!strings.Contains(res.invalid, "lone surrogate") && !strings.Contains(res.invalid, "nests deeper") {
			t.Fatalf("valid UTF-8 JSON refused for another reason: %s", res.invalid)
		}
	})
}
