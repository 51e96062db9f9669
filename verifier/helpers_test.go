package verifier

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// The writer's known-answer records (ledger/testdata/kat.jsonl; the shell
// commands that reproduce their hashes are in kat_test.go).
const (
	katFile   = "../ledger/testdata/kat.jsonl"
	katDigest = "11d8307e6a4a315d650c03e783033557a85b98346a076f05b1d5ee98fb4b7a12"
	katPolicy = "05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f"
	katHash1  = "670093f4acacbd1c306a391f8b91235700fd0a2518506efb610063987315d258"
	katHash2  = "78035d161d50b88f1d6714cc590032594df7799c1fc11900f72e51ad95bc9182"
)

func readKAT(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(katFile)
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

func stream(records ...[]byte) func() ([]byte, bool, error) {
	return func() ([]byte, bool, error) {
		if len(records) == 0 {
			return nil, false, nil
		}
		r := records[0]
		records = records[1:]
		return r, true, nil
	}
}

// A real ledger file, written by the real writer, is what the stored-chain
// checks are run against.

func openAt(t testing.TB, path string, opts ledger.Options) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendN(t testing.TB, l *ledger.Ledger, n int) {
	t.Helper()
	for i := range n {
		_, err := l.Append(context.Background(), ledger.Entry{
			Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
			Decision: record.Allow, Reason: record.AutoApprove, Digest: katDigest, Policy: katPolicy,
			Data: map[string]any{"amount": fmt.Sprintf("%d.00", 100+i), "n": i},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// verifyInOrder is Verify as one Verifier fed the stored records one by
// one: the reference the parallel check is held to.
func verifyInOrder(t testing.TB, s Store, anchors ...Head) Report {
	t.Helper()
	v := New(1, zeroHash, anchors...)
	head, err := s.Scan(context.Background(), func(key, raw []byte) error {
		if !v.AddKeyed(key, raw) {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		t.Fatal(err)
	}
	if err == nil {
		v.StoredHead(head)
	}
	return v.Finish()
}

// withBatch makes the parallel check cut batches of n records until the
// test ends, so that small chains cross batch joins.
func withBatch(t testing.TB, n int) {
	old := batchRecords
	batchRecords = n
	t.Cleanup(func() { batchRecords = old })
}
