package upstreamauth

import (
	"bytes"
	"net/textproto"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzCleanValue: whatever a value file holds, what cleanValue accepts is a
// non-empty header value that net/http's own check (httpguts, independent
// of this package) accepts, that holds no control byte at all, and that is
// the file's content less surrounding whitespace.
func FuzzCleanValue(f *testing.F) {
	for _, s := range []string{"k3y\n", "Bearer abc.def\r\n", " \t", "", "a\nb", "a\rb", "a\x00", "\xff\xfe", "a\tb", " x "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := cleanValue(b)
		if err != nil {
			if v != "" {
				t.Fatalf("refused with a value %q", v)
			}
			return
		}
		if v == "" {
			t.Fatal("accepted an empty value")
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			t.Fatalf("accepted %q, which net/http refuses", v)
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("accepted %q with a control byte", v)
		}
		if got := string(bytes.Trim(b, " \t\r\n\v\f")); got != v {
			t.Fatalf("cleanValue(%q) = %q, want %q", b, v, got)
		}
	})
}

// FuzzHeaderName: a name checkHeaderName admits is one net/http admits, and
// its canonical form is none of the framing or proxy headers; validToken
// agrees with httpguts on every input.
func FuzzHeaderName(f *testing.F) {
	for _, s := range []string{"Authorization", "x-api-key", "Host", "content-length", "X-UAPK-App", "X Api", "", "a:b", "\xc3\xa9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validToken(name) != httpguts.ValidHeaderFieldName(name) {
			t.Fatalf("validToken(%q) = %v, httpguts says %v", name, validToken(name), !validToken(name))
		}
		if checkHeaderName(name) != "" {
			return
		}
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if forbiddenHeaders[canon] || strings.HasPrefix(strings.ToLower(canon), "x-uapk-") {
			t.Fatalf("admitted %q (%s)", name, canon)
		}
		if !strings.EqualFold(canon, name) {
			t.Fatalf("canonical form %q of %q is another name", canon, name)
		}
	})
}
