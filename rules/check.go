package rules

import (
	"fmt"
	"sort"
	"time"
)

// checker collects problems and warnings while walking a decoded tree.
type checker struct {
	probs []Problem
	warns []Problem
}

func (c *checker) errf(path, format string, args ...any) {
	c.probs = append(c.probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) warnf(path, format string, args ...any) {
	c.warns = append(c.warns, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) typeErr(path, want string, v *value) {
	if v.bad {
		return
	}
	c.errf(path, "must be %s, not %s", want, v.kind)
}

// fields walks an object in document order, calling the handler of each
// known key and reporting unknown keys. It reports false when v is not an
// object.
func (c *checker) fields(path string, v *value, handlers map[string]func(p string, v *value)) bool {
	if v.kind != kObject {
		c.typeErr(path, "an object", v)
		return false
	}
	for _, m := range v.members {
		p := joinKey(path, m.key)
		h, ok := handlers[m.key]
		if !ok {
			c.unknownKey(p, m.key, handlers)
			continue
		}
		h(p, m.val)
	}
	return true
}

func (c *checker) unknownKey(path, key string, handlers map[string]func(string, *value)) {
	known := make([]string, 0, len(handlers))
	for k := range handlers {
		known = append(known, k)
	}
	sort.Strings(known)
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		c.errf(path, "unknown key %q (did you mean %q?)", key, best)
		return
	}
	c.errf(path, "unknown key %q", key)
}

// str reads a string. YAML plain scalars that resolved to numbers or
// timestamps are taken as the text the author typed.
func (c *checker) str(path string, v *value) (string, bool) {
	if v.kind == kString || v.literal {
		return v.text, true
	}
	c.typeErr(path, "a string", v)
	return "", false
}

func (c *checker) boolean(path string, v *value) (bool, bool) {
	if v.kind != kBool {
		c.typeErr(path, "true or false", v)
		return false, false
	}
	return v.b, true
}

func (c *checker) number(path string, v *value) (decimal, bool) {
	if v.kind != kNumber {
		c.typeErr(path, "a number", v)
		return decimal{}, false
	}
	d, ok := parseDecimal(v.text, v.literal)
	if !ok {
		c.errf(path, "%s is not a finite decimal number within range", v.text)
		return decimal{}, false
	}
	return d, true
}

// strings reads an array of strings; elements of the wrong type are reported
// and skipped.
func (c *checker) strList(path string, v *value) ([]string, bool) {
	if v.kind != kArray {
		c.typeErr(path, "an array of strings", v)
		return nil, false
	}
	out := make([]string, 0, len(v.items))
	for i, it := range v.items {
		if s, ok := c.str(joinIndex(path, i), it); ok {
			out = append(out, s)
		}
	}
	return out, true
}

// duration reads a Go duration string such as "24h" or "90m".
func (c *checker) duration(path string, v *value) (time.Duration, bool) {
	s, ok := c.str(path, v)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.errf(path, "%q is not a duration (e.g. \"30s\", \"15m\", \"24h\")", s)
		return 0, false
	}
	return d, true
}

// roles checks a list of role names: each a valid role token, no duplicates.
// It returns the valid, distinct roles in order.
func (c *checker) roles(path string, v *value) ([]string, bool) {
	list, ok := c.strList(path, v)
	if !ok {
		return nil, false
	}
	var out []string
	seen := map[string]bool{}
	for i, r := range list {
		p := joinIndex(path, i)
		switch {
		case r == "":
			c.errf(p, "empty role name")
		case !ValidRole(r):
			c.errf(p, "role %q must match [a-z0-9_.-]{1,64}", r)
		case seen[r]:
			c.errf(p, "duplicate role %q", r)
		default:
			seen[r] = true
			out = append(out, r)
		}
	}
	return out, true
}

// ValidRole reports whether r is a role token: 1 to 64 of [a-z0-9_.-]. The
// same rule applies to manifest roles, principals' roles and the
// X-UAPK-Escalation header.
func ValidRole(r string) bool {
	if len(r) == 0 || len(r) > 64 {
		return false
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validName reports whether s is usable as an action or app name: 1 to 64
// of [A-Za-z0-9_.-], not "." or "..". Names travel in headers, ledger records
// and archive object keys, so they must be plain.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
