package ledger

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Known-answer records (testdata/kat.jsonl): the writer must reproduce them
// byte for byte. The shell commands that reproduce their hashes, and the
// verifier's check of them, are in ../verifier/kat_test.go.
const (
	katDigest = "11d8307e6a4a315d650c03e783033557a85b98346a076f05b1d5ee98fb4b7a12"
	katPolicy = "05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f"
	katHash1  = "670093f4acacbd1c306a391f8b91235700fd0a2518506efb610063987315d258"
	katHash2  = "78035d161d50b88f1d6714cc590032594df7799c1fc11900f72e51ad95bc9182"
)

// katEntries are the entries that, appended at katTimes, give kat.jsonl.
var (
	katEntries = []Entry{
		{
			Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
			Decision: "allow", Reason: "auto_approve", Digest: katDigest, Policy: katPolicy,
			Data: map[string]any{"amount": "1250.00", "currency": "USD", "lines": 2, "memo": "accrual <Q1> & €"},
		},
		{
			Kind: record.KindForward, App: "erp-agent", Action: "create_journal_entry",
			Decision: "allow", Digest: katDigest, Policy: katPolicy,
			Data: map[string]any{"status": 201, "latency_ms": int64(42), "request": uint64(1)},
		},
	}
	katTimes = []time.Time{
		time.Date(2026, 1, 15, 14, 30, 0, 123456789, time.UTC),
		// Not UTC on purpose: the ledger must convert.
		time.Date(2026, 1, 15, 9, 30, 0, 187000000, time.FixedZone("EST", -5*3600)),
	}
)

func readKAT(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/kat.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestAppendReproducesKnownAnswer checks the writer end to end: the stored
// bytes are exactly testdata/kat.jsonl.
func TestAppendReproducesKnownAnswer(t *testing.T) {
	i := 0
	l := openTemp(t, Options{Now: func() time.Time { return katTimes[i] }})
	kat := readKAT(t)
	for ; i < len(katEntries); i++ {
		rec, err := l.Append(context.Background(), katEntries[i])
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{katHash1, katHash2}[i]; rec.Hash != want {
			t.Errorf("record %d hash = %s, want %s", rec.Seq, rec.Hash, want)
		}
		raw, err := l.Get(rec.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, kat[i]) {
			t.Errorf("record %d stored as\n%s\nwant\n%s", rec.Seq, raw, kat[i])
		}
	}
	if h := l.Head(); h.Seq != 2 || h.Hash != katHash2 || h.Time != "2026-01-15T14:30:00.187000000Z" {
		t.Errorf("head = %+v", h)
	}
}
