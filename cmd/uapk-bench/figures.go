package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

// Every measurement of the performance goals prints one figure line as it
// is made, tab-separated after "FIGURE":
//
//	FIGURE  row  measured  baseline (same run)  goal  meets|below|info
//
// An info line is a reference figure with no goal of its own (the durable
// floor a goal is held to): it is tabled under the goal it explains and
// counted neither way.
// and `uapk-bench -mode table FILE` gathers those of a `make bench` run
// (bin/bench.txt) into the one table the README quotes. Go benchmarks print
// the same lines (fmt, not b.Log).

// figure prints one figure line.
func figure(row, measured, baseline, goal string, meets bool) {
	verdict := "below"
	if meets {
		verdict = "meets"
	}
	fmt.Printf("FIGURE\t%s\t%s\t%s\t%s\t%s\n", row, measured, baseline, goal, verdict)
}

// info prints a reference figure line; what stands in its goal column says
// what the figure is.
func info(row, measured, baseline, what string) {
	fmt.Printf("FIGURE\t%s\t%s\t%s\t%s\tinfo\n", row, measured, baseline, what)
}

// printTable prints the figure lines of file as a table, in the order they
// came, and says which goals were not met.
func printTable(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tmeasured\tbaseline, same run\tgoal\tresult\t")
	n, below := 0, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "FIGURE\t")
		if !ok {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 5 {
			return fmt.Errorf("%s: figure line with %d fields: %q", file, len(fields), line)
		}
		switch fields[4] {
		case "meets":
			n++
		case "below":
			n++
			below++
		case "info":
		default:
			return fmt.Errorf("%s: figure line with result %q: %q", file, fields[4], line)
		}
		fmt.Fprintln(w, strings.Join(fields, "\t")+"\t")
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: no figure lines", file)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d figures, %d below their goal\n", n, below)
	return nil
}
