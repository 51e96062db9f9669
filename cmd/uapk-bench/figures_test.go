package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrintTableCountsGoalsNotFloors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	lines := "noise\n" +
		"FIGURE\trow a\t1\t2\t>= 1\tmeets\n" +
		"FIGURE\t  floor of a\t2\tsame run\tthe limit\tfloor-meets\n" +
		"FIGURE\trow b\t0.3x\t3\t>= 0.6x\tbelow\n" +
		"FIGURE\t  floor of b\t0.5x\tsame run\tthe limit\tfloor-below\n" +
		"FIGURE\trow c\t3.1\t2\t<= 2\tbelow\n" +
		"FIGURE\t  floor of c\t1.9\tsame run\tthe limit\tfloor-meets\n" +
		"FIGURE\trow d\t0.4x\t3\t>= 0.9x\tbelow\n"
	if err := os.WriteFile(good, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	out := captureStdout(t, func() error { return printTable(good) })
	// Goal a is met, so its floor counts neither way; b is beyond the
	// floor, c is the proxy's own cost, d has no floor line.
	want := "4 figures, 3 below their goal; the durable floor of the same run is below 1 of those too (beyond one durable write a request on this machine) and reaches 1 (the proxy's own cost)"
	if !strings.Contains(out, want) {
		t.Fatalf("want %q in:\n%s", want, out)
	}
	for _, s := range []string{"floor of b", "floor below it too", "floor meets it"} {
		if !strings.Contains(out, s) {
			t.Fatalf("%q is not in the table:\n%s", s, out)
		}
	}

	noFloors := filepath.Join(dir, "nofloors.txt")
	if err := os.WriteFile(noFloors, []byte("FIGURE\trow\t1\t2\t>= 1\tbelow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := captureStdout(t, func() error { return printTable(noFloors) }); !strings.HasSuffix(out, "1 figures, 1 below their goal\n") {
		t.Fatalf("with no floor lines the summary says nothing of floors:\n%s", out)
	}

	for name, text := range map[string]string{
		`result "maybe"`:         "FIGURE\trow\t1\t2\tgoal\tmaybe\n",
		"no goal line before it": "FIGURE\t  floor\t1\t2\tlimit\tfloor-below\n",
		"with 4 fields":          "FIGURE\trow\t1\t2\tmeets\n",
	} {
		bad := filepath.Join(dir, "bad.txt")
		if err := os.WriteFile(bad, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := printTable(bad); err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%q must be refused with %q, got %v", text, name, err)
		}
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
