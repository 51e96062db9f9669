package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrintTableCountsGoalsNotReferences(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	lines := "noise\n" +
		"FIGURE\trow a\t1\t2\t>= 1\tmeets\n" +
		"FIGURE\trow b\t0.3x\t3\t>= 0.6x\tbelow\n" +
		"FIGURE\t  floor of b\t0.5x\tsame run\tthe limit\tinfo\n"
	if err := os.WriteFile(good, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	out := captureStdout(t, func() error { return printTable(good) })
	if !strings.Contains(out, "2 figures, 1 below their goal") {
		t.Fatalf("an info line must count neither way:\n%s", out)
	}
	if !strings.Contains(out, "floor of b") {
		t.Fatalf("the info line is not in the table:\n%s", out)
	}

	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("FIGURE\trow\t1\t2\tgoal\tmaybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := printTable(bad); err == nil || !strings.Contains(err.Error(), `result "maybe"`) {
		t.Fatalf("an unknown result must be refused, got %v", err)
	}
}

func captureStdout(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	ferr := fn()
	os.Stdout = old
	w.Close()
	out, err := io.ReadAll(r) // the table is far below a pipe's buffer
	if err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return string(out)
}
