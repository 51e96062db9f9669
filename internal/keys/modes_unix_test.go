//go:build unix

package keys_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// umask is the process's file-creation mask. WritePair asks for 0644 on the
// .pub; the kernel then removes the umask's bits. The .key is 0600 whatever
// the umask, since a umask can only remove bits.
var umask = func() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}()

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestWritePairModes(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "approver")
	pub, priv, _ := keys.Generate()
	if err := keys.WritePair(prefix, pub, priv); err != nil {
		t.Fatal(err)
	}
	if got := perm(t, prefix+".key"); got != 0o600 {
		t.Errorf(".key mode %#o, want 0600", got)
	}
	if got, want := perm(t, prefix+".pub"), 0o644&^umask; got != want {
		t.Errorf(".pub mode %#o, want %#o (0644 under umask %#o)", got, want, umask)
	}
}

func TestLoadOrCreateMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.key")
	if _, _, err := keys.LoadOrCreate(path); err != nil {
		t.Fatal(err)
	}
	if got := perm(t, path); got != 0o600 {
		t.Errorf("created key mode %#o, want 0600", got)
	}
}

func TestLoadPrivateFileModes(t *testing.T) {
	cases := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true}, // the owner's execute bit shares nothing
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o660, false},
		{0o606, false},
		{0o610, false}, // group execute alone: still not the owner's alone
		{0o601, false},
		{0o666, false},
		{0o777, false},
	}
	key := readTestdata(t, "openssl-ed25519.key")
	for _, c := range cases {
		t.Run(c.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "approver.key")
			if err := os.WriteFile(path, key, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			k, err := keys.LoadPrivateFile(path)
			if c.ok {
				if err != nil || k == nil {
					t.Fatalf("mode %#o refused: %v", c.mode, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("mode %#o: loaded a key others can read", c.mode)
			}
			if k != nil {
				t.Error("returned the key along with the error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "chmod 600") || !strings.Contains(msg, path) {
				t.Errorf("error %q should name the file and say to chmod 600 it", msg)
			}
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, keys.ErrNotEd25519) {
				t.Errorf("error %v looks like another failure", err)
			}
		})
	}
}

// TestLoadPrivateFileSymlink: the mode checked is the key file's, not the
// link's (links are always 0777).
func TestLoadPrivateFileSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.key")
	if err := os.WriteFile(target, readTestdata(t, "openssl-ed25519.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(target, link); err != nil {
		t.Skip(err)
	}
	if _, err := keys.LoadPrivateFile(link); err != nil {
		t.Errorf("0600 key through a symlink: %v", err)
	}
	if err := os.Chmod(target, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.LoadPrivateFile(link); err == nil {
		t.Error("0644 key through a symlink was loaded")
	}
}
