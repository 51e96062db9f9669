package ledger

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
	"github.com/uapk-gateway/uapk-proxy/record"
)

func reportBatching(b *testing.B, l *Ledger) {
	s := l.Stats()
	if s.Commits > 0 {
		b.ReportMetric(float64(s.Appends)/float64(s.Commits), "records/commit")
	}
}

// journalModes runs a benchmark with the journal and without it (every
// group a bbolt commit), so the two are measured in the same run.
func journalModes(b *testing.B, fn func(b *testing.B, opts Options)) {
	b.Run("journal", func(b *testing.B) { fn(b, Options{}) })
	b.Run("bbolt", func(b *testing.B) { fn(b, Options{JournalSize: -1}) })
}

// BenchmarkAppendSerial is one caller at a time: every append pays a whole
// commit and sync, the latency a lone request sees.
func BenchmarkAppendSerial(b *testing.B) {
	journalModes(b, func(b *testing.B, opts Options) {
		l := openTemp(b, opts)
		e := entry(1)
		for b.Loop() {
			if _, err := l.Append(context.Background(), e); err != nil {
				b.Fatal(err)
			}
		}
		reportBatching(b, l)
	})
}

// BenchmarkAppendParallel is many concurrent requests, as a busy proxy sees
// them: group commit shares each sync among the callers waiting for it.
func BenchmarkAppendParallel(b *testing.B) {
	journalModes(b, func(b *testing.B, opts Options) {
		l := openTemp(b, opts)
		b.SetParallelism(16) // appends wait on I/O, not CPU: use more callers than cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			e := entry(1)
			for pb.Next() {
				if _, err := l.Append(context.Background(), e); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		reportBatching(b, l)
	})
}

// benchEntry is a request record as the gate writes it.
func benchEntry() Entry {
	return Entry{
		Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
		Decision: "allow", Reason: "auto_approve", Digest: katDigest, Policy: katPolicy,
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

// BenchmarkEncodeRecord is the CPU cost of turning one entry into its stored
// bytes and hash, no bbolt, no fsync: the caller's part (checks, encoding
// the entry) and the writer's part for a group of one (BenchmarkWriterEncode
// is the writer's part alone, in groups).
func BenchmarkEncodeRecord(b *testing.B) {
	e := benchEntry()
	h := Head{Seq: 41, Hash: katHash1}
	t := time.Date(2026, 1, 15, 14, 30, 0, 123456789, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		if err := checkEntry(&e); err != nil {
			b.Fatal(err)
		}
		parts, err := encodeParts(&e)
		if err != nil {
			b.Fatal(err)
		}
		rec := newRecord(e, h, t)
		if _, err = encodeRecord(&rec, &parts); err != nil {
			b.Fatal(err)
		}
		parts.release()
	}
}

// BenchmarkAgentCycle is what one agent on one connection costs the ledger
// per request: its request record appended and waited for, then its forward
// record appended without waiting, as the gate does. It interleaves three
// things each iteration so that they share the disk's mood: a bare
// fdatasync of 4 KiB overwritten in a file whose blocks exist (the physical
// floor), a cycle with the journal, and a cycle without it (every group a
// bbolt commit). It reports each cycle in fdatasyncs of the floor.
func BenchmarkAgentCycle(b *testing.B) {
	dir := b.TempDir()
	floor := newFloor(b, dir)
	journaled := openAt(b, filepath.Join(dir, "j.db"), Options{})
	bolted := openAt(b, filepath.Join(dir, "b.db"), Options{JournalSize: -1})
	cycle := func(l *Ledger) time.Duration {
		start := time.Now()
		rec, err := l.Append(context.Background(), benchEntry())
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		l.AppendAsync(forwardEntry(rec.Seq, "forwarded"), nil)
		return took
	}
	var tFloor, tJournal, tBolt []time.Duration
	for i := 0; b.Loop(); i++ {
		tFloor = append(tFloor, floor.sync(b, i))
		tJournal = append(tJournal, cycle(journaled))
		tBolt = append(tBolt, cycle(bolted))
		// The agent's think time: the ERP's answer and its next request.
		time.Sleep(200 * time.Microsecond)
	}
	f, j, bb := median(tFloor), median(tJournal), median(tBolt)
	b.ReportMetric(float64(f.Microseconds()), "floor-p50-us")
	b.ReportMetric(float64(j.Microseconds()), "journal-p50-us")
	b.ReportMetric(float64(bb.Microseconds()), "bbolt-p50-us")
	b.ReportMetric(float64(j)/float64(f), "journal-fdatasyncs")
	b.ReportMetric(float64(bb)/float64(f), "bbolt-fdatasyncs")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkBoltOptions is the measurement behind the journal: what one
// bbolt commit of one record costs with the options that might have made
// it cheaper, in fdatasyncs of a 4 KiB overwrite of a file whose blocks
// exist, the variants taking turns so that they share the disk's mood.
// Each option leaves the commit at about two fdatasyncs (bbolt syncs its
// pages, then its meta page), so the journal (one) is the way below that.
func BenchmarkBoltOptions(b *testing.B) {
	dir := b.TempDir()
	floor := newFloor(b, dir)
	variants := []struct {
		name string
		opts *bolt.Options
	}{
		{"default", nil},
		{"NoFreelistSync+map", &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType}},
		{"InitialMmapSize-1GiB", &bolt.Options{InitialMmapSize: 1 << 30}},
		{"AllocSize-64MiB", nil}, // set on the DB after Open
	}
	dbs := make([]*bolt.DB, len(variants))
	for i, v := range variants {
		db, err := bolt.Open(filepath.Join(dir, fmt.Sprintf("b%d.db", i)), 0o600, v.opts)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		if v.name == "AllocSize-64MiB" {
			db.AllocSize = 64 << 20
		}
		if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketRecords); return err }); err != nil {
			b.Fatal(err)
		}
		dbs[i] = db
	}
	raw := bytes.Repeat([]byte("x"), 700) // a record's size
	took := make([][]time.Duration, len(variants))
	var floors []time.Duration
	for i := 0; b.Loop(); i++ {
		floors = append(floors, floor.sync(b, i))
		for v, db := range dbs {
			start := time.Now()
			if err := db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket(bucketRecords)
				bk.FillPercent = 1
				return bk.Put(seqKey(uint64(i+1)), raw)
			}); err != nil {
				b.Fatal(err)
			}
			took[v] = append(took[v], time.Since(start))
		}
	}
	f := median(floors)
	b.ReportMetric(float64(f.Microseconds()), "floor-p50-us")
	for v, t := range took {
		b.ReportMetric(float64(median(t))/float64(f), variants[v].name+"-fdatasyncs")
	}
}

// floorFile is the physical floor of a durable write: 4 KiB overwritten in
// a file whose 256 blocks exist, then fdatasync.
type floorFile struct {
	f    *os.File
	page []byte
}

func newFloor(b *testing.B, dir string) *floorFile {
	f, err := os.OpenFile(filepath.Join(dir, "floor"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	fl := &floorFile{f: f, page: make([]byte, 4096)}
	for range 256 {
		if _, err := f.Write(fl.page); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return fl
}

// sync does the i-th floor write and returns how long it took.
func (fl *floorFile) sync(b *testing.B, i int) time.Duration {
	start := time.Now()
	if _, err := fl.f.WriteAt(fl.page, int64(i%256)*4096); err != nil {
		b.Fatal(err)
	}
	if err := fsutil.Fdatasync(fl.f); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
