package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

type fileFixture struct {
	v    *Verifier
	path string
	clk  *clock
	log  *logBuffer
}

func newFileFixture(t *testing.T, path string) fileFixture {
	t.Helper()
	f := fileFixture{path: path, clk: newClock(), log: &logBuffer{}}
	v, err := New(context.Background(), Config{JWKS: path, Issuer: testIssuer, Audience: testAudience, Now: f.clk.Now, Logger: zerolog.New(f.log)})
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

func (f fileFixture) verify(t *testing.T, token string, want error) {
	t.Helper()
	_, err := f.v.Verify(context.Background(), token)
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("Verify: %v, want %v", err, want)
	}
}

func (f fileFixture) refetched() bool {
	f.v.mu.Lock()
	defer f.v.mu.Unlock()
	return !f.v.lastRefetch.IsZero()
}

func TestFileJWKS(t *testing.T) {
	k := loadKeys(t)
	rotated := newEdSigner(t, "ed-2")
	old, next := mint(t, k.rsa, claims()), mint(t, rotated, claims())

	t.Run("valid tokens", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, path, jwksOf(t, k.all()...))
		f := newFileFixture(t, path)
		for _, s := range k.all() {
			f.verify(t, mint(t, s, claims()), nil)
		}
	})

	t.Run("rewrite seen by the stat check", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, path, jwksOf(t, k.rsa))
		f := newFileFixture(t, path)
		writeFile(t, path, jwksOf(t, rotated)) // rsa-1 withdrawn, ed-2 in

		// Within a second of the last stat the file is not looked at.
		f.verify(t, old, nil)
		f.clk.Advance(fileCheckInterval)
		f.verify(t, next, nil)
		if f.refetched() {
			t.Errorf("the new key came from an unknown-kid refetch, not the stat check")
		}
		f.verify(t, old, ErrUnknownKey)
	})

	t.Run("rewrite seen by an unknown kid", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, path, jwksOf(t, k.rsa))
		f := newFileFixture(t, path)
		writeFile(t, path, jwksOf(t, k.rsa, rotated))
		f.verify(t, next, nil) // no time passed: the unknown kid re-reads
		if !f.refetched() {
			t.Errorf("the new key was not picked up by the unknown-kid refetch")
		}
		f.verify(t, old, nil)
	})

	t.Run("broken rewrite keeps the keys", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, path, jwksOf(t, k.rsa))
		f := newFileFixture(t, path)
		writeFile(t, path, []byte(`{"keys":[{"kty":`)) // a half-written file
		f.clk.Advance(fileCheckInterval)
		f.verify(t, old, nil)
		if !strings.Contains(f.log.String(), "jwks load failed") {
			t.Errorf("no warning for the broken file:\n%s", f.log)
		}
		// Once the writer finishes, the next check reads the whole file.
		writeFile(t, path, jwksOf(t, k.rsa, rotated))
		f.clk.Advance(fileCheckInterval)
		f.verify(t, next, nil)
		if f.refetched() {
			t.Errorf("the fixed file was picked up by a refetch, not the stat check")
		}
	})

	t.Run("file removed keeps the keys", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		writeFile(t, path, jwksOf(t, k.rsa))
		f := newFileFixture(t, path)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		f.clk.Advance(fileCheckInterval)
		f.verify(t, old, nil)
		f.clk.Advance(fileCheckInterval)
		f.verify(t, old, nil)
		if got := strings.Count(f.log.String(), "cannot be stat'ed"); got != 1 {
			t.Errorf("%d stat warnings, want 1 (logged once, not every second)", got)
		}
	})

	// Kubernetes mounts a ConfigMap or Secret as jwks.json -> ..data/jwks.json,
	// ..data -> a timestamped directory, and rotates by swapping ..data.
	t.Run("kubernetes symlink swap", func(t *testing.T) {
		dir := t.TempDir()
		mount := func(name string, body []byte) {
			if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, name, "jwks.json"), body)
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink(name, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}
		a, b := newEdSigner(t, "ed-a"), newEdSigner(t, "ed-b")
		mount("..2026_03_01_12_00_00.1", jwksOf(t, a))
		path := filepath.Join(dir, "jwks.json")
		if err := os.Symlink(filepath.Join("..data", "jwks.json"), path); err != nil {
			t.Fatal(err)
		}
		f := newFileFixture(t, path)
		f.verify(t, mint(t, a, claims()), nil)

		// A set of the same size: the file's identity is what tells.
		before, _ := os.Stat(path)
		mount("..2026_03_01_12_10_00.1", jwksOf(t, b))
		if after, _ := os.Stat(path); after.Size() != before.Size() {
			t.Fatalf("sizes differ (%d, %d); the test wants them equal", before.Size(), after.Size())
		}
		f.clk.Advance(fileCheckInterval)
		f.verify(t, mint(t, b, claims()), nil)
		if f.refetched() {
			t.Errorf("the swapped file was picked up by a refetch, not the stat check")
		}
		f.verify(t, mint(t, a, claims()), ErrUnknownKey)
	})
}
