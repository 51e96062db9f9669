package evidence

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

var (
	benchRecords = flag.Int("evidence.records", 1_000_000, "records in the ledger BenchmarkExport1M exports")
	benchVerify  = flag.Bool("evidence.verify", true, "BenchmarkExport1M also verifies the bundle")
)

// BenchmarkExport1M exports a range of 1,000,000 records (-evidence.records
// to change it) from a live ledger, streaming the ZIP as POST /v1/evidence
// does, while a caller keeps appending to the ledger, one fsynced Append
// after another as the proxy's requests do. The range ends on an archived
// checkpoint, as an old range does. It reports the export's time, peak Go
// heap and anonymous RSS, the bundle's size, the worst and 99th percentile
// Append latency during the export against the same without one (the
// export reads in bounded transactions, so appends keep going); then
// exports the same range again to a file, which must give the same bytes,
// and verifies that file (-evidence.verify=false to skip).
//
//	go test -run '^$' -bench Export1M -benchtime 1x -timeout 30m ./evidence/
func BenchmarkExport1M(b *testing.B) {
	n := *benchRecords
	c := newChain(b, b.TempDir())
	start := time.Now()
	c.fill(n)
	c.checkpoint(1, uint64(n), nil)
	b.Logf("built a ledger of %d records in %s", n, time.Since(start).Round(time.Millisecond))
	var err error
	// Look back past everything this benchmark appends for the checkpoint.
	if c.src, err = NewLive(LiveConfig{Ledger: c.l, Approvals: c.store, GatewayKey: c.gw, Checkpoints: ChainCheckpoints(c.l, 1<<40)}); err != nil {
		b.Fatal(err)
	}
	opts := c.opts(Range{FromSeq: 1, ToSeq: uint64(n)})

	// Let the kernel write the freshly built file back first, or the idle
	// figures measure that.
	syncDisks()
	idle := measureAppends(c, 5*time.Second, nil)
	out := filepath.Join(b.TempDir(), "bundle.zip")
	var export, prepare, toFile, verify time.Duration
	var heap, anon, vheap, vanon uint64
	var during appendStats
	var size int64
	for b.Loop() {
		stopHeap := sampleHeap(&heap, &anon)
		done := make(chan struct{})
		statsCh := make(chan appendStats, 1)
		go func() { statsCh <- measureAppends(c, 0, done) }()
		t0 := time.Now()
		streamed := &hashCounter{h: sha256.New()}
		bd, err := Prepare(context.Background(), c.src, opts)
		prepare = time.Since(t0)
		if err == nil {
			err = bd.Write(context.Background(), streamed)
			bd.Close()
		}
		export = time.Since(t0)
		close(done)
		during = <-statsCh
		stopHeap()
		if err != nil {
			b.Fatal(err)
		}
		size = streamed.n

		t0 = time.Now()
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := Export(bw, c.src, opts); err != nil {
			b.Fatal(err)
		}
		bw.Flush()
		f.Close()
		toFile = time.Since(t0)
		data, _ := os.ReadFile(out)
		if sum := sha256.Sum256(data); !bytes.Equal(sum[:], streamed.h.Sum(nil)) {
			b.Fatal("the second export of the range differs from the first")
		}
		data = nil
		if !*benchVerify {
			continue
		}
		stopHeap = sampleHeap(&vheap, &vanon)
		t0 = time.Now()
		f, _ = os.Open(out)
		rep, err := Verify(f, size)
		verify = time.Since(t0)
		f.Close()
		stopHeap()
		if err != nil || rep.Records != uint64(n) {
			b.Fatalf("verify: %v (%d records)", err, rep.Records)
		}
	}
	floor := exportFloor(b, c.src, 1, uint64(n))
	syncDisks()
	idle = idle.merge(measureAppends(c, 5*time.Second, nil)) // and once the export is over
	b.ReportMetric(floor.Seconds(), "s/floor")
	b.ReportMetric(export.Seconds()/floor.Seconds(), "ratio_to_floor")
	fmt.Printf("FIGURE\texport of %d records\t%.2f s, Go heap peak %.0f MB\tfloor (read, hash, DEFLATE) %.2f s: ratio %.2f\t< 10 s, < 200 MB\t%s\n",
		n, export.Seconds(), float64(heap)/(1<<20), floor.Seconds(), export.Seconds()/floor.Seconds(),
		meets(n >= 1_000_000 && export < 10*time.Second && heap < 200<<20))
	b.Logf("export: %.2fs (goal < 10s for 1M), Go heap peak %.1f MB (goal < 200 MB); floor (read the records, hash and DEFLATE them) %.2fs; ratio %.2f",
		export.Seconds(), float64(heap)/(1<<20), floor.Seconds(), export.Seconds()/floor.Seconds())
	b.ReportMetric(export.Seconds(), "s/export")
	b.ReportMetric(float64(n)/export.Seconds(), "records/s")
	b.ReportMetric(float64(heap)/(1<<20), "MB-heap-peak")
	b.ReportMetric(float64(anon)/(1<<20), "MB-rss-anon-peak")
	b.ReportMetric(prepare.Seconds(), "s/prepare")
	b.ReportMetric(toFile.Seconds(), "s/export-to-file")
	b.ReportMetric(float64(size)/(1<<20), "MB-zip")
	b.ReportMetric(verify.Seconds(), "s/verify")
	b.ReportMetric(float64(vheap)/(1<<20), "MB-heap-peak-verify")
	b.ReportMetric(float64(vanon)/(1<<20), "MB-rss-anon-peak-verify")
	b.ReportMetric(during.max.Seconds()*1000, "ms-append-max-during")
	b.ReportMetric(during.p99.Seconds()*1000, "ms-append-p99-during")
	b.ReportMetric(idle.max.Seconds()*1000, "ms-append-max-idle")
	b.ReportMetric(idle.p99.Seconds()*1000, "ms-append-p99-idle")
	b.ReportMetric(float64(during.n), "appends-during")
	b.Logf("export, streamed: %s (prepare %s, write %s), %.0f records/s, Go heap peak %.1f MB, anonymous RSS peak %.1f MB (the %.0f MB ledger is mmapped besides), bundle %.1f MB",
		export.Round(time.Millisecond), prepare.Round(time.Millisecond), (export - prepare).Round(time.Millisecond), float64(n)/export.Seconds(),
		float64(heap)/(1<<20), float64(anon)/(1<<20), fileMB(c), float64(size)/(1<<20))
	b.Logf("export again, to a file, without load: %s; byte-identical to the first", toFile.Round(time.Millisecond))
	if *benchVerify {
		b.Logf("verify: %s, Go heap peak %.1f MB, anonymous RSS peak %.1f MB (GOMAXPROCS %d)",
			verify.Round(time.Millisecond), float64(vheap)/(1<<20), float64(vanon)/(1<<20), runtime.GOMAXPROCS(0))
	}
	b.Logf("appends during the export (%s): %d, max %s, p99 %s, median %s, %d over 50ms; without an export (10s, before and after): %d, max %s, p99 %s, median %s, %d over 50ms",
		export.Round(time.Second), during.n, during.max.Round(time.Microsecond), during.p99.Round(time.Microsecond), during.p50.Round(time.Microsecond), during.slow,
		idle.n, idle.max.Round(time.Microsecond), idle.p99.Round(time.Microsecond), idle.p50.Round(time.Microsecond), idle.slow)
}

// hashCounter stands for the client of a streamed export.
type hashCounter struct {
	h hash.Hash
	n int64
}

func (w *hashCounter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

func fileMB(c *chain) float64 {
	st, err := os.Stat(c.l.DB().Path())
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}

// fill appends n records with AppendAsync, 10,000 at a time, so the writer
// commits them in full batches.
func (c *chain) fill(n int) {
	c.t.Helper()
	var failed atomic.Value
	for i := 0; i < n; {
		var wg sync.WaitGroup
		for j := 0; j < 10000 && i < n; j, i = j+1, i+1 {
			wg.Add(1)
			c.l.AppendAsync(c.entry(i), func(_ ledger.Record, err error) {
				if err != nil {
					failed.Store(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			c.t.Fatal(err)
		}
	}
}

type appendStats struct {
	n             int
	max, p99, p50 time.Duration
	slow          int // over 50ms
	lat           []time.Duration
}

func (a appendStats) merge(b appendStats) appendStats { return stats(append(a.lat, b.lat...)) }

// measureAppends appends one record after another for d, or until done is
// closed, and reports the latencies.
func measureAppends(c *chain, d time.Duration, done <-chan struct{}) appendStats {
	var lat []time.Duration
	end := time.Now().Add(d)
	e := c.entry(0)
	for i := 0; ; i++ {
		if done != nil {
			select {
			case <-done:
				return stats(lat)
			default:
			}
		} else if time.Now().After(end) {
			return stats(lat)
		}
		t0 := time.Now()
		if _, err := c.l.Append(context.Background(), e); err != nil {
			c.t.Error(err)
			return stats(lat)
		}
		lat = append(lat, time.Since(t0))
	}
}

func stats(lat []time.Duration) appendStats {
	if len(lat) == 0 {
		return appendStats{}
	}
	slices.Sort(lat)
	slow := len(lat) - sort.Search(len(lat), func(i int) bool { return lat[i] > 50*time.Millisecond })
	return appendStats{n: len(lat), max: lat[len(lat)-1], p99: lat[len(lat)*99/100], p50: lat[len(lat)/2], slow: slow, lat: lat}
}

// sampleHeap records the largest Go HeapInuse, and the largest anonymous
// RSS (RssAnon: the process's own memory, without bbolt's file-backed
// mmap), seen until the returned stop.
func sampleHeap(peak *uint64, anon *uint64) (stop func()) {
	runtime.GC()
	*peak, *anon = 0, 0
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			*peak = max(*peak, ms.HeapInuse)
			*anon = max(*anon, procStatus("RssAnon:"))
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// procStatus reads one "kB" field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// exportFloor is what an export of [from, to] cannot go below: reading the
// records through the Source and writing records.jsonl, hashed, into a
// DEFLATE stream at the bundle's level (a ZIP entry). The rest of a bundle
// is small.
func exportFloor(b *testing.B, src Source, from, to uint64) time.Duration {
	b.Helper()
	t0 := time.Now()
	h := sha256.New()
	z := newZipWriter(io.Discard, time.Time{})
	w, err := z.create(FileRecords)
	if err != nil {
		b.Fatal(err)
	}
	if err := src.Range(from, to, func(_ uint64, raw []byte) error {
		h.Write(raw)
		h.Write(newline)
		w.Write(raw)
		_, err := w.Write(newline)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := z.close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// verifyFloor is what verifying a bundle cannot go below: reading
// records.jsonl out of the ZIP once and SHA-256 hashing it.
func verifyFloor(b *testing.B, path string) time.Duration {
	b.Helper()
	t0 := time.Now()
	zr, err := zip.OpenReader(path)
	if err != nil {
		b.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name != FileRecords {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(sha256.New(), rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
	return time.Since(t0)
}

// BenchmarkVerifyBundle1M verifies (Verify, as `uapk-proxy verify
// BUNDLE.zip` does) the bundle of a range of 1,000,000 records
// (-evidence.records), against its floor measured in the same run:
// reading records.jsonl out of the ZIP once and hashing it.
//
//	go test -run '^$' -bench VerifyBundle1M -benchtime 1x -timeout 30m ./evidence/
func BenchmarkVerifyBundle1M(b *testing.B) {
	n := *benchRecords
	c := newChain(b, b.TempDir())
	c.fill(n)
	c.checkpoint(1, uint64(n), nil)
	out := filepath.Join(b.TempDir(), "bundle.zip")
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := Export(bw, c.src, c.opts(Range{FromSeq: 1, ToSeq: uint64(n)})); err != nil {
		b.Fatal(err)
	}
	bw.Flush()
	f.Close()
	st, _ := os.Stat(out)
	var verify, floor, vcpu, fcpu time.Duration
	var heap, anon uint64
	for b.Loop() {
		c0 := cpuTime()
		floor += verifyFloor(b, out)
		c1 := cpuTime()
		stop := sampleHeap(&heap, &anon)
		t0 := time.Now()
		zf, _ := os.Open(out)
		rep, err := Verify(zf, st.Size())
		verify += time.Since(t0)
		vcpu, fcpu = vcpu+cpuTime()-c1, fcpu+c1-c0
		zf.Close()
		stop()
		if err != nil || rep.Records != uint64(n) {
			b.Fatalf("verify: %v (%d records)", err, rep.Records)
		}
	}
	per := verify.Seconds() / float64(b.N)
	b.ReportMetric(per, "s/verify")
	b.ReportMetric(floor.Seconds()/float64(b.N), "s/floor")
	b.ReportMetric(verify.Seconds()/floor.Seconds(), "ratio_to_floor")
	b.ReportMetric(float64(heap)/(1<<20), "MB-heap-peak")
	b.ReportMetric(vcpu.Seconds()/float64(b.N), "cpu-s/verify")
	b.ReportMetric(fcpu.Seconds()/float64(b.N), "cpu-s/floor")
	b.Logf("CPU time (user+system, all cores): verify %.2fs, floor %.2fs", vcpu.Seconds()/float64(b.N), fcpu.Seconds()/float64(b.N))
	fmt.Printf("FIGURE\tverify BUNDLE.zip of %d records\t%.2f s, Go heap peak %.0f MB\tfloor (inflate records.jsonl + SHA-256) %.2f s: ratio %.2f\t< 5 s\t%s\n",
		n, per, float64(heap)/(1<<20), floor.Seconds()/float64(b.N), verify.Seconds()/floor.Seconds(), meets(n >= 1_000_000 && per < 5))
	b.Logf("verify bundle of %d records (%.1f MB): %.2fs (goal < 5s for 1M), floor (inflate records.jsonl + SHA-256) %.2fs, ratio %.2f, Go heap peak %.1f MB (GOMAXPROCS %d)",
		n, float64(st.Size())/(1<<20), per, floor.Seconds()/float64(b.N), verify.Seconds()/floor.Seconds(), float64(heap)/(1<<20), runtime.GOMAXPROCS(0))
}

// cpuTime is the CPU time (user and system, every thread) the process has
// used: on a shared machine, a figure other processes move less than wall
// time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meets is the verdict of a FIGURE line (see cmd/uapk-bench).
func meets(ok bool) string {
	if ok {
		return "meets"
	}
	return "below"
}
