package rules

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// Keys in a JSON body are compared the way the most lenient ERP-side binder
// would compare them, so that no two keys the gate tells apart can be one
// field to the ERP. Two runes are one letter here when they are linked by
// Unicode simple case folding (unicode.SimpleFold: what strings.EqualFold
// and Go's encoding/json use, so K, k and the Kelvin sign U+212A are one, and
// s, S and the long s U+017F) or by a simple upper, lower or title case
// mapping (what .NET's ordinal case-insensitive comparison uses, so the
// dotless ı U+0131 and the dotted İ U+0130 are one with i and I). The
// relation is the transitive closure of all of these, computed once.

// foldTable maps every rune whose letter has more than one member to that
// letter's representative: the lower-case ASCII letter when the letter has
// one, else its smallest rune. Runes absent from it are their own letter.
var foldTable = sync.OnceValue(buildFoldTable)

func buildFoldTable() map[rune]rune {
	parent := map[rune]rune{}
	var find func(r rune) rune
	find = func(r rune) rune {
		p, ok := parent[r]
		if !ok || p == r {
			return r
		}
		root := find(p)
		parent[r] = root
		return root
	}
	union := func(a, b rune) {
		ra, rb := find(a), find(b)
		if ra == rb {
			return
		}
		if rb < ra {
			ra, rb = rb, ra
		}
		parent[ra] = ra
		parent[rb] = ra // the smaller rune is the root
	}
	var work []rune
	seen := map[rune]bool{}
	push := func(r rune) {
		if !seen[r] {
			seen[r] = true
			work = append(work, r)
		}
	}
	for _, cr := range unicode.CaseRanges {
		for r := rune(cr.Lo); r <= rune(cr.Hi); r++ {
			push(r)
		}
	}
	for len(work) > 0 {
		r := work[len(work)-1]
		work = work[:len(work)-1]
		for _, o := range [...]rune{unicode.ToUpper(r), unicode.ToLower(r), unicode.ToTitle(r), unicode.SimpleFold(r)} {
			if o != r {
				union(r, o)
				push(o)
			}
		}
	}
	// Representatives: a lower-case ASCII letter if the class has one.
	rep := map[rune]rune{}
	for r := range parent {
		root := find(r)
		if 'a' <= r && r <= 'z' {
			rep[root] = r
		}
	}
	out := make(map[rune]rune, len(parent))
	for r := range parent {
		root := find(r)
		f, ok := rep[root]
		if !ok {
			f = root
		}
		if f != r {
			out[r] = f
		}
	}
	return out
}

// foldRune returns the representative of r's letter (see foldTable).
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}
	if f, ok := foldTable()[r]; ok {
		return f
	}
	return r
}

// appendFolded appends the UTF-8 of r's representative to b. A
// representative is never longer in UTF-8 than any member of its letter (it
// is the smallest rune, or an ASCII letter), so folding never grows a key.
func appendFolded(b []byte, r rune) []byte {
	return utf8.AppendRune(b, foldRune(r))
}

// foldString returns s with every rune replaced by its representative.
func foldString(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		b = appendFolded(b, r)
	}
	return string(b)
}
