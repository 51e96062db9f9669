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
		"FIGURE\trow d\t0.4x\t3\t>= 0.9x\tbelow\n" +
		"FIGURE\trow e\t0.2x\t3\t>= 0.9x\tbelow\n" +
		"FIGURE\t  floor of e\t0.7x\tsame run\tthe limit\tfloor-below\n"
	if err := os.WriteFile(good, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	out := captureStdout(t, func() error { return printTable(good) })
	// Goal a is met, so its floor counts neither way; b and e are beyond
	// their floors, c is the proxy's own cost, d has no floor line.
	want := "5 figures, 4 below their goal; the durable floor of the same run misses 2 of those too (beyond what one durable write a request allows here) and meets 1 (there the proxy's own cost alone stops it)"
	if !strings.Contains(out, want) {
		t.Fatalf("want %q in:\n%s", want, out)
	}
	// Each floor's verdict is printed on its own row.
	for row, verdict := range map[string]string{
		"floor of a": "floor meets it", "floor of b": "floor below it too",
		"floor of c": "floor meets it", "floor of e": "floor below it too",
	} {
		if !rowHas(out, row, verdict) {
			t.Fatalf("the row of %q does not say %q:\n%s", row, verdict, out)
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
		// A floor belongs to the one goal line before it, not to another
		// floor.
		"floor 2": "FIGURE\trow\t1\t2\t>= 2\tbelow\n" +
			"FIGURE\t  floor 1\t1\t2\tlimit\tfloor-below\n" +
			"FIGURE\t  floor 2\t1\t2\tlimit\tfloor-below\n",
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

// rowHas reports whether the table line that names row also says s.
func rowHas(table, row, s string) bool {
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, row) {
			return strings.Contains(l, s)
		}
	}
	return false
}

// A throughput goal holds only if every round meets it: one lucky round of
// a noisy machine is not the proxy, or its floor, reaching it.
func TestEveryRound(t *testing.T) {
	for _, c := range []struct {
		ratios []float64
		goal   float64
		want   bool
	}{
		{[]float64{0.38, 0.68, 0.61}, 0.6, false},
		{[]float64{0.68, 0.38}, 0.6, false},
		{[]float64{0.6, 0.61, 0.9}, 0.6, true},
		{[]float64{0.91}, 0.9, true},
		{[]float64{0.89}, 0.9, false},
	} {
		if got := everyRound(c.ratios, c.goal); got != c.want {
			t.Errorf("everyRound(%v, %v) = %v, want %v", c.ratios, c.goal, got, c.want)
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
