package evidence_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// BenchmarkFleetExport exports and verifies three instances of 10,000
// records each, archived in the local layout by the real archiver: the
// cost of reading and checking every instance's archive whole.
func BenchmarkFleetExport(b *testing.B) {
	root := b.TempDir()
	for _, name := range []string{"proxy-a", "proxy-b", "proxy-c"} {
		archiveInstance(b, root, name, 10000)
	}
	fa, err := archive.OpenFleet(context.Background(), archive.Config{App: "erp-agent", LocalDir: root})
	if err != nil {
		b.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var buf bytes.Buffer
		start := time.Now()
		s, err := evidence.ExportFleet(context.Background(), &buf, fa, evidence.FleetOptions{Key: key})
		if err != nil {
			b.Fatal(err)
		}
		exp := time.Since(start)
		start = time.Now()
		rep, err := evidence.Verify(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(exp.Milliseconds()), "export-ms")
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "verify-ms")
		b.ReportMetric(float64(buf.Len())/1e6, "MB")
		if rep.Records != s.Records {
			b.Fatalf("verified %d of %d records", rep.Records, s.Records)
		}
	}
}

func archiveInstance(b *testing.B, root, name string, n int) {
	l, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()
	if _, err := l.Append(ctx, ledger.Entry{Kind: record.KindConfig, App: "erp-agent", Decision: record.None,
		Data: map[string]any{"gateway_key": base64.StdEncoding.EncodeToString(pub), "proxy_version": "bench"}}); err != nil {
		b.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if _, err := l.Append(ctx, ledger.Entry{Kind: record.KindRequest, App: "erp-agent", Action: "read_balance",
			Decision: record.Allow, Reason: record.AutoApprove, Digest: fmt.Sprintf("%064x", i),
			Data: map[string]any{"door": "sidecar", "method": "GET", "url": "http://erp.example.com/api/v1/accounts/1010-Cash/balance", "amount": "0"}}); err != nil {
			b.Fatal(err)
		}
	}
	a, err := archive.New(l, archive.Config{App: "erp-agent", Instance: name, LocalDir: root, Key: priv, SegmentRecords: 10000, SegmentInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	a.Close()
}
