package fsutil_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestReadRegularRefusesAFIFO: a FIFO named as a key file would block the
// proxy's start forever (and past SIGTERM); it is refused at once.
func TestReadRegularRefusesAFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gateway.key")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := fsutil.ReadRegular(p, 1<<10); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ReadRegular of a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadRegular blocked on a FIFO")
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fsutil.ReadRegular(big, 1024); err == nil {
		t.Error("a file over the limit was read")
	}
	if b, err := fsutil.ReadRegular(big, 2048); err != nil || len(b) != 2048 {
		t.Errorf("a file at the limit: %d bytes, %v", len(b), err)
	}
}
