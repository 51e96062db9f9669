package pgstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// server is the PostgreSQL every test but the outage's shares, each test
// in a database of its own.
var server *pgtest.Server

func TestMain(m *testing.M) {
	s, err := pgtest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgstore tests need PostgreSQL:", err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// Fixed instants: the approval is created at t0 and looked at at now.
var (
	t0  = time.Date(2026, 9, 30, 13, 5, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
)

const (
	testID  = "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa"
	otherID = "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa"
)

var (
	requireCFO        = rules.Requirement{Policy: rules.RequireApproval, Slots: [][]string{{"cfo"}}}
	dualCFOController = rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
)

func idOf(c byte) string { return "apr_" + strings.Repeat(string(c), 26) }

func pending(req rules.Requirement) *approvals.Approval {
	return &approvals.Approval{
		ID: testID, Kind: approvals.KindRequest, Status: approvals.StatusPending,
		Action: "post_journal_entry", App: "finance-agent", Method: "POST",
		URL: "https://erp.example.com/api/v1/journal-entries", Body: `{"amount":250000}`,
		Justification: "quarter-end accrual", OnBehalfOf: "analyst@corp.example",
		Digest: strings.Repeat("ab", 32), Amount: "250000", Reason: "approval_required",
		Requirement: req, RequiredRoles: req.Roles(), Decisions: []approvals.Decision{},
		CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour),
	}
}

// approvedOverride is an approved override under token tok_1 that may let
// through maxUses requests.
func approvedOverride(maxUses int) *approvals.Approval {
	return &approvals.Approval{
		ID: testID, Kind: approvals.KindOverride, Status: approvals.StatusApproved,
		Action: "journal_entry", App: "finance-agent", Justification: "close", RequestedBy: "ops-lead@corp.example",
		Duration: "4h0m0s", MaxAmount: "250000", MaxUses: maxUses, Reason: "override_requested",
		Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}}}, RequiredRoles: []string{"cfo"},
		Decisions: []approvals.Decision{}, CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour),
		TokenID: "tok_1", TokenExp: now.Add(4 * time.Hour), Completed: now,
	}
}

func entry(id string) ledger.Entry {
	return ledger.Entry{Kind: "request", App: "finance-agent", Action: "post_journal_entry", ApprovalID: id}
}

func useEntry(id string) ledger.Entry {
	return ledger.Entry{Kind: "override", App: "finance-agent", Action: "journal_entry", Decision: "allow", Reason: "override", ApprovalID: id}
}

// fakeLedger numbers records and keeps them, nothing more. Like the real
// ledger it runs an entry's hook with the record and writes nothing when
// the hook fails; unlike it, it runs every hook twice (the real one re-runs
// a batch after a neighbour's failure), the first run's outcome thrown
// away, so a hook that is not safe to re-run shows.
type fakeLedger struct {
	mu      sync.Mutex
	records []ledger.Record
	fail    error
	// after, if set, runs once a record is durable, before Append returns.
	after func(ledger.Record)
}

func (l *fakeLedger) Append(ctx context.Context, e ledger.Entry) (ledger.Record, error) {
	if err := ctx.Err(); err != nil {
		return ledger.Record{}, err
	}
	l.mu.Lock()
	if l.fail != nil {
		l.mu.Unlock()
		return ledger.Record{}, l.fail
	}
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	rec := ledger.Record{V: 1, Seq: uint64(len(l.records) + 1), Time: time.Now().UTC().Format(ledger.TimeLayout),
		Kind: e.Kind, App: e.App, Action: e.Action, Decision: e.Decision, Reason: e.Reason,
		ApprovalID: e.ApprovalID, Digest: e.Digest, Policy: e.Policy, Data: data}
	if e.Tx != nil {
		throwaway := rec
		_ = e.Tx(nil, &throwaway)
		r := rec
		if err := e.Tx(nil, &r); err != nil {
			l.mu.Unlock()
			return ledger.Record{}, fmt.Errorf("ledger: tx hook: %w", err)
		}
	}
	l.records = append(l.records, rec)
	after := l.after
	l.mu.Unlock()
	if after != nil {
		after(rec)
	}
	return rec, nil
}

func (l *fakeLedger) setFail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = err
}

func (l *fakeLedger) setAfter(fn func(ledger.Record)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.after = fn
}

func (l *fakeLedger) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

func (l *fakeLedger) Records() []ledger.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ledger.Record(nil), l.records...)
}

// proxy opens a store on dsn as instance name, with a ledger of its own.
func proxy(t *testing.T, dsn, name string, opts ...Option) (*Store, *fakeLedger) {
	t.Helper()
	l := &fakeLedger{}
	s, err := Open(t.Context(), dsn, l, zerolog.Nop(), append([]Option{Instance(name)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, l
}

// openStore is one proxy on a fresh database.
func openStore(t *testing.T) (*Store, *fakeLedger, string) {
	t.Helper()
	dsn := server.NewDB(t)
	s, l := proxy(t, dsn, "proxy-a")
	return s, l, dsn
}

// sql runs q on dsn and returns the first column of its first row as text
// ("" for none or NULL), for looking at what the store keeps.
func sql(t *testing.T, dsn, q string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v *string
	err = c.QueryRow(ctx, q, args...).Scan(&v)
	if err == pgx.ErrNoRows || v == nil {
		return ""
	}
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return *v
}

func mustCreate(t *testing.T, s *Store, a *approvals.Approval) ledger.Record {
	t.Helper()
	rec, err := s.Create(t.Context(), a, entry(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// approve makes approval id approved under token tokenID.
func approve(t *testing.T, s *Store, id, tokenID string) {
	t.Helper()
	if _, err := s.Update(t.Context(), id, entry(id), func(cur *approvals.Approval, _ *ledger.Record) error {
		cur.Status, cur.TokenID = approvals.StatusApproved, tokenID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
