package archive

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// The archive runs against a real ledger in a temporary file.

func openTemp(t testing.TB, opts ledger.Options) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

const (
	testDigest = "11d8307e6a4a315d650c03e783033557a85b98346a076f05b1d5ee98fb4b7a12"
	testPolicy = "05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f"
)

func entry(i int) ledger.Entry {
	return ledger.Entry{
		Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
		Decision: record.Allow, Reason: record.AutoApprove, Digest: testDigest, Policy: testPolicy,
		Data: map[string]any{"amount": fmt.Sprintf("%d.00", 100+i), "n": i},
	}
}

func appendN(t testing.TB, l *ledger.Ledger, n int) []ledger.Record {
	t.Helper()
	recs := make([]ledger.Record, n)
	for i := range recs {
		rec, err := l.Append(context.Background(), entry(i))
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = rec
	}
	return recs
}

func mustVerify(t testing.TB, l *ledger.Ledger, records uint64) {
	t.Helper()
	rep, err := verifier.Verify(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != records {
		t.Fatalf("verify: ok=%v records=%d (want %d) problem=%+v", rep.OK, rep.Records, records, rep.Problem)
	}
}

// benchEntry is a typical request record.
func benchEntry() ledger.Entry {
	return ledger.Entry{
		Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
		Decision: record.Allow, Reason: record.AutoApprove, Digest: testDigest, Policy: testPolicy,
		Data: map[string]any{
			"door":          "sidecar",
			"method":        "POST",
			"url":           "http://erp.example.com/api/v1/journal-entries?company=1&period=2026-01",
			"body_sha256":   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			"body_size":     412,
			"amount":        "1250.00",
			"on_behalf_of":  "controller@corp.example",
			"justification": "Q1 accrual <reversal> & re-post, approved in ticket FIN-4711",
		},
	}
}

func reportBatching(b *testing.B, l *ledger.Ledger) {
	s := l.Stats()
	if s.Commits > 0 {
		b.ReportMetric(float64(s.Appends)/float64(s.Commits), "records/commit")
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// putRecord stores raw under its seq and as the head, as the writer would
// have: a test's way to build a chain the writer did not.
func putRecord(t testing.TB, tx *bolt.Tx, seq uint64, raw []byte) {
	t.Helper()
	if err := tx.Bucket([]byte(ledger.BucketRecords)).Put(seqKey(seq), raw); err != nil {
		t.Fatal(err)
	}
	var h ledger.Head
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(h)
	if err := tx.Bucket([]byte(ledger.BucketMeta)).Put([]byte("head"), b); err != nil {
		t.Fatal(err)
	}
}
