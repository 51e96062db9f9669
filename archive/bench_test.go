//go:build unix

package archive

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// cpuTime is the CPU (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendWithArchive is BenchmarkAppendParallel (16 callers per
// CPU, group commit) three ways in one run: no archiver, the archiver
// writing to DATA/archive, and the archiver uploading to a real MinIO with
// Object Lock. Segments are 1000 records or 1s, so several are sealed and
// uploaded while the appends run. The archiver must not slow the request
// path: compare ns/op across the three.
func BenchmarkAppendWithArchive(b *testing.B) {
	run := func(b *testing.B, cfg *Config) {
		l := openTemp(b, ledger.Options{})
		var a *Archiver
		if cfg != nil {
			cfg.SegmentRecords, cfg.SegmentInterval = 1000, time.Second
			a = mustArchiver(b, l, *cfg, nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
		}
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			e := benchEntry()
			for pb.Next() {
				if _, err := l.Append(context.Background(), e); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		reportBatching(b, l)
		if a != nil {
			st := a.Status()
			b.ReportMetric(float64(st.Segments), "segments")
			if st.LastError != "" {
				b.Logf("archive error during the run: %s", st.LastError)
			}
		}
	}
	b.Run("off", func(b *testing.B) { run(b, nil) })
	b.Run("local", func(b *testing.B) {
		cfg := localConfig(b, b.TempDir())
		run(b, &cfg)
	})
	b.Run("minio", func(b *testing.B) {
		srv := startMinio(b)
		cfg := s3Config(srv, "worm", "bench")
		run(b, &cfg)
	})
}

// BenchmarkArchiveSegment is the archiver's own cost per segment (ns/op),
// off the request path: reading and linking 1000 request records, storing
// the segment and its signed checkpoint, and recording both in the chain.
// It is mostly fsync and round-trip latency; cpu-ns/record is the CPU the
// proxy process spends per archived record (MinIO's own CPU not included).
func BenchmarkArchiveSegment(b *testing.B) {
	run := func(b *testing.B, cfg Config) {
		l := openTemp(b, ledger.Options{})
		cfg.SegmentRecords = 1000
		a := mustArchiver(b, l, cfg, nil)
		// 998 new records and the last segment's checkpoint and archive
		// records make each segment exactly 1000.
		entries := make([]ledger.Entry, 997)
		for i := range entries {
			entries[i] = benchEntry()
		}
		var cpu time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			for _, e := range entries {
				l.AppendAsync(e, nil)
			}
			if _, err := l.Append(context.Background(), entries[0]); err != nil {
				b.Fatal(err)
			}
			c0 := cpuTime(b)
			b.StartTimer()
			if err := a.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu += cpuTime(b) - c0
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(a.Status().ArchivedSeq), "cpu-ns/record")
		if st := a.Status(); st.Segments != uint64(b.N) {
			b.Fatalf("%d segments for %d flushes", st.Segments, b.N)
		}
	}
	b.Run("local", func(b *testing.B) { run(b, localConfig(b, b.TempDir())) })
	b.Run("minio", func(b *testing.B) {
		srv := startMinio(b)
		run(b, s3Config(srv, "worm", "seg"))
	})
}
