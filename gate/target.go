package gate

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// The request target is forwarded byte for byte as it was received and
// classified as it was received: no layer decodes it, so none can decode
// it twice. What a server could still resolve to another path than the
// gate sees is refused as ambiguous_path (docs/reference.md#reasons):
//
//   - dot segments ("." and ".."), which servers and frameworks remove;
//   - empty segments ("//"), which many servers merge;
//   - ";", which Tomcat, Jetty and Spring treat as a path parameter;
//   - "\", which IIS and some frameworks read as "/";
//   - percent-encodings of "/", "\", "%", ".", ";" and of unreserved
//     characters (letters, digits, "-", "_", "~"), which servers decode
//     before or after routing, and malformed percent-encodings;
//   - control bytes and bytes that are not UTF-8, anywhere in the target;
//   - '#' anywhere (a request target has no fragment: parsers cut it, or
//     send it on), and in the path any other ASCII byte RFC 3986 does not
//     allow there (space " < > [ ] ^ ` { | }), which parsers repair each
//     their own way.
//
// The query is not judged so (servers do not route by it), but for its
// bytes and the _method parameter (rewrite).

// ambiguousTarget returns why path and query could mean another target to
// a server than to the gate, or "".
func ambiguousTarget(path, query string) string {
	if d := badBytes("request target", path+"?"+query); d != "" {
		return d
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Sprintf("the path %q does not start with /", path)
	}
	if strings.IndexByte(query, '#') >= 0 {
		return "the query has a '#' (a fragment, which parsers cut or send on)"
	}
	for i := 1; i <= len(path); i++ {
		j := strings.IndexByte(path[i:], '/')
		if j < 0 {
			j = len(path) - i
		}
		seg := path[i : i+j]
		switch {
		case seg == "." || seg == "..":
			return fmt.Sprintf("the path %q has a dot segment", path)
		case seg == "" && i+j < len(path):
			return fmt.Sprintf("the path %q has an empty segment (//)", path)
		}
		i += j
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; c {
		case ';':
			return fmt.Sprintf("the path %q has a ';' (a path parameter to some servers)", path)
		case '\\':
			return fmt.Sprintf("the path %q has a backslash ('/' to some servers)", path)
		case '#', ' ', '"', '<', '>', '[', ']', '^', '`', '{', '|', '}':
			return fmt.Sprintf("the path %q has %q, which a path may not hold as such", path, c)
		case '%':
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return fmt.Sprintf("the path %q has a malformed percent-encoding", path)
			}
			b := byte(unhex(path[i+1])<<4 | unhex(path[i+2]))
			if strings.IndexByte(`/\%.;`, b) >= 0 || unreserved(b) {
				return fmt.Sprintf("the path %q percent-encodes %q, which servers decode before or after routing", path, b)
			}
			i += 2
		}
	}
	return ""
}

// badBytes returns why s has a control byte or is not UTF-8, or "".
func badBytes(what, s string) string {
	if !utf8.ValidString(s) {
		return "the " + what + " is not valid UTF-8"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return fmt.Sprintf("the %s has a control byte 0x%02x", what, s[i])
		}
	}
	return ""
}

func unreserved(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '~'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// escapeTarget makes a target safe to record: every control byte and every
// byte of an invalid UTF-8 sequence becomes %XX. A target that needed it
// is refused anyway (ambiguousTarget), so the escaped form is only ever
// recorded, never sent.
func escapeTarget(s string) string {
	if badBytes("", s) == "" {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 || r < 0x20 || r == 0x7f {
			fmt.Fprintf(&b, "%%%02X", s[i])
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	return b.String()
}
