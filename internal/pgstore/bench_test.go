package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// BenchmarkListPending: the desk's queue at quarter end, 10,000 pending
// approvals, read whole as approvals.Service.ListPage reads it for each
// page.
//
//	go test -run '^$' -bench ListPending ./internal/pgstore/
func BenchmarkListPending(b *testing.B) {
	const n = 10_000
	dsn := server.NewDB(b)
	s, err := Open(context.Background(), dsn, &fakeLedger{}, zerolog.Nop(), Instance("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var rows [][]any
	for i := range n {
		a := pending(requireCFO)
		a.ID = fmt.Sprintf("apr_%026d", i)
		a.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		data, err := encode(a)
		if err != nil {
			b.Fatal(err)
		}
		rows = append(rows, []any{a.ID, a.Kind, a.Status, a.App, a.Action, a.CreatedAt, a.ExpiresAt.Add(time.Hour * 24 * 365),
			data, "bench", int64(i + 1), "x", "bench", int64(i + 1)})
	}
	if _, err := s.pool.CopyFrom(context.Background(), pgx.Identifier{"approvals"},
		[]string{"id", "kind", "status", "app", "action", "created_at", "expires_at", "data",
			"request_instance", "request_record", "last_change", "last_instance", "last_record"},
		pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		list, err := s.List(approvals.StatusPending, now)
		if err != nil || len(list) != n {
			b.Fatalf("%d pending, %v", len(list), err)
		}
	}
}
