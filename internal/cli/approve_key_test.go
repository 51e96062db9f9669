package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// TestApproveWithPublicKeySaysSoFirst: `approve --key PREFIX.pub` (0644, as
// keygen writes it) must first say that the file is a public key, not a
// private key, and never start by telling the approver to chmod 600 it.
// The key is read before any admin call, so no proxy runs here.
func TestApproveWithPublicKeySaysSoFirst(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "fm")
	var out bytes.Buffer
	if code := runCLI(t, &out, "keygen", "--out", prefix); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, out.String())
	}
	pub := prefix + ".pub"
	if err := os.Chmod(pub, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	out.Reset()
	code := runCLI(t, &out, "approve", "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", "--as", "fm@corp.example",
		"--key", pub, "--admin", "http://127.0.0.1:1")
	if code != 2 {
		t.Fatalf("exit %d, want 2 (a bad --key): %s", code, out.String())
	}
	msg := out.String()
	at := strings.Index(msg, "not a private key")
	if at < 0 || !strings.Contains(msg[:at], "public key") {
		t.Fatalf("message does not say first that %s is a public key, not a private key: %q", pub, msg)
	}
	if c := strings.Index(msg, "chmod"); c >= 0 && c < at {
		t.Errorf("message speaks of chmod before saying the file is a public key: %q", msg)
	}
}

// TestShowNeverWritesControlBytes: an approval's body and fields reach the
// approver's terminal with escape sequences, carriage returns and
// bidirectional overrides escaped, so a body cannot repaint the screen or
// reorder the amount the approver reads.
func TestShowNeverWritesControlBytes(t *testing.T) {
	a := &approvals.Approval{ID: "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", Kind: approvals.KindRequest, Status: approvals.StatusPending,
		Action: "journal_entry", Method: "POST", URL: "http://erp/api/v1/journal-entries",
		Justification: "accrual\x1b[2J\x1b[Happroved by CFO\r", Amount: "1",
		Body: "{\"memo\":\"\u202e0001\",\"amount\":1,\"x\":\"\x1b]0;title\x07\"}"}
	var out bytes.Buffer
	describeApproval(&out, a)
	for _, bad := range []string{"\x1b", "\r", "\x07", "\u202e"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("show wrote %q:\n%s", bad, out.String())
		}
	}
	if !strings.Contains(out.String(), `\u001b[2J`) || !strings.Contains(out.String(), `\u202e0001`) {
		t.Errorf("the escapes are not shown:\n%s", out.String())
	}
}
