package ledger

import (
	"context"
	"testing"
)

func reportBatching(b *testing.B, l *Ledger) {
	s := l.Stats()
	if s.Commits > 0 {
		b.ReportMetric(float64(s.Appends)/float64(s.Commits), "records/commit")
	}
}

// BenchmarkAppendSerial is one caller at a time: every append pays a whole
// commit and fsync, the latency a lone request sees.
func BenchmarkAppendSerial(b *testing.B) {
	l := openTemp(b, Options{})
	e := entry(1)
	for b.Loop() {
		if _, err := l.Append(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
	reportBatching(b, l)
}

// BenchmarkAppendParallel is many concurrent requests, as a busy proxy sees
// them: group commit shares each fsync among the callers waiting for it.
func BenchmarkAppendParallel(b *testing.B) {
	l := openTemp(b, Options{})
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
}
