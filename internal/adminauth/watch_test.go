package adminauth

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestWatchPicksUpChangesAndKeepsTokensOnABadOne: a revoked token stops
// working and a new one starts within a second of the file's change; a
// change that does not load keeps the tokens in force and is logged once.
func TestWatchPicksUpChangesAndKeepsTokensOnABadOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	write := func(body string) {
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as a ConfigMap swap does: a new inode
			t.Fatal(err)
		}
	}
	entry := func(name, tok string) string {
		return "  - {name: " + name + ", sha256: " + Hash(tok) + ", scopes: [read]}\n"
	}
	write("tokens:\n" + entry("old", "tok-old"))
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var logs bytes.Buffer
	ws, err := Watch(path, func() time.Time { return at }, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Authenticate("Bearer tok-old"); err != nil {
		t.Fatal(err)
	}
	write("tokens:\n" + entry("new", "tok-new"))
	// Within the second the file is not looked at again.
	if _, err := ws.Authenticate("Bearer tok-old"); err != nil {
		t.Fatalf("reloaded before a second passed: %v", err)
	}
	at = at.Add(time.Second)
	if _, err := ws.Authenticate("Bearer tok-old"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked token: %v", err)
	}
	if h, err := ws.Authenticate("Bearer tok-new"); err != nil || h.Name != "new" {
		t.Fatalf("new token: %+v %v", h, err)
	}
	// A broken change keeps the tokens in force.
	write("tokens:\n  - {name: x, sha256: nothex, scopes: [read]}\n")
	at = at.Add(time.Second)
	ws.Authenticate("Bearer x")
	at = at.Add(time.Second)
	if _, err := ws.Authenticate("Bearer tok-new"); err != nil {
		t.Fatalf("a broken file dropped the tokens in force: %v", err)
	}
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Errorf("the failure was logged %d times:\n%s", n, logs.String())
	}
	// A file that goes away keeps them too.
	os.Remove(path)
	at = at.Add(time.Second)
	if _, err := ws.Authenticate("Bearer tok-new"); err != nil {
		t.Fatalf("a removed file dropped the tokens in force: %v", err)
	}
}
