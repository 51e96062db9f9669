package notify

import (
	"mime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "journal_entry", 20, "journal_entry"},
		{"CRLF header injection", "pay\r\nBcc: evil@x", 50, "pay Bcc: evil@x"},
		{"runs of whitespace", "  a \t\n\n b  ", 50, "a b"},
		{"other controls dropped", "a\x00b\x07c\x1bd\x7fe", 50, "abcde"},
		{"C1 controls and NEL", "a\u0085b\u009bc", 50, "a bc"},
		{"line and paragraph separators", "a\u2028b\u2029c", 50, "a b c"},
		{"bidi overrides dropped", "pay \u202eevil\u202c \u2066x\u2069", 50, "pay evil x"},
		{"zero width dropped", "a\u200bb\ufeffc", 50, "abc"},
		{"invalid UTF-8 dropped", "a\xffb", 50, "ab"},
		{"exactly max", "abcde", 5, "abcde"},
		{"cut with ellipsis", "abcdef", 5, "abcd…"},
		{"cut at a space", "abc defgh", 5, "abc…"},
		{"cut runes, not bytes", "ääääää", 5, "ääää…"},
		{"trailing whitespace does not count", "abcde   \r\n", 5, "abcde"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := line(tt.in, tt.max)
			if got != tt.want {
				t.Errorf("line(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
			if n := utf8.RuneCountInString(got); n > tt.max {
				t.Errorf("%d characters, max %d", n, tt.max)
			}
		})
	}
}

func TestCleanJustification(t *testing.T) {
	e := clean(Event{Justification: strings.Repeat("x\r\n", 400)})
	if n := utf8.RuneCountInString(e.Justification); n != MaxJustification || !strings.HasSuffix(e.Justification, "…") {
		t.Errorf("%d characters: %q", n, e.Justification)
	}
	if strings.ContainsAny(e.Justification, "\r\n") {
		t.Error("CR or LF left")
	}
}

func TestGroupAmount(t *testing.T) {
	for in, want := range map[string]string{
		"1200000":     "1,200,000",
		"1200000.50":  "1,200,000.50",
		"-1234":       "-1,234",
		"999":         "999",
		"1000":        "1,000",
		"0.5":         "0.5",
		"":            "",
		"1.2e6":       "1.2e6",
		"EUR 1200000": "EUR 1200000",
		"12.":         "12.",
		".5":          ".5",
		"-":           "-",
	} {
		if got := groupAmount(in); got != want {
			t.Errorf("groupAmount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPlainAddress(t *testing.T) {
	for in, ok := range map[string]bool{
		"cfo@corp.example":                 true,
		"first.last+tag@corp.example":      true,
		"CFO <cfo@corp.example>":           false,
		"cfo@corp.example\r\nBcc: x@y":     false,
		"cfo@corp.example, evil@x.example": false,
		"cfo":                              false,
		"cfo@corp.example (comment)":       false,
		"\"quoted local\"@corp.example":    false,
		"":                                 false,
	} {
		if got := plainAddress(in) != ""; got != ok {
			t.Errorf("plainAddress(%q) accepted=%v, want %v", in, got, ok)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		first   time.Duration
		attempt int
		want    time.Duration
	}{
		{2 * time.Second, 1, 2 * time.Second},
		{2 * time.Second, 2, 4 * time.Second},
		{2 * time.Second, 5, 32 * time.Second},
		{2 * time.Second, 8, 256 * time.Second},
		{2 * time.Second, 9, MaxBackoff},
		{2 * time.Second, 1000, MaxBackoff},
		{10 * time.Minute, 1, MaxBackoff},
		{20 * time.Millisecond, 3, 80 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := backoff(tt.first, tt.attempt); got != tt.want {
			t.Errorf("backoff(%s, %d) = %s, want %s", tt.first, tt.attempt, got, tt.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	base := Event{ApprovalID: "apr_1", Action: "journal_entry", Amount: "1200000", StillNeeded: []string{"cfo"}}
	for typ, want := range map[string]string{
		TypePending:  "[uapk] approval needed: journal_entry 1,200,000 (apr_1)",
		TypeDecided:  "[uapk] approval in progress: journal_entry 1,200,000 (apr_1), still needed: cfo",
		TypeApproved: "[uapk] approved: journal_entry 1,200,000 (apr_1)",
		TypeRejected: "[uapk] rejected: journal_entry 1,200,000 (apr_1)",
		TypeExpired:  "[uapk] approval expired: journal_entry 1,200,000 (apr_1)",
	} {
		e := base
		e.Type = typ
		if got := subject(&e); got != want {
			t.Errorf("%s: %q, want %q", typ, got, want)
		}
	}
}

// fold keeps lines short and unfolds (RFC 5322) and decodes (RFC 2047)
// back to the subject.
func TestFold(t *testing.T) {
	s := strings.Repeat("Überweisung Ærø ", 20)
	enc := mime.QEncoding.Encode("utf-8", s)
	folded := fold("Subject", enc)
	for i, l := range strings.Split(folded, "\r\n") {
		if i > 0 && !strings.HasPrefix(l, " ") {
			t.Errorf("continuation line %q does not start with a space", l)
		}
		if len(l) > 78 {
			t.Errorf("line of %d octets: %q", len(l), l)
		}
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(strings.ReplaceAll(folded, "\r\n", ""))
	if err != nil || dec != s {
		t.Errorf("decoded %q (%v), want %q", dec, err, s)
	}
}
