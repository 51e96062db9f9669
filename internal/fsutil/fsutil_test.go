package fsutil_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
)

func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	p := filepath.Join(dir, "k.pub")
	if err := fsutil.WriteNew(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v (%v), want 0644 whatever the umask", st.Mode().Perm(), err)
	}
	err = fsutil.WriteNew(p, []byte("two"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Errorf("an existing file was changed: %q", b)
	}
	if err := fsutil.WriteNew(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
}
