//go:build unix

package ledger

import (
	"bytes"

	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHotPathCPU is the ledger's part of a busy proxy's request, and
// only that: 32 agents, each appending its request record (data built as
// the gate builds it) and waiting for it, then its forward record without
// waiting. It reports the whole process's CPU per request (cpu-µs/op),
// fdatasyncs included, and the allocations per request:
//
//	go test -run '^$' -bench HotPathCPU -benchtime 20000x -count 3 ./ledger/
func BenchmarkHotPathCPU(b *testing.B) {
	l := openTemp(b, Options{})
	const agents = 32
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				req := record.Request{Door: "sidecar", Method: "POST", URL: "http://erp.example.com/api/v1/reconciliations",
					BodySHA256: katDigest, BodySize: 75, OnBehalfOf: "accountant@corp.example", CallerVerified: false}
				rec, err := l.Append(context.Background(), Entry{Kind: record.KindRequest, App: "erp-agent",
					Action: "reconcile_account", Decision: record.Allow, Reason: "auto_approve", Digest: katDigest,
					Policy: katPolicy, Data: req.Map()})
				if err != nil {
					b.Error(err)
					return
				}
				fwd := record.Forward{RequestRecord: rec.Seq, LatencyMS: 0, LatencyUS: 412, Status: 200,
					ResponseSHA256: katDigest, ResponseSize: 58}
				l.AppendAsync(Entry{Kind: record.KindForward, App: "erp-agent", Action: "reconcile_account",
					Decision: record.Allow, Reason: record.Forwarded, Digest: katDigest, Policy: katPolicy,
					Data: fwd.Map()}, func(_ Record, err error) {
					if err != nil {
						b.Error(err)
					}
				})
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	reportBatching(b, l)
}

// BenchmarkWriterEncode is the writer's part of BenchmarkEncodeRecord as
// the writer runs it: a batch of 8 records (a request and a forward
// record, four times) sharing one slab and one SHA-256 state, the time of
// each record formatted. Per record.
func BenchmarkWriterEncode(b *testing.B) {
	batch := writerBenchBatch(b)
	h := Head{Seq: 41, Hash: katHash1}
	t := time.Date(2026, 1, 15, 14, 30, 0, 123456789, time.UTC)
	var enc recordEncoder
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(batch) == 0 {
			enc.begin(batch)
		}
		p := batch[i%len(batch)]
		rec := newRecord(p.e, h, t)
		if _, err := enc.encode(&rec, &p.parts); err != nil {
			b.Fatal(err)
		}
		h = Head{Seq: rec.Seq, Hash: rec.Hash}
		i++
	}
}

// writerBenchBatch is the writer benchmarks' group: a request and a
// forward record, four times.
func writerBenchBatch(b *testing.B) []*pending {
	var batch []*pending
	for range 4 {
		for _, e := range []Entry{benchEntry(), forwardEntry(41, record.Forwarded)} {
			p, err := prepare(e)
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, p)
		}
	}
	return batch
}

// BenchmarkWriterEncodeOld is BenchmarkWriterEncode the former way
// (oldEncodeRecord, time.Format), for a ratio in the same run.
func BenchmarkWriterEncodeOld(b *testing.B) {
	batch := writerBenchBatch(b)
	h := Head{Seq: 41, Hash: katHash1}
	t := time.Date(2026, 1, 15, 14, 30, 0, 123456789, time.UTC)
	var scratch []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(batch) == 0 {
			scratch = nil
		}
		p := batch[i%len(batch)]
		rec := newRecord(p.e, h, t)
		rec.Time = t.UTC().Format(TimeLayout)
		var err error
		if _, scratch, err = oldEncodeRecord(&rec, &p.parts, scratch); err != nil {
			b.Fatal(err)
		}
		h = Head{Seq: rec.Seq, Hash: rec.Hash}
		i++
	}
}

// BenchmarkApply is the applier's part of a busy proxy's request: request
// records (each opening a forward_pending key) and their forward records
// (each closing it), journaled and copied into bbolt in transactions of
// applyBatch records, as applyLoop copies them under load. Per pair.
func BenchmarkApply(b *testing.B) {
	const applyBatch = 640
	l := openTemp(b, Options{JournalSize: -1})
	raw := bytes.Repeat([]byte("r"), 420)
	var seq uint64
	recs := make([]jrec, 0, applyBatch)
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		seq++
		recs = append(recs, jrec{seq: seq, raw: raw, hash: katDigest, time: "2026-12-01T00:00:00.000000000Z", opens: true})
		seq++
		recs = append(recs, jrec{seq: seq, raw: raw, hash: katDigest, time: "2026-12-01T00:00:00.000000000Z", closes: seq - 1})
		if len(recs) == applyBatch {
			if err := l.db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, recs) }); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
