package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestServer: a database made on the server answers, survives a kill and
// a restart with its data, and the server is gone after Stop.
func TestServer(t *testing.T) {
	s := Start(t)
	dsn := s.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)

	s.Kill()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a killed server")
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("restart: %v\n%s", err, s.LogTail())
	}
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := c.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after kill and restart: %d, %v", v, err)
	}
	c.Close(ctx)

	s.Stop()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected after Stop")
	}
}

// TestBinDirFromEnv: a UAPK_PG_BIN without the server binaries fails with
// the install hint rather than being passed over.
func TestBinDirFromEnv(t *testing.T) {
	t.Setenv(BinEnv, t.TempDir())
	if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("BinDir with an empty %s: %v", BinEnv, err)
	}
}
