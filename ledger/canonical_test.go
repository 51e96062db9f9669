package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"

	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// The oracle: how records were encoded before the direct encoder, kept
// verbatim so that every test here can demand the same bytes.
// jcs.Transform(json.Marshal(v)) is RFC 8785 by an independent hand.

// canonical is the oracle's RFC 8785: encoding/json output differs from JCS
// (HTML escaping, number forms, key order), so it is re-run through
// jcs.Transform.
func canonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// checkInt, checkNumber and intPattern are the former value checks.
func checkInt(path string, n int64) error {
	if n > MaxInt || n < -MaxInt {
		return fmt.Errorf("%w: %s: integer %d outside ±(2^53-1) (use a decimal string)", ErrInvalidEntry, path, n)
	}
	return nil
}

var intPattern = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

func checkNumber(path string, n json.Number) error {
	s := string(n)
	if !intPattern.MatchString(s) {
		return fmt.Errorf("%w: %s: %q is not an integer", ErrFloat, path, s)
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s: integer %s outside ±(2^53-1)", ErrInvalidEntry, path, s)
	}
	return checkInt(path, i)
}

// referenceEncodeData is the former encodeData.
func referenceEncodeData(data map[string]any) ([]byte, error) {
	if data == nil {
		return []byte("{}"), nil
	}
	if err := referenceCheckValue("data", data, 0); err != nil {
		return nil, err
	}
	b, err := canonical(data)
	if err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrInvalidEntry, err)
	}
	return b, nil
}

// referenceCheckValue is the former checkValue.
func referenceCheckValue(path string, v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: %s: nested deeper than %d", ErrInvalidEntry, path, maxDepth)
	}
	switch x := v.(type) {
	case nil, bool:
		return nil
	case string:
		return checkString(path, x)
	case float32, float64:
		return fmt.Errorf("%w: %s (use a decimal string)", ErrFloat, path)
	case int:
		return checkInt(path, int64(x))
	case int8, int16, int32, uint8, uint16, uint32:
		return nil
	case int64:
		return checkInt(path, x)
	case uint:
		return referenceCheckUint(path, uint64(x))
	case uint64:
		return referenceCheckUint(path, x)
	case json.Number:
		return checkNumber(path, x)
	case []string:
		for i, s := range x {
			if err := checkString(fmt.Sprintf("%s[%d]", path, i), s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		for i, e := range x {
			if err := referenceCheckValue(fmt.Sprintf("%s[%d]", path, i), e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for k, e := range x {
			p := path + "." + k
			if !utf8.ValidString(k) {
				return fmt.Errorf("%w: %s: key is not valid UTF-8", ErrInvalidEntry, path)
			}
			if err := referenceCheckValue(p, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: %s: unsupported type %T", ErrInvalidEntry, path, v)
	}
}

func referenceCheckUint(path string, n uint64) error {
	if n > MaxInt {
		return fmt.Errorf("%w: %s: integer %d above 2^53-1 (use a decimal string)", ErrInvalidEntry, path, n)
	}
	return nil
}

// referenceRecord is the former wire type: Record with data already
// canonical, hash omitted when empty.
type referenceRecord struct {
	V          int             `json:"v"`
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"`
	Kind       string          `json:"kind"`
	App        string          `json:"app"`
	Action     string          `json:"action"`
	Decision   string          `json:"decision"`
	Reason     string          `json:"reason"`
	ApprovalID string          `json:"approval_id"`
	Digest     string          `json:"digest"`
	Policy     string          `json:"policy"`
	Data       json.RawMessage `json:"data"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash,omitempty"`
}

// referenceEncodeRecord is the former encodeRecord.
func referenceEncodeRecord(rec *Record, data []byte) ([]byte, error) {
	w := referenceRecord{
		V: rec.V, Seq: rec.Seq, Time: rec.Time, Kind: string(rec.Kind), App: rec.App,
		Action: rec.Action, Decision: string(rec.Decision), Reason: string(rec.Reason),
		ApprovalID: rec.ApprovalID, Digest: rec.Digest, Policy: rec.Policy,
		Data: data, Prev: rec.Prev,
	}
	body, err := canonical(w)
	if err != nil {
		return nil, fmt.Errorf("canonicalize record %d: %w", rec.Seq, err)
	}
	if w.Hash, err = verifier.ComputeHash(rec.Prev, body); err != nil {
		return nil, fmt.Errorf("hash record %d: %w", rec.Seq, err)
	}
	full, err := canonical(w)
	if err != nil {
		return nil, fmt.Errorf("canonicalize record %d: %w", rec.Seq, err)
	}
	rec.Hash = w.Hash
	return full, nil
}

// checkSameEncoding asserts that the direct encoder and the oracle agree on
// data: the same bytes, or both a refusal with the same sentinel. exact also
// demands the same message, which the oracle only gives deterministically
// when at most one value is bad (it walks maps in random order).
func checkSameEncoding(t *testing.T, data map[string]any, exact bool) []byte {
	t.Helper()
	want, wantErr := referenceEncodeData(data)
	got, gotErr := appendCanonical(nil, "data", data)
	switch {
	case wantErr == nil && gotErr == nil:
		if !bytes.Equal(got, want) {
			t.Fatalf("encoding differs from jcs.Transform(json.Marshal(v)):\n got %q\nwant %q", got, want)
		}
		return got
	case wantErr == nil:
		t.Fatalf("refused %q: %v", want, gotErr)
	case gotErr == nil:
		t.Fatalf("accepted (%q), oracle refuses: %v", got, wantErr)
	}
	if !errors.Is(gotErr, ErrFloat) && !errors.Is(gotErr, ErrInvalidEntry) {
		t.Fatalf("error %v wraps neither ErrFloat nor ErrInvalidEntry", gotErr)
	}
	if exact && gotErr.Error() != wantErr.Error() {
		t.Fatalf("error differs:\n got %v\nwant %v", gotErr, wantErr)
	}
	return nil
}

// TestAppendCanonicalVectors pins the encoder to literal RFC 8785 output, so
// that it and the oracle cannot be wrong together.
func TestAppendCanonicalVectors(t *testing.T) {
	tests := []struct {
		name string
		data map[string]any
		want string
	}{
		{
			// RFC 8785 §3.2.3, the sorting example.
			name: "rfc 8785 key order",
			data: map[string]any{
				"\u20ac": "Euro Sign", "\r": "Carriage Return",
				"\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
				"\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
				"\u00f6": "Latin Small Letter O With Diaeresis",
			},
			want: "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\",\"\U0001f600\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{
			// RFC 8785 §3.2.2.2: "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/"
			name: "rfc 8785 string",
			data: map[string]any{"s": "€$\x0f\nA'B\"\\\\\"/"},
			want: `{"s":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			name: "escapes",
			data: map[string]any{"s": "\x00\x01\b\t\n\v\f\r\x1f\x7f <>& \u2028\u2029 \ufffd"},
			want: `{"s":"\u0000\u0001\b\t\n\u000b\f\r\u001f` + "\x7f <>& \u2028\u2029 \ufffd\"}",
		},
		{
			name: "utf-16 order where utf-8 order differs",
			data: map[string]any{"\uffff": 1, "\U00010000": 2, "\ue000": 3, "\ud7ff": 4, "\U0010ffff": 5},
			want: "{\"\ud7ff\":4,\"\U00010000\":2,\"\U0010ffff\":5,\"\ue000\":3,\"\uffff\":1}",
		},
		{
			name: "prefix keys",
			data: map[string]any{"ab": 1, "a": 2, "": 3, "b": 4},
			want: `{"":3,"a":2,"ab":1,"b":4}`,
		},
		{
			name: "integers",
			data: map[string]any{
				"a": MaxInt, "b": -MaxInt, "c": int8(-128), "d": uint8(255), "e": uint32(math.MaxUint32),
				"f": int32(math.MinInt32), "g": uint64(MaxInt), "h": json.Number("-0"), "i": json.Number("-9007199254740991"), "j": 0,
			},
			want: `{"a":9007199254740991,"b":-9007199254740991,"c":-128,"d":255,"e":4294967295,"f":-2147483648,"g":9007199254740991,"h":0,"i":-9007199254740991,"j":0}`,
		},
		{
			name: "nesting and nil containers",
			data: map[string]any{
				"m": map[string]any{"z": []any{}, "y": map[string]any{}, "x": []string{}},
				"n": []any{nil, true, false, []string{"b", "a"}, map[string]any{"k": nil}},
				"o": []string(nil), "p": []any(nil), "q": map[string]any(nil),
			},
			want: `{"m":{"x":[],"y":{},"z":[]},"n":[null,true,false,["b","a"],{"k":null}],"o":null,"p":null,"q":null}`,
		},
		{name: "empty", data: map[string]any{}, want: `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkSameEncoding(t, tt.data, true); string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAppendCanonicalRefuses(t *testing.T) {
	deep := func(n int, leaf any) map[string]any {
		top := map[string]any{}
		m := top
		for range n - 1 {
			next := map[string]any{}
			m["x"] = next
			m = next
		}
		m["x"] = leaf
		return top
	}
	tests := []struct {
		name string
		data map[string]any
		want error
		msg  string
	}{
		{"float", map[string]any{"a": 1.5}, ErrFloat, "floating-point value in ledger data: data.a (use a decimal string)"},
		{"float32 in array", map[string]any{"a": []any{1, float32(2)}}, ErrFloat, "floating-point value in ledger data: data.a[1] (use a decimal string)"},
		{"number fraction", map[string]any{"a": json.Number("1.0")}, ErrFloat, `floating-point value in ledger data: data.a: "1.0" is not an integer`},
		{"number leading zero", map[string]any{"a": json.Number("01")}, ErrFloat, `floating-point value in ledger data: data.a: "01" is not an integer`},
		{"number empty", map[string]any{"a": json.Number("")}, ErrFloat, `floating-point value in ledger data: data.a: "" is not an integer`},
		{"number too big", map[string]any{"a": json.Number("9007199254740992")}, ErrInvalidEntry, "invalid ledger entry: data.a: integer 9007199254740992 outside ±(2^53-1) (use a decimal string)"},
		{"number beyond int64", map[string]any{"a": json.Number("-99999999999999999999")}, ErrInvalidEntry, "invalid ledger entry: data.a: integer -99999999999999999999 outside ±(2^53-1)"},
		{"int too small", map[string]any{"a": map[string]any{"b": -MaxInt - 1}}, ErrInvalidEntry, "invalid ledger entry: data.a.b: integer -9007199254740992 outside ±(2^53-1) (use a decimal string)"},
		{"int64 too big", map[string]any{"a": int64(math.MaxInt64)}, ErrInvalidEntry, "invalid ledger entry: data.a: integer 9223372036854775807 outside ±(2^53-1) (use a decimal string)"},
		{"uint too big", map[string]any{"a": uint(MaxInt + 1)}, ErrInvalidEntry, "invalid ledger entry: data.a: integer 9007199254740992 above 2^53-1 (use a decimal string)"},
		{"uint64 too big", map[string]any{"a": uint64(math.MaxUint64)}, ErrInvalidEntry, "invalid ledger entry: data.a: integer 18446744073709551615 above 2^53-1 (use a decimal string)"},
		{"invalid utf-8", map[string]any{"a": []string{"ok", "\xc3"}}, ErrInvalidEntry, "invalid ledger entry: data.a[1]: not valid UTF-8"},
		{"encoded surrogate", map[string]any{"a": "\xed\xa0\x80"}, ErrInvalidEntry, "invalid ledger entry: data.a: not valid UTF-8"},
		{"invalid key", map[string]any{"a": map[string]any{"\xff": 1}}, ErrInvalidEntry, "invalid ledger entry: data.a: key is not valid UTF-8"},
		{"unsupported", map[string]any{"a": []int{1}}, ErrInvalidEntry, "invalid ledger entry: data.a: unsupported type []int"},
		{"bytes", map[string]any{"a": []byte("x")}, ErrInvalidEntry, "invalid ledger entry: data.a: unsupported type []uint8"},
		{"too deep", deep(maxDepth+1, nil), ErrInvalidEntry, "invalid ledger entry: data" + strings.Repeat(".x", maxDepth+1) + ": nested deeper than 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkSameEncoding(t, tt.data, true)
			_, err := appendCanonical(nil, "data", tt.data)
			if !errors.Is(err, tt.want) || err.Error() != tt.msg {
				t.Fatalf("err = %v\nwant %v: %s", err, tt.want, tt.msg)
			}
		})
	}
	// The deepest value allowed, as before.
	checkSameEncoding(t, deep(maxDepth, []string{"leaf"}), true)
	if _, err := appendCanonical(nil, "data", deep(maxDepth, []string{"leaf"})); err != nil {
		t.Fatal(err)
	}
}

// TestCompareUTF16 checks the key order against an explicit UTF-16
// comparison on characters around every boundary that matters.
func TestCompareUTF16(t *testing.T) {
	runes := []rune{
		0, 0x1f, 'A', 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfb33, 0xfffd, 0xffff,
		0x10000, 0x1f600, 0x103ff, 0x10400, 0x10ffff,
	}
	var strs []string
	for _, a := range runes {
		strs = append(strs, string(a))
		for _, b := range runes {
			strs = append(strs, string(a)+string(b))
		}
	}
	strs = append(strs, "")
	sign := func(n int) int { return min(max(n, -1), 1) }
	for _, a := range strs {
		for _, b := range strs {
			want := slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
			if got := sign(compareUTF16(a, b)); got != want {
				t.Fatalf("compareUTF16(%+q, %+q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

// TestEncodeRecordMatchesJCS builds whole records with awkward field values
// both ways.
func TestEncodeRecordMatchesJCS(t *testing.T) {
	e := Entry{
		Kind: record.KindOverride, App: "app \"quoted\" \\ <tag> & \u2028", Action: "a\x00\x1f\x7f",
		Decision: "\U0001f600", Reason: "\ufffd\uffff", ApprovalID: "appr-1", Digest: "", Policy: "p",
		Data: map[string]any{"\ue000": 1, "\U00010000": []any{"x", nil}},
	}
	for _, seq := range []uint64{1, 9, 10, 12345, MaxInt} {
		at := katTimes[1].Add(time.Duration(seq%1000)*time.Millisecond + 7)
		checkSameRecord(t, e, Head{Seq: seq - 1, Hash: katHash2}, at)
	}
	for _, e := range katEntries {
		checkSameRecord(t, e, Head{Hash: ZeroHash}, katTimes[0])
	}
	e.Data = nil
	checkSameRecord(t, e, Head{Hash: ZeroHash}, katTimes[0])

	rec := newRecord(e, Head{Seq: MaxInt, Hash: ZeroHash}, katTimes[0])
	parts, err := encodeParts(&e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := encodeRecord(&rec, &parts); err == nil {
		t.Fatal("seq 2^53 accepted: JCS would round it")
	}
}

// checkSameRecord encodes e as record h.Seq+1 both ways and demands the same
// stored bytes and hash, and that the verifier accepts them.
func checkSameRecord(t *testing.T, e Entry, h Head, at time.Time) {
	t.Helper()
	if err := checkEntry(&e); err != nil {
		t.Fatal(err)
	}
	data, err := referenceEncodeData(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := newRecord(e, h, at)
	wantRaw, err := referenceEncodeRecord(&want, data)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := encodeParts(&e)
	if err != nil {
		t.Fatal(err)
	}
	got := newRecord(e, h, at)
	// Bytes already in the writer's buffer must not leak into the record.
	enc := recordEncoder{slab: []byte("garbage garbage")}
	gotRaw, err := enc.encode(&got, &parts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotRaw, wantRaw) || got.Hash != want.Hash {
		t.Fatalf("record differs:\n got %s (%s)\nwant %s (%s)", gotRaw, got.Hash, wantRaw, want.Hash)
	}
	v := verifier.New(got.Seq, got.Prev)
	if !v.Add(gotRaw) {
		t.Fatalf("verifier refuses %s: %+v", gotRaw, v.Finish().Problem)
	}
}

// valueGen builds Entry.Data values from fuzz bytes. It knows which values
// it makes are refused, so the fuzz test can demand the oracle's exact error
// when there is only one.
type valueGen struct {
	b       []byte
	bad     int      // values built that must be refused
	numbers []string // json.Number texts built, to check isIntLiteral
}

func (g *valueGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *valueGen) uint64() uint64 {
	var b [8]byte
	for i := range b {
		b[i] = g.byte()
	}
	return binary.LittleEndian.Uint64(b[:])
}

// specialRunes are where encoders go wrong: JSON escapes, what encoding/json
// escapes and JCS must not, and the edges of the UTF-8 and UTF-16 forms.
var specialRunes = []rune{
	'"', '\\', '/', '<', '>', '&', 0x7f, 0x80, 0xff, 0x2028, 0x2029, 0x7ff, 0x800,
	0xd7ff, 0xe000, 0xfb33, 0xfeff, 0xfffd, 0xfffe, 0xffff, 0x10000, 0x1f600, 0x10ffff,
}

// str builds a string, valid UTF-8 unless the fuzzer asks otherwise.
func (g *valueGen) str() string {
	c := g.byte()
	n := int(c>>4) % 12
	allowInvalid := c&0xf == 0xf
	var b []byte
	for range n {
		c := g.byte()
		switch c % 8 {
		case 0, 1:
			b = append(b, 0x20+g.byte()%0x60) // printable ASCII and DEL
		case 2:
			b = append(b, g.byte()%0x20) // control characters
		case 3:
			b = utf8.AppendRune(b, specialRunes[int(g.byte())%len(specialRunes)])
		case 4:
			r := rune(g.byte())<<8 | rune(g.byte())
			if r >= 0xd800 && r <= 0xdfff {
				r += 0x10000 - 0xd800 // not encodable in UTF-8: make it a pair in UTF-16
			}
			b = utf8.AppendRune(b, r)
		case 5:
			b = utf8.AppendRune(b, 0x10000+rune(g.uint64()%0x100000))
		case 6:
			if allowInvalid {
				b = append(b, g.byte())
			} else {
				b = append(b, 'a'+c>>3%26)
			}
		case 7:
			b = utf8.AppendRune(b, rune(c>>3)+0xe000)
		}
	}
	s := string(b)
	if !utf8.ValidString(s) {
		g.bad++
	}
	return s
}

var edgeInts = []int64{0, 1, -1, 9, 10, -10, MaxInt, -MaxInt, MaxInt + 1, -MaxInt - 1, MaxInt - 1, math.MaxInt64, math.MinInt64, math.MaxInt32, math.MinInt32}

func (g *valueGen) int() any {
	var n int64
	if c := g.byte(); c&1 == 0 {
		n = edgeInts[int(c>>1)%len(edgeInts)]
	} else {
		n = int64(g.uint64() >> (c >> 1 % 64))
		if c&0x80 != 0 {
			n = -n
		}
	}
	out := n > MaxInt || n < -MaxInt
	switch g.byte() % 10 {
	case 0:
		return int8(n)
	case 1:
		return int16(n)
	case 2:
		return int32(n)
	case 3:
		return uint8(n)
	case 4:
		return uint16(n)
	case 5:
		return uint32(n)
	case 6:
		if uint64(n) > MaxInt {
			g.bad++
		}
		if g.byte()&1 == 0 {
			return uint(n)
		}
		return uint64(n)
	case 7:
		if out {
			g.bad++
		}
		return n
	default:
		if out {
			g.bad++
		}
		return int(n)
	}
}

func (g *valueGen) number() json.Number {
	var s string
	if c := g.byte(); c&1 == 0 {
		before := g.bad // counted below, as a number
		s = fmt.Sprint(g.int())
		g.bad = before
	} else {
		const alphabet = "-0123456789.eE+ x"
		b := make([]byte, int(c>>1)%24)
		for i := range b {
			b[i] = alphabet[int(g.byte())%len(alphabet)]
		}
		s = string(b)
	}
	g.numbers = append(g.numbers, s)
	n := json.Number(s)
	if checkNumber("", n) != nil {
		g.bad++
	}
	return n
}

func (g *valueGen) value(depth int) any {
	if depth > maxDepth {
		g.bad++
		return nil
	}
	switch g.byte() % 16 {
	case 0:
		return nil
	case 1:
		return g.byte()&1 == 0
	case 2, 3:
		return g.str()
	case 4:
		return g.int()
	case 5:
		return g.number()
	case 6:
		g.bad++
		if g.byte()&1 == 0 {
			return float32(1)
		}
		return math.Float64frombits(g.uint64())
	case 7:
		if g.byte()&1 == 0 {
			return []string(nil)
		}
		s := make([]string, int(g.byte())%5)
		for i := range s {
			s[i] = g.str()
		}
		return s
	case 8, 9:
		if g.byte()&1 == 0 {
			return []any(nil)
		}
		a := make([]any, int(g.byte())%5)
		for i := range a {
			a[i] = g.value(depth + 1)
		}
		return a
	case 10, 11, 12:
		return g.object(depth)
	case 13:
		return map[string]any(nil)
	case 14:
		g.bad++
		return struct{}{}
	default:
		return g.str()
	}
}

func (g *valueGen) object(depth int) map[string]any {
	m := map[string]any{}
	for range int(g.byte()) % 7 {
		k := g.str()
		if _, dup := m[k]; dup {
			continue
		}
		v := g.value(depth + 1)
		m[k] = v
	}
	return m
}

var fuzzKinds = []record.Kind{record.KindRequest, record.KindApproval, record.KindCapability, record.KindOverride, record.KindForward, record.KindCheckpoint, record.KindArchive, record.KindConfig}

// FuzzCanonicalMatchesJCS holds the direct encoder to the oracle on Data
// values and whole records built from the fuzz input: the same bytes, or
// the same refusal; and every record it makes must verify.
func FuzzCanonicalMatchesJCS(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x0a\x05\x3f\x00\x1b\x2a\x33\x44\x55\x66\x77"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &valueGen{b: b}
		data := g.object(0)
		for _, s := range g.numbers {
			if isIntLiteral(s) != intPattern.MatchString(s) {
				t.Fatalf("isIntLiteral(%q) = %v, intPattern says otherwise", s, isIntLiteral(s))
			}
		}
		bad := g.bad
		if checkSameEncoding(t, data, bad <= 1) == nil {
			if bad == 0 {
				t.Fatalf("refused a value the generator made valid: %#v", data)
			}
			return
		}
		if bad != 0 {
			t.Fatalf("accepted a value the generator made invalid: %#v", data)
		}

		// The same value as the data of a whole record.
		e := Entry{
			Kind: fuzzKinds[int(g.byte())%len(fuzzKinds)], App: g.str(), Action: g.str(),
			Decision: record.Decision(g.str()), Reason: record.Reason(g.str()), ApprovalID: g.str(), Digest: g.str(), Policy: g.str(),
			Data: data,
		}
		if g.bad != 0 {
			return // an invalid field: checkEntry's business, tested elsewhere
		}
		prev := ZeroHash
		if c := g.byte(); c != 0 {
			prev = hex.EncodeToString(bytes.Repeat([]byte{c}, 32))
		}
		seq := g.uint64() % MaxInt
		at := time.Unix(0, int64(g.uint64()>>2)).In(time.FixedZone("x", 3600))
		checkSameRecord(t, e, Head{Seq: seq, Hash: prev}, at)
	})
}
