package evidence

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// parseSeeds are the writer's known-answer records and variants on either
// side of what parseCanonical takes.
func parseSeeds(t testing.TB) [][]byte {
	kat, err := os.ReadFile("../ledger/testdata/kat.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(kat), []byte("\n"))
	good := string(lines[0])
	out := lines
	for _, e := range [][2]string{
		{`"app":"erp-agent"`, `"app":"erp\"agent"`}, {`"app":"erp-agent"`, `"app":null`}, {`"app":"erp-agent"`, `"app":7`},
		{`"seq":1,`, `"seq":-1,`}, {`"seq":1,`, `"seq":"1",`}, {`"seq":1,`, `"seq":9007199254740991,`}, {`"seq":1,`, `"seq":1.5,`},
		{`"kind":"request"`, `"kind":"Request"`}, {`"reason":"auto_approve",`, ``}, {`"v":1}`, `"v":1,"w":2}`},
		{`"data":{`, `"data":{"a":[1,{"b":null}],`}, {`"data":{"amount":"1250.00","currency":"USD","lines":2,"memo":"accrual <Q1> & €"}`, `"data":null`},
		{`"app":"erp-agent"`, `"APP":"erp-agent"`}, {`"app":"erp-agent"`, `"app":"erp-agent","app":"x"`}, {`"memo":"accrual`, `"memo":"\u001f`},
		{`"time":"`, `"time":"é`},
	} {
		out = append(out, []byte(strings.Replace(good, e[0], e[1], 1)))
	}
	return append(out, []byte(" "+good), []byte("{}"), []byte(""), []byte("null"))
}

// checkParse is what parseCanonical rests on: whatever it reads, it reads
// exactly as json.Unmarshal does.
func checkParse(t *testing.T, raw []byte) bool {
	t.Helper()
	fast, ok := parseCanonical(raw)
	if !ok {
		return false
	}
	slow := new(rec)
	if err := json.Unmarshal(raw, slow); err != nil {
		t.Fatalf("parseCanonical reads %q, json.Unmarshal refuses it: %v", raw, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%q: parseCanonical %+v, json.Unmarshal %+v", raw, fast, slow)
	}
	return true
}

func TestParseCanonicalMatchesUnmarshal(t *testing.T) {
	n := 0
	for _, raw := range parseSeeds(t) {
		if checkParse(t, raw) {
			n++
		}
	}
	if n < 4 {
		t.Fatalf("only %d seeds took the fast path", n)
	}
}

func FuzzParseRecordFast(f *testing.F) {
	for _, raw := range parseSeeds(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkParse(t, raw) })
}
