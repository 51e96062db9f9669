package pgstore

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock key that serializes schema migrations
// between proxies starting at once ("uapkmigr").
const migrationLock int64 = 0x7561706b6d696772

type migration struct {
	version int
	name    string
	sql     string
	sum     string // hex SHA-256 of sql
}

// migrations returns the embedded migrations, NNNN_name.sql, in order;
// versions must run 1, 2, 3... without a gap.
func migrations() ([]migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, migration{version: v, name: name, sql: string(b), sum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %d_%s: versions must run from 1 without a gap", m.version, m.name)
		}
	}
	return out, nil
}

// migrate applies the migrations the database lacks, each recorded in
// uapk_schema_migrations, all in one transaction under an advisory lock:
// of two proxies starting at once one migrates and the other then finds
// nothing to do. It returns the versions it applied.
func migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	var applied []int
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS uapk_schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			sha256     text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT version, sha256 FROM uapk_schema_migrations ORDER BY version")
		if err != nil {
			return err
		}
		have := map[int]string{}
		var v int
		var sum string
		_, err = pgx.ForEachRow(rows, []any{&v, &sum}, func() error {
			have[v] = sum
			return nil
		})
		if err != nil {
			return err
		}
		for v := range have {
			if v > len(ms) {
				return fmt.Errorf("%w: it has migration %d, this proxy knows %d", ErrSchemaNewer, v, len(ms))
			}
		}
		for _, m := range ms {
			if sum, ok := have[m.version]; ok {
				if sum != m.sum {
					return fmt.Errorf("%w: %d_%s", ErrMigrationChanged, m.version, m.name)
				}
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %d_%s: %w", m.version, m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO uapk_schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
				m.version, m.name, m.sum); err != nil {
				return err
			}
			applied = append(applied, m.version)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("schema migration: %w", err)
	}
	return applied, nil
}
