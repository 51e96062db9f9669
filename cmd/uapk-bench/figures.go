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
//	FIGURE  row  measured  baseline (same run)  goal  meets|below|floor-meets|floor-below
//
// A floor line is the durable floor measured under the same goal in the
// same run (a plain proxy that makes each request durable and does nothing
// else): it comes right after the goal's own line, is counted as no goal of
// its own, and says whether even the floor reaches the goal, judged as the
// proxy is (a throughput goal in every round). A goal the proxy misses
// while its floor misses it too is beyond what this machine can do with one
// durable write a request; one whose floor reaches it is the proxy's own
// cost. `uapk-bench -mode table FILE` gathers the lines of
// a `make bench` run (bin/bench.txt) into the one table the README quotes.
// Go benchmarks print the same lines (fmt, not b.Log).

// figure prints one figure line.
func figure(row, measured, baseline, goal string, meets bool) {
	printFigure(row, measured, baseline, goal, verdict(meets, "meets", "below"))
}

// floorFigure prints the floor line of the goal figure printed just
// before it: what the durable floor measured (the goal column says what the
// floor is), and whether it reaches that same goal.
func floorFigure(row, measured, baseline, what string, meets bool) {
	printFigure(row, measured, baseline, what, verdict(meets, "floor-meets", "floor-below"))
}

func printFigure(row, measured, baseline, goal, result string) {
	fmt.Printf("FIGURE\t%s\t%s\t%s\t%s\t%s\n", row, measured, baseline, goal, result)
}

func verdict(meets bool, yes, no string) string {
	if meets {
		return yes
	}
	return no
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
	beyond, own := 0, 0 // goals missed whose floor misses them too, or reaches them
	last := ""          // the result of the goal line before, for its floor line
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
		result := fields[4]
		switch result {
		case "meets", "below":
			n++
			if result == "below" {
				below++
			}
			last = result
		case "floor-meets", "floor-below":
			if last == "" {
				return fmt.Errorf("%s: floor line with no goal line before it: %q", file, line)
			}
			meets := result == "floor-meets"
			if last == "below" {
				if meets {
					own++
				} else {
					beyond++
				}
			}
			last = ""
			fields[4] = verdict(meets, "floor meets it", "floor below it too")
		default:
			return fmt.Errorf("%s: figure line with result %q: %q", file, result, line)
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
	fmt.Printf("%d figures, %d below their goal", n, below)
	if beyond+own > 0 {
		fmt.Printf("; the durable floor of the same run misses %d of those too (beyond what one durable write a request allows here) and meets %d (there the proxy's own cost alone stops it)", beyond, own)
	}
	fmt.Println()
	return nil
}
