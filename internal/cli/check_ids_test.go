package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const soxManifest = "../../examples/manifests/sox-financial.json"

// zeroKeyPEM is the all-zero Ed25519 public key (a point of order 4), with
// which anybody can make signatures that verify.
const zeroKeyPEM = `-----BEGIN PUBLIC KEY-----
      MCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
      -----END PUBLIC KEY-----`

func writePrincipalsFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "principals.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// badPrincipals: one id in upper case, one with U+0130 (which ToLower
// makes jim), one all-zero key.
const badPrincipals = "principals:\n" +
	"  - {id: jim@corp.example, roles: [cfo, controller]}\n" +
	"  - {id: JIM@corp.example, roles: [cfo]}\n" +
	"  - {id: \"j\u0130m@corp.example\", roles: [controller]}\n" +
	"  - id: mallory@corp.example\n    roles: [cfo]\n    public_key: |\n      " + zeroKeyPEM + "\n"

var badPrincipalsWant = []string{
	`principals[1].id: id "JIM@corp.example" has upper case`,
	"principals[2].id: id \"j\u0130m@corp.example\" is not ASCII",
	`principals[3].public_key: principal "mallory@corp.example": inline public_key: unsafe Ed25519 public key: a small-order point`,
}

func TestCheckPrincipals(t *testing.T) {
	good := writePrincipalsFile(t, "principals:\n  - {id: jim@corp.example, roles: [cfo]}\n")
	bad := writePrincipalsFile(t, badPrincipals)
	cases := []struct {
		name, file string
		code       int
		want       []string
	}{
		{"valid", good, 0, []string{good + ": ok: 1 principals, 0 with a public key", "ok: app financial-ai-assistant"}},
		{"non-canonical ids and a small-order key", bad, 1, badPrincipalsWant},
		{"missing", filepath.Join(t.TempDir(), "nope.yaml"), 1, []string{"nope.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := runCLI(t, &out, "check", soxManifest, "--principals", c.file); code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestServeRefusesNonCanonicalIDsAndUnsafeKeysWithExit2(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	code := runCLI(t, &out, "serve", "--manifest", soxManifest, "--principals", writePrincipalsFile(t, badPrincipals),
		"--data-dir", filepath.Join(dir, "d"), "--admin-addr", "127.0.0.1:0", "--sidecar-addr", "127.0.0.1:0", "--proxy-addr", "127.0.0.1:0")
	if code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, out.String())
	}
	for _, w := range badPrincipalsWant {
		if !strings.Contains(out.String(), w) {
			t.Errorf("problem %q not listed:\n%s", w, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Error("serve made its data directory before refusing the principals file")
	}
}
