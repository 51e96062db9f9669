package adminauth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileAndAuthenticate(t *testing.T) {
	p := writeFile(t, "tokens:\n"+
		"  - name: desk\n    sha256: "+Hash("desk-secret")+"\n    scopes: [read, decide]\n"+
		"  - name: auditor\n    sha256: "+Hash("audit-secret")+"\n    scopes: [evidence]\n")
	set, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := set.Authenticate("Bearer desk-secret")
	if err != nil || h.Name != "desk" || !h.Has(Read) || !h.Has(Decide) || h.Has(Override) || h.Has(Evidence) {
		t.Fatalf("desk: %+v %v (scopes %v)", h, err, h.Scopes())
	}
	if h, err := set.Authenticate("bearer  audit-secret "); err != nil || h.Name != "auditor" || h.Has(Read) {
		t.Fatalf("auditor: %+v %v", h, err)
	}
	for _, hdr := range []string{"Bearer desk-secreT", "Basic ZGVzazpkZXNr", "Bearer", "desk-secret", "Bearer " + strings.Repeat("x", MaxTokenLen+1), "Bearer " + Hash("desk-secret")} {
		if _, err := set.Authenticate(hdr); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", hdr, err)
		}
	}
	if _, err := set.Authenticate(""); !errors.Is(err, ErrMissing) {
		t.Errorf("empty: %v", err)
	}
}

func TestLoadFileRefusals(t *testing.T) {
	good := Hash("x")
	cases := []struct{ name, body, want string }{
		{"unknown key", "tokens:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n    secret: x\n", "field secret not found"},
		{"no tokens", "tokens: []\n", "no tokens listed"},
		{"no name", "tokens:\n  - sha256: " + good + "\n    scopes: [read]\n", "tokens[0]: name is required"},
		{"short hash", "tokens:\n  - name: a\n    sha256: abc\n    scopes: [read]\n", "tokens[0]: sha256 must be 64"},
		{"upper hash", "tokens:\n  - name: a\n    sha256: " + strings.ToUpper(good) + "\n    scopes: [read]\n", "sha256 must be 64 lower-case"},
		{"no scopes", "tokens:\n  - name: a\n    sha256: " + good + "\n", "scopes is required"},
		{"bad scope", "tokens:\n  - name: a\n    sha256: " + good + "\n    scopes: [admin]\n", `unknown scope "admin"`},
		{"twice", "tokens:\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n  - name: a\n    sha256: " + good + "\n    scopes: [read]\n", `tokens[1]: name "a" is listed twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadFile(writeFile(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
	// Every problem is listed, not just the first.
	_, err := LoadFile(writeFile(t, "tokens:\n  - name: a\n    sha256: abc\n    scopes: [admin]\n"))
	if err == nil || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), "admin") {
		t.Fatalf("want both problems: %v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	set, path, created, err := LoadOrCreate(dir)
	if err != nil || !created || path != filepath.Join(dir, FileName) {
		t.Fatalf("%v %v %q", err, created, path)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	tok, err := ReadTokenFile(path)
	if err != nil || len(tok) < 40 {
		t.Fatalf("token %q %v", tok, err)
	}
	h, err := set.Authenticate("Bearer " + tok)
	if err != nil || len(h.Scopes()) != len(Scopes) {
		t.Fatalf("%+v %v", h, err)
	}
	// A second start reads the same token back.
	set2, _, created, err := LoadOrCreate(dir)
	if err != nil || created {
		t.Fatalf("%v %v", err, created)
	}
	if _, err := set2.Authenticate("Bearer " + tok); err != nil {
		t.Fatal(err)
	}
	// Another install's token is not this one's.
	set3, _, _, _ := LoadOrCreate(t.TempDir())
	if _, err := set3.Authenticate("Bearer " + tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign token: %v", err)
	}
	// A token file others may read is refused, and so not used.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token: %v", err)
	}
	if err := os.WriteFile(path, []byte("two tokens\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o600)
	if _, err := ReadTokenFile(path); err == nil {
		t.Fatal("a file with two words was taken as a token")
	}
}
