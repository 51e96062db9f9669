package durablefloor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestWritesLandInOrderAndCloseRefuses: concurrent writes all return nil
// and every one's bytes are in the file, each whole; after Close a write
// is refused rather than lost.
func TestWritesLandInOrderAndCloseRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "floor")
	w, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				if err := w.Write(fmt.Appendf(nil, "<w%d-%03d>", i, j)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != FileSize {
		t.Fatalf("file is %d bytes, want %d (written before use, never extended)", len(got), FileSize)
	}
	for i := range writers {
		last := -1
		for j := range each {
			at := bytes.Index(got, fmt.Appendf(nil, "<w%d-%03d>", i, j))
			if at < 0 {
				t.Fatalf("write %d of writer %d is not in the file", j, i)
			}
			if at < last {
				t.Fatalf("writer %d: write %d landed before write %d", i, j, j-1)
			}
			last = at
		}
	}
}

// TestWrapsAtFileSize: a group that would run past the end starts again
// at the beginning, so the file never grows.
func TestWrapsAtFileSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "floor")
	w, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'a'}, FileSize/2+1)
	if err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(bytes.Repeat([]byte{'b'}, FileSize/2+1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != FileSize {
		t.Fatalf("file grew to %d bytes", st.Size())
	}
	got, _ := os.ReadFile(path)
	if got[0] != 'b' {
		t.Fatalf("the second write did not start again at the beginning: %q", got[0])
	}
}
