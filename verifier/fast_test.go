package verifier

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// fastVariants are records and objects on either side of what the fast
// path takes: each is checked by both paths (TestFastMatchesSlow) and seeds
// FuzzFastMatchesSlow.
func fastVariants(t testing.TB) [][]byte {
	kat := readKAT(t)
	good := string(kat[0])
	edit := func(old, new string) []byte {
		if !strings.Contains(good, old) {
			t.Fatalf("no %q in the record", old)
		}
		return []byte(strings.Replace(good, old, new, 1))
	}
	data := `{"amount":"1250.00","currency":"USD","lines":2,"memo":"accrual <Q1> & €"}`
	out := [][]byte{kat[0], kat[1]}
	for _, d := range []string{
		`{}`, `{"a":[]}`, `{"a":[1,-2,0,true,false,null,{"b":{}}]}`, `{"":1,"a":2}`,
		`{"big":9007199254740991,"neg":-9007199254740991}`, `{"big":9007199254740992}`, `{"z":-0}`,
		`{"f":1.5}`, `{"e":1e3}`, `{"lead":01}`, `{"s":"tab\there"}`, `{"s":"\u001f\u0000"}`, `{"s":"\u000a"}`,
		`{"s":"\u00e9"}`, `{"s":"é\u007f"}`, `{"s":"\/"}`, `{"s":"\"\\"}`, `{"s":"\ud83d\ude00"}`, `{"s":"😀"}`,
		`{"b":1,"a":2}`, `{"a":1,"a":2}`, `{"é":1,"z":2}`, `{"😀":1,"\ue000":2}`, `{"\ue000":1,"😀":2}`,
		`{"a\n":1}`, `{"a":"\u0041"}`, `{"a":tru}`, `{"a":nul}`, `{"a":[1,]}`, `{"a":{"b":1,}}`,
		`{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, `{"x":"` + "\xff" + `"}`, `{"x":"` + "\xed\xa0\x80" + `"}`,
		`{"x":"\uFFFD"}`, `{"x":"` + "\xef\xbf\xbd" + `"}`, `{"n":123456789012345678}`, `{"n":-1}`, `[1]`, `{"a":1 }`,
	} {
		out = append(out, edit(data, d))
	}
	for _, e := range [][2]string{
		{`"seq":1,`, `"seq":0,`}, {`"seq":1,`, `"seq":-1,`}, {`"seq":1,`, `"seq":1.0,`}, {`"seq":1,`, `"seq":9007199254740991,`},
		{`"seq":1,`, `"seq":"1",`}, {`"v":1}`, `"v":2}`}, {`"v":1}`, `"v":1.0}`}, {`"kind":"request"`, `"kind":"requesT"`},
		{`"kind":"request"`, `"kind":"\u0072equest"`}, {`"app":"erp-agent"`, `"app":"erp\"agent"`}, {`"app":"erp-agent"`, `"app":null`},
		{`"app":"erp-agent"`, `"app":"erp-agent","apq":1`}, {`"reason":"auto_approve",`, ``},
		{`14:30:00.123456789Z`, `14:30:60.123456789Z`}, {`14:30:00.123456789Z`, `24:30:00.123456789Z`}, {`2026-01-15`, `2026-02-29`},
		{`2026-01-15`, `2024-02-29`}, {`2026-01-15`, `2026-04-31`}, {`2026-01-15`, `0000-01-01`}, {`2026-01-15`, `2026-00-15`},
		{`14:30:00.123456789Z`, `14:30:00.12345678Z`}, {`14:30:00.123456789Z`, `14:30:00.123456789+00:00`},
		{zeroHash, strings.Repeat("0", 63) + "A"}, {katHash1, strings.Repeat("f", 64)}, {`"hash":"`, `"hash":"0`},
	} {
		out = append(out, edit(e[0], e[1]))
	}
	out = append(out, []byte(" "+good), append([]byte(good), '\n'), []byte(good[:len(good)-1]), []byte("{}"), []byte(""), []byte(`{"hash":"x"}`))
	return out
}

// sameChecked compares what the two paths give for one record.
func sameChecked(a, b checked) error {
	switch {
	case a.seq != b.seq, !a.time.Equal(b.time), a.time.Location() != b.time.Location(), a.timeText != b.timeText:
		return fmt.Errorf("seq/time %d %v %q vs %d %v %q", a.seq, a.time, a.timeText, b.seq, b.time, b.timeText)
	case a.prev != b.prev, a.hash != b.hash, a.computed != b.computed:
		return fmt.Errorf("hashes %x %x %x vs %x %x %x", a.prev, a.hash, a.computed, b.prev, b.hash, b.computed)
	}
	return nil
}

// checkFastAgainstSlow is the property the fast path rests on: whatever it
// takes, jcs and parseRecord take too, with the same fields and the same
// hashed bytes; whatever object the scanner calls canonical, jcs leaves
// unchanged.
func checkFastAgainstSlow(t *testing.T, raw []byte) (fast bool) {
	t.Helper()
	if _, ok := canonicalObject(raw, nil); ok {
		canon, err := jcs.Transform(raw)
		if err != nil || !bytes.Equal(canon, raw) {
			t.Fatalf("scanner calls %q canonical; jcs gives %q (%v)", raw, canon, err)
		}
	}
	f, ok := fastRecord(raw, newScratch())
	s := slowRecord(raw, newScratch())
	if !ok {
		return false
	}
	if s.err != nil {
		t.Fatalf("fast path accepts %q, parseRecord refuses it: %v", raw, s.err)
	}
	if err := sameChecked(f, s); err != nil {
		t.Fatalf("%q: fast and slow differ: %v", raw, err)
	}
	// And the bytes hashed are CanonicalWithoutHash's.
	body, err := CanonicalWithoutHash(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(f.prev[:], body...))
	if want != f.computed {
		t.Fatalf("%q: fast path hashes other bytes than CanonicalWithoutHash", raw)
	}
	return true
}

func TestFastMatchesSlow(t *testing.T) {
	fast := 0
	variants := fastVariants(t)
	for _, raw := range variants {
		if checkFastAgainstSlow(t, raw) {
			fast++
		}
	}
	// The writer's records, and plain variants of them, must take the
	// fast path, or it is no path at all.
	for i, raw := range readKAT(t) {
		if _, ok := fastRecord(raw, newScratch()); !ok {
			t.Errorf("known-answer record %d does not take the fast path", i+1)
		}
	}
	if fast < 15 {
		t.Errorf("only %d of %d variants took the fast path", fast, len(variants))
	}
}

func FuzzFastMatchesSlow(f *testing.F) {
	for _, raw := range fastVariants(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkFastAgainstSlow(t, raw) })
}

// TestFastTime holds fastTime to parseTime over the edges of every field.
func TestFastTime(t *testing.T) {
	base := []byte("2024-02-29T23:59:59.999999999Z")
	try := func(s []byte) {
		ft, fok := fastTime(s)
		st, err := parseTime(string(s))
		if fok && (err != nil || !ft.Equal(st)) {
			t.Fatalf("%s: fast %v, slow %v %v", s, ft, st, err)
		}
		if !fok && err == nil {
			t.Errorf("%s: slow path takes a time the fast one does not", s)
		}
	}
	try(base)
	for pos := range base {
		for _, c := range []byte("0123456789-:.TZz ") {
			s := bytes.Clone(base)
			s[pos] = c
			try(s)
		}
	}
	for y := 1999; y < 2105; y++ {
		for m := 1; m <= 12; m++ {
			for d := 28; d <= 32; d++ {
				try(fmt.Appendf(nil, "%04d-%02d-%02dT00:00:00.000000000Z", y, m, d))
			}
		}
	}
}
