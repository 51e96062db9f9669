package rules

import (
	"strings"
	"testing"
)

func TestCheckID(t *testing.T) {
	cases := []struct {
		name, id string
		ok       bool
		want     string // in the error
	}{
		{"email", "jim@corp.example", true, ""},
		{"service name", "finance-agent", true, ""},
		{"punctuation", "a.b+c_d~e!@x", true, ""},
		{"empty", "", false, "empty id"},
		{"upper case", "Jim@corp.example", false, `write it "jim@corp.example"`},
		{"upper-case domain", "jim@CORP.example", false, "upper case"},
		// What the attack used: ToLower maps İ to i, EqualFold does not.
		{"dotted capital I", "j\u0130m@corp.example", false, "not ASCII"},
		{"Kelvin sign", "\u212Aim@corp.example", false, "not ASCII"},
		{"long s", "\u017Fam@corp.example", false, "not ASCII"},
		{"fullwidth letters", "\uFF4Aim@corp.example", false, "not ASCII"},
		{"Cyrillic je", "\u0458im@corp.example", false, "not ASCII"},
		{"combining dot", "ji\u0307m@corp.example", false, "not ASCII"},
		{"invalid UTF-8", "jim\xff@corp.example", false, "not ASCII"},
		{"space", "jim @corp.example", false, "space or control"},
		{"tab", "jim\t@corp.example", false, "space or control"},
		{"newline", "jim\n@corp.example", false, "space or control"},
		{"NUL", "jim\x00", false, "space or control"},
		{"DEL", "jim\x7f", false, "space or control"},
		{"256 bytes", strings.Repeat("a", MaxIDLen), true, ""},
		{"257 bytes", strings.Repeat("a", MaxIDLen+1), false, "longer than 256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckID(c.id)
			if c.ok {
				if err != nil {
					t.Fatalf("CheckID(%q) = %v", c.id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckID(%q) accepted it", c.id)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("CheckID(%q) = %q, want it to say %q", c.id, err, c.want)
			}
		})
	}
}

// FuzzCheckID asserts what the canonical form is for: no two canonical
// ids are the same person under any comparison Go offers, and no spelling
// folds onto a canonical id other than the id itself unless it is refused.
//
//	go test ./rules/ -run '^$' -fuzz FuzzCheckID -fuzztime 30s
func FuzzCheckID(f *testing.F) {
	f.Add("jim@corp.example", "j\u0130m@corp.example")
	f.Add("kim@corp.example", "\u212Aim@corp.example")
	f.Add("sam@corp.example", "\u017Fam@corp.example")
	f.Add("cfo@corp.example", "CFO@Corp.Example")
	f.Add("a", "a")
	f.Add("", "\x00")
	f.Fuzz(func(t *testing.T, a, b string) {
		if CheckID(a) != nil {
			return
		}
		if strings.ToLower(a) != a || strings.ToUpper(strings.ToLower(a)) != strings.ToUpper(a) {
			t.Fatalf("canonical id %q changes under ToLower", a)
		}
		same := strings.EqualFold(a, b) || strings.ToLower(b) == a || strings.ToLower(b) == strings.ToLower(a) ||
			strings.ToUpper(b) == strings.ToUpper(a)
		if same && a != b && CheckID(b) == nil {
			t.Fatalf("canonical ids %q and %q are one under case folding", a, b)
		}
		if ps := (&Principals{byID: map[string]*Principal{a: {ID: a}}}); a != b {
			if _, ok := ps.Get(b); ok {
				t.Fatalf("Get(%q) found %q", b, a)
			}
		}
	})
}
