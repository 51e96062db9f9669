package pgstore

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestMigrationsOnce: two proxies opening a fresh database at once both
// start, and the schema is migrated once; a later Open finds nothing to
// do; a schema this proxy does not know, or an applied migration that
// differs from its own, stops Open.
func TestMigrationsOnce(t *testing.T) {
	dsn := server.NewDB(t)
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("embedded migrations: %d, %v", len(ms), err)
	}
	var logs syncBuffer
	log := zerolog.New(&logs)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(t.Context(), dsn, &fakeLedger{}, log, Instance("proxy-"+strconv.Itoa(i)))
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	if n := strings.Count(logs.String(), "approvals schema migrated"); n != 1 {
		t.Errorf("%d Opens migrated, want 1:\n%s", n, logs.String())
	}
	want := strconv.Itoa(len(ms))
	if got := sql(t, dsn, "SELECT count(DISTINCT version)::text || '/' || count(*)::text FROM uapk_schema_migrations"); got != want+"/"+want {
		t.Errorf("migrations table: %s, want %s/%s", got, want, want)
	}
	s, _ := proxy(t, dsn, "proxy-again")
	if s == nil {
		t.Fatal("reopen")
	}

	sql(t, dsn, "UPDATE uapk_schema_migrations SET sha256 = 'edited' WHERE version = 1 RETURNING name")
	if _, err := Open(t.Context(), dsn, &fakeLedger{}, zerolog.Nop()); !errors.Is(err, ErrMigrationChanged) {
		t.Errorf("an edited migration: %v, want ErrMigrationChanged", err)
	}
	sql(t, dsn, "UPDATE uapk_schema_migrations SET sha256 = $1 WHERE version = 1 RETURNING name", ms[0].sum)
	sql(t, dsn, "INSERT INTO uapk_schema_migrations (version, name, sha256) VALUES (9999, 'future', 'x') RETURNING name")
	if _, err := Open(t.Context(), dsn, &fakeLedger{}, zerolog.Nop()); !errors.Is(err, ErrSchemaNewer) {
		t.Errorf("a newer schema: %v, want ErrSchemaNewer", err)
	}
}

func TestOpenBadDSN(t *testing.T) {
	if _, err := Open(t.Context(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", &fakeLedger{}, zerolog.Nop()); err == nil {
		t.Error("Open on a closed port succeeded")
	}
	if _, err := Open(t.Context(), "::not a dsn", &fakeLedger{}, zerolog.Nop()); err == nil {
		t.Error("Open of a junk DSN succeeded")
	}
	if _, err := Open(t.Context(), server.DSN("postgres"), nil, zerolog.Nop()); err == nil {
		t.Error("Open without a ledger succeeded")
	}
}
