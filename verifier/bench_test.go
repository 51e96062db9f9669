package verifier

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

var benchRecords = flag.Int("verifier.records", 1_000_000, "records in the ledger BenchmarkVerifyDataDir verifies")

// fill appends n records of a day's traffic with AppendAsync, 10,000 at a
// time, so the writer commits them in full batches.
func fill(t testing.TB, l *ledger.Ledger, n int) {
	t.Helper()
	var mu sync.Mutex
	var failed error
	for i := 0; i < n; {
		var wg sync.WaitGroup
		for j := 0; j < 10000 && i < n; j, i = j+1, i+1 {
			wg.Add(1)
			l.AppendAsync(benchEntry(i), func(_ ledger.Record, err error) {
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		if failed != nil {
			t.Fatal(failed)
		}
	}
}

func benchEntry(i int) ledger.Entry {
	e := ledger.Entry{Kind: record.KindRequest, App: "financial-ai-assistant", Action: "account_reconciliation",
		Decision: record.Allow, Reason: record.AutoApprove, Digest: katDigest, Policy: katPolicy,
		Data: map[string]any{"door": "sidecar", "method": "POST", "url": fmt.Sprintf("http://erp.example.com/api/v1/reconciliations?n=%d", i),
			"body_sha256": katDigest, "body_size": 412, "on_behalf_of": "accountant@corp.example", "justification": "month-end close"}}
	if i%2 == 1 {
		e = ledger.Entry{Kind: record.KindForward, App: e.App, Action: e.Action, Decision: record.Allow, Reason: "forwarded",
			Digest: katDigest, Policy: katPolicy, Data: map[string]any{"request_record": i, "status": 200, "latency_ms": 3,
				"response_sha256": katPolicy, "response_size": 88}}
	}
	return e
}

// BenchmarkVerifyDataDir is `uapk-proxy verify --data-dir` on a ledger of
// 1,000,000 records (-verifier.records to change it), opened read-only as
// the command does, against its physical floor measured in the same run:
// reading the same records through the same read (ScanBatches) and SHA-256
// hashing their bytes. ratio_to_floor is the verifier's records/s over the
// floor's (1 would be verification for free).
//
//	go test -run '^$' -bench VerifyDataDir -benchtime 1x ./verifier/
func BenchmarkVerifyDataDir(b *testing.B) {
	n := *benchRecords
	path := filepath.Join(b.TempDir(), "ledger.db")
	w, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	fill(b, w, n)
	w.Close()
	b.Logf("built a ledger of %d records in %s", n, time.Since(start).Round(time.Millisecond))
	l, err := ledger.Open(path, ledger.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	// The floor is the cheaper of the ledger's two reads, ScanBatches
	// (what Verify uses), with a SHA-256 of every record; Scan's, the
	// one-record-at-a-time read main's verifier used, is shown beside it.
	var sum [32]byte
	h := sha256.New()
	hash := func(raw []byte) {
		h.Reset()
		h.Write(raw)
		h.Sum(sum[:0])
	}
	floor := func() time.Duration {
		t0 := time.Now()
		if _, err := l.ScanBatches(context.Background(), func(_, raws [][]byte) error {
			for _, raw := range raws {
				hash(raw)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	scanFloor := func() time.Duration {
		t0 := time.Now()
		if _, err := l.Scan(context.Background(), func(_, raw []byte) error { hash(raw); return nil }); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	floor() // warm the page cache for both
	var verify, base, scanBase time.Duration
	for b.Loop() {
		base += floor()
		scanBase += scanFloor()
		t0 := time.Now()
		rep, err := Verify(context.Background(), l)
		verify += time.Since(t0)
		if err != nil || !rep.OK || rep.Records != uint64(n) {
			b.Fatalf("verify: %+v %v", rep, err)
		}
	}
	rate, floorRate := float64(n*b.N)/verify.Seconds(), float64(n*b.N)/base.Seconds()
	b.ReportMetric(rate, "records/s")
	b.ReportMetric(floorRate, "floor-records/s")
	b.ReportMetric(rate/floorRate, "ratio_to_floor")
	scanRate := float64(n*b.N) / scanBase.Seconds()
	b.ReportMetric(scanRate, "scan-floor-records/s")
	fmt.Printf("FIGURE\tverify --data-dir, %d records\t%.0f records/s\tfloor (read + SHA-256 each record) %.0f records/s: ratio %.2f\t>= 500,000 records/s\t%s\n",
		n, rate, floorRate, rate/floorRate, meets(rate >= 500_000))
	b.Logf("verify: %.0f records/s (goal >= 500000); floor (ScanBatches + SHA-256 of each record): %.0f records/s; ratio %.2f (Scan + SHA-256: %.0f records/s)",
		rate, floorRate, rate/floorRate, scanRate)
}

// BenchmarkCheckRecord is the per-record cost of each path on the first
// known-answer record.
func BenchmarkCheckRecord(b *testing.B) {
	raw := readKAT(b)[0]
	sc := newScratch()
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if c := checkRecord(raw, sc); c.err != nil {
				b.Fatal(c.err)
			}
		}
	})
	b.Run("jcs", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if c := slowRecord(raw, sc); c.err != nil {
				b.Fatal(c.err)
			}
		}
	})
}

// meets is the verdict of a FIGURE line (see cmd/uapk-bench).
func meets(ok bool) string {
	if ok {
		return "meets"
	}
	return "below"
}
