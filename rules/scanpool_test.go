package rules

import (
	"reflect"
	"strings"
	"testing"
)

// scanFresh is scanBody with a scanner never used before: the reference a
// reused scanner must match.
func scanFresh(body []byte, paths []amountPath) bodyResult {
	if len(body) == 0 || strings.HasPrefix(string(body[:min(3, len(body))]), "\ufeff") {
		return scanBody(body, paths) // answered before any scanner
	}
	s := new(scanner)
	s.reset(body, paths)
	return s.scan()
}

// FuzzReusedScannerMatchesFresh: a scanner reused after any other body
// (cut short by an error, deep, with many keys) judges the next body and
// reads its amount exactly as a new one does: no state of one request
// reaches the next.
func FuzzReusedScannerMatchesFresh(f *testing.F) {
	paths := make([]amountPath, 0, 3)
	for _, p := range []string{"amount", "lines.#.debit", "lines.#.credit"} {
		ap, err := compileAmountPath(p)
		if err != nil {
			f.Fatal(err)
		}
		paths = append(paths, ap)
	}
	many := `{` + strings.Repeat(`"k":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,`, 3)
	for _, c := range diffBodies {
		f.Add([]byte(c.body), []byte(`{"amount":"12.50","lines":[{"debit":1}]}`), uint8(0))
		f.Add([]byte(`{"lines":[{"debit":"3"},{"credit":"4"}]}`), []byte(c.body), uint8(3))
	}
	f.Add([]byte(many), []byte(`{"a":1,"b":2}`), uint8(1))
	f.Add([]byte(`[[[[[[[[{"a":1,"A":2}`), []byte(`{"a":1}`), uint8(2))
	f.Add([]byte(`{"amount":1,"amount":2}`), []byte(`{"amount":3}`), uint8(3))
	f.Fuzz(func(t *testing.T, first, second []byte, which uint8) {
		pick := func(n uint8) []amountPath { return paths[:int(n)%(len(paths)+1)] }
		s := new(scanner)
		for i, body := range [][]byte{first, second, first} {
			p := pick(which + uint8(i))
			want := scanFresh(body, p)
			got := want
			if len(body) > 0 && !strings.HasPrefix(string(body[:min(3, len(body))]), "\ufeff") {
				s.reset(body, p)
				got = s.scan()
				s.release()
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("body %d %q: reused scanner %+v, fresh %+v", i, body, got, want)
			}
			if pooled := scanBody(body, p); !reflect.DeepEqual(pooled, want) {
				t.Fatalf("body %d %q: scanBody %+v, fresh %+v", i, body, pooled, want)
			}
		}
	})
}
