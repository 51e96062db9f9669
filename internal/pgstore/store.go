package pgstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// Ledger is what the store needs of this proxy's own hash chain
// (*ledger.Ledger is one). Append makes e durable as the next record and
// returns it; it runs e.Tx, if set, with that record before making it
// durable, and an error from e.Tx writes nothing and is returned wrapped.
// It may run e.Tx more than once for one entry (the ledger re-runs a
// batch without a failing neighbour): only the run of the record it
// returns counts.
type Ledger interface {
	Append(ctx context.Context, e ledger.Entry) (ledger.Record, error)
}

// Channel is the PostgreSQL notification channel every committed change
// is announced on, with the approval id as payload.
const Channel = "uapk_approvals"

// Unrecorded is the Consumed of an approval claimed by a Consume whose
// record's seq is not (yet) written back: used, by a record whose seq the
// store does not know. It is never 0, so every check of "consumed" holds.
const Unrecorded = uint64(math.MaxUint64)

// Defaults of the Options.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultPollInterval = 2 * time.Second
)

// Option configures Open.
type Option func(*Store)

// Instance names this proxy in the rows it writes (whose ledger holds
// the record of a claim or a change), default the host name. It must be
// stable across restarts and unique in the fleet: the ledger's own
// identity is the best choice.
func Instance(name string) Option { return func(s *Store) { s.instance = name } }

// Timeout bounds the methods that take no context (Get, List, Due,
// PasskeyCounter) and the steps after a ledger record, which never run on
// the caller's deadline: a record half-stored because a client gave up is
// what the ordering exists to avoid. Default DefaultTimeout.
func Timeout(d time.Duration) Option { return func(s *Store) { s.timeout = d } }

// PollInterval is how often Watch polls for changes a notification missed,
// default DefaultPollInterval.
func PollInterval(d time.Duration) Option { return func(s *Store) { s.poll = d } }

// Store keeps approvals in PostgreSQL, shared by every proxy of the fleet,
// with each change's record in the local ledger l. It implements
// approvals.Store.
type Store struct {
	pool     *pgxpool.Pool
	l        Ledger
	log      zerolog.Logger
	instance string
	timeout  time.Duration
	poll     time.Duration

	// onListen, if set, is called each time Watch has its LISTEN in place
	// (tests wait for it).
	onListen func()
}

var _ approvals.Store = (*Store)(nil)

// Open connects to dsn, applies the schema migrations the database lacks,
// and returns a store writing its records to l. Close releases it.
func Open(ctx context.Context, dsn string, l Ledger, log zerolog.Logger, opts ...Option) (*Store, error) {
	if l == nil {
		return nil, errors.New("pgstore: a ledger is required")
	}
	s := &Store{l: l, log: log, timeout: DefaultTimeout, poll: DefaultPollInterval}
	for _, o := range opts {
		o(s)
	}
	if s.instance == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("pgstore: no instance name given and no host name: %v", err)
		}
		s.instance = h
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.poll <= 0 {
		s.poll = DefaultPollInterval
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	applied, err := migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if len(applied) > 0 {
		log.Info().Ints("versions", applied).Msg("approvals schema migrated")
	}
	s.pool = pool
	return s, nil
}

// Close closes the store's connections.
func (s *Store) Close() { s.pool.Close() }

// InstanceName returns the name this proxy writes in the rows.
func (s *Store) InstanceName() string { return s.instance }

func (s *Store) readCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// afterRecord returns the context of the steps after a durable record:
// ctx's values, never its cancellation, and the store's own deadline.
func (s *Store) afterRecord(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
}

// cols is what every read selects; scan reads it.
const cols = "data, uses, consumed_instance, consumed_token, consumed_claim, consumed_record"

// row is an approval as read, with the consumption columns Release checks.
type row struct {
	a                *approvals.Approval
	consumedInstance *string
	consumedToken    *string
	claim            *string
	consumedRecord   *int64
}

func scan(r pgx.Row) (*row, error) {
	var data []byte
	var uses int
	x := &row{}
	if err := r.Scan(&data, &uses, &x.consumedInstance, &x.consumedToken, &x.claim, &x.consumedRecord); err != nil {
		return nil, err
	}
	a := new(approvals.Approval)
	if err := json.Unmarshal(data, a); err != nil {
		return nil, fmt.Errorf("decode approval: %w", err)
	}
	a.Uses = uses
	switch {
	case x.consumedRecord != nil:
		a.Consumed = uint64(*x.consumedRecord)
	case x.claim != nil:
		a.Consumed = Unrecorded
	default:
		a.Consumed = 0
	}
	x.a = a
	return x, nil
}

// encode is the document stored in data: the approval as JSON, without
// what the columns own (Consumed, Uses), a held body at its size ("<" one
// byte, not six).
func encode(a *approvals.Approval) ([]byte, error) {
	c := *a
	c.Consumed, c.Uses = 0, 0
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("encode approval %s: %w", a.ID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func nonce() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS CSPRNG never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// Get returns approval id, or an error wrapping approvals.ErrNotFound.
func (s *Store) Get(id string) (*approvals.Approval, error) {
	ctx, cancel := s.readCtx()
	defer cancel()
	r, err := scan(s.pool.QueryRow(ctx, "SELECT "+cols+" FROM approvals WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get approval %s: %w", id, err)
	}
	return r.a, nil
}

// List returns the approvals whose effective status at now is status (all
// when ""), oldest first. The database's microsecond times only narrow the
// candidates: the effective status and the order are decided here, from
// the exact instants in the document, as every store decides them.
func (s *Store) List(status string, now time.Time) ([]*approvals.Approval, error) {
	if !approvals.ValidStatus(status) {
		return nil, approvals.ErrBadStatus
	}
	q, args := "SELECT "+cols+" FROM approvals", []any(nil)
	switch status {
	case "":
	case approvals.StatusPending:
		// expires_at is the instant cut to the microsecond, so anything
		// pending at now has expires_at > now - 1µs (cut too).
		q, args = q+" WHERE status = 'pending' AND expires_at > $1", []any{now.Add(-time.Microsecond)}
	case approvals.StatusExpired:
		q, args = q+" WHERE status = 'expired' OR (status = 'pending' AND expires_at <= $1)", []any{now}
	default:
		q, args = q+" WHERE status = $1", []any{status}
	}
	list, err := s.query(q+" ORDER BY created_at, id", args...)
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	out := list[:0]
	for _, a := range list {
		if status == "" || a.Effective(now) == status {
			out = append(out, a)
		}
	}
	sortOldestFirst(out)
	return out, nil
}

// Due returns the approvals stored as pending whose expiry has passed at
// now, oldest first.
func (s *Store) Due(now time.Time) ([]*approvals.Approval, error) {
	list, err := s.query("SELECT "+cols+" FROM approvals WHERE status = 'pending' AND expires_at <= $1 ORDER BY created_at, id", now)
	if err != nil {
		return nil, fmt.Errorf("due approvals: %w", err)
	}
	out := list[:0]
	for _, a := range list {
		if !now.Before(a.ExpiresAt) {
			out = append(out, a)
		}
	}
	sortOldestFirst(out)
	return out, nil
}

func (s *Store) query(q string, args ...any) ([]*approvals.Approval, error) {
	ctx, cancel := s.readCtx()
	defer cancel()
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*approvals.Approval
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r.a)
	}
	return out, rows.Err()
}

// sortOldestFirst orders approvals by creation; the id orders those made at
// the same instant, so that pages by cursor neither skip nor repeat one.
func sortOldestFirst(out []*approvals.Approval) {
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
}

// PasskeyCounter returns the highest signature counter stored for a
// passkey, 0 when none.
func (s *Store) PasskeyCounter(credentialID string) (uint32, error) {
	ctx, cancel := s.readCtx()
	defer cancel()
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT counter FROM passkey_counters WHERE credential_id = $1", credentialID).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("passkey counter: %w", err)
	}
	return uint32(n), nil
}
