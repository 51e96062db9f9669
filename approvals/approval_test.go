package approvals_test

import (
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := approvals.NewID()
		if !approvals.ValidID(id) {
			t.Fatalf("NewID() = %q, which ValidID refuses", id)
		}
		if len(id) != 30 || !strings.HasPrefix(id, "apr_") {
			t.Fatalf("NewID() = %q, want apr_ and 26 base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	cases := []struct {
		name string
		id   string
		want bool
	}{
		{"fresh shape", "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa", true},
		{"all a", "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", true},
		{"all 7", "apr_77777777777777777777777777", true},
		{"empty", "", false},
		{"prefix only", "apr_", false},
		{"one short", "apr_2v3rnlhoyzq6jbvyt5mwx7kdf", false},
		{"one long", "apr_2v3rnlhoyzq6jbvyt5mwx7kdfaa", false},
		{"upper case", "apr_2V3RNLHOYZQ6JBVYT5MWX7KDFA", false},
		{"upper-case prefix", "APR_2v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"other prefix", "tok_2v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 0 (not base32)", "apr_0v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 1 (not base32)", "apr_1v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 8 (not base32)", "apr_8v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"digit 9 (not base32)", "apr_9v3rnlhoyzq6jbvyt5mwx7kdfa", false},
		{"padding", "apr_2v3rnlhoyzq6jbvyt5mwx7kd==", false},
		{"path traversal", "apr_../../../../etc/passwd/xxx", false},
		{"newline", "apr_2v3rnlhoyzq6jbvyt5mwx7kd\nx", false},
		{"30 bytes with a two-byte rune", "apr_2v3rnlhoyzq6jbvyt5mwx7kdé", false},
		{"NUL", "apr_2v3rnlhoyzq6jbvyt5mwx7kd\x00a", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := approvals.ValidID(c.id); got != c.want {
				t.Errorf("ValidID(%q) = %v, want %v", c.id, got, c.want)
			}
		})
	}
}

func TestEffective(t *testing.T) {
	cases := []struct {
		name    string
		status  string
		expires time.Time
		want    string
	}{
		{"pending before expiry", approvals.StatusPending, now.Add(time.Nanosecond), approvals.StatusPending},
		{"pending at expiry", approvals.StatusPending, now, approvals.StatusExpired},
		{"pending after expiry", approvals.StatusPending, now.Add(-time.Hour), approvals.StatusExpired},
		{"approved after expiry stays approved", approvals.StatusApproved, now.Add(-time.Hour), approvals.StatusApproved},
		{"rejected after expiry stays rejected", approvals.StatusRejected, now.Add(-time.Hour), approvals.StatusRejected},
		{"expired before expiry stays expired", approvals.StatusExpired, now.Add(time.Hour), approvals.StatusExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := &approvals.Approval{Status: c.status, ExpiresAt: c.expires}
			if got := a.Effective(now); got != c.want {
				t.Errorf("Effective = %q, want %q", got, c.want)
			}
		})
	}
}
