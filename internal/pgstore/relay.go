package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// A hub keeps no ledger, so it decides nothing itself: what an approver
// posts to it is queued in the relayed table, a proxy takes it, decides it
// against its own principals and in its own ledger as if it had been
// posted there, and writes back the answer the hub then gives.

// Kinds of relayed rows.
const (
	RelayDecision = "decision" // a signed decision on an approval
	RelayOverride = "override" // an override request
)

// RelayPrefix starts the payload of a notification on Channel about a
// relayed row: "relay:ID:HOLDER" for a new one (HOLDER, the instance
// holding the decision's request, takes it at once; "" anyone), "relay:ID"
// for an answered one (its hub gives the answer). Approval ids never
// contain ':'.
const RelayPrefix = "relay:"

// Relayed is one queued decision or override request.
type Relayed struct {
	ID         int64
	Kind       string
	ApprovalID string // RelayDecision's approval
	Body       []byte // as the approver posted it
	Hub        string
}

// RelayID reads the row id of a RelayPrefix payload; ok is false for any
// other payload (an approval id).
func RelayID(payload string) (id int64, ok bool) {
	rest, found := strings.CutPrefix(payload, RelayPrefix)
	if !found {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// RelayFor says whether a new row's payload asks instance to take it at
// once: it holds the request, or anyone may.
func RelayFor(payload, instance string) bool {
	rest, found := strings.CutPrefix(payload, RelayPrefix)
	if !found {
		return false
	}
	_, holder, queued := strings.Cut(rest, ":")
	return queued && (holder == "" || holder == instance)
}

func relayPayload(id int64) string { return RelayPrefix + strconv.FormatInt(id, 10) }

// Relay queues a decision (kind RelayDecision, on approvalID) or an
// override request (RelayOverride, approvalID "") with the body posted,
// names this store's instance as its hub, announces it, and returns its
// row id.
func (s *Store) Relay(ctx context.Context, kind, approvalID string, body []byte) (int64, error) {
	var aid *string
	if kind == RelayDecision {
		aid = &approvalID
	}
	var id int64
	var holder string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO relayed (kind, approval_id, body, hub) VALUES ($1, $2, $3, $4)
			RETURNING id, coalesce((SELECT request_instance FROM approvals WHERE id = $2), '')`,
			kind, aid, body, s.instance).Scan(&id, &holder); err != nil {
			return err
		}
		// Only the holder is woken at once; the others look on their own
		// after the grace.
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, relayPayload(id)+":"+holder)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("relay %s: %w", kind, err)
	}
	return id, nil
}

// TakeRelayed claims the oldest unanswered row this proxy may take, or
// returns nil when there is none:
//   - a decision on an approval whose request this proxy recorded (it
//     holds the request, and releases it at once);
//   - any decision queued more than ownerGrace ago (its holder may be
//     gone), or on an approval no proxy has;
//   - an override request at once;
//   - a row another proxy claimed more than stale ago without answering
//     (it died taking it).
//
// Two proxies never claim one row at once (SKIP LOCKED).
func (s *Store) TakeRelayed(ctx context.Context, ownerGrace, stale time.Duration) (*Relayed, error) {
	r := &Relayed{}
	err := s.pool.QueryRow(ctx, `UPDATE relayed SET claimed_instance = $1, claimed_at = clock_timestamp()
		WHERE id = (
			SELECT r.id FROM relayed r LEFT JOIN approvals a ON a.id = r.approval_id
			WHERE r.done_at IS NULL
			  AND (r.claimed_at IS NULL OR r.claimed_at < clock_timestamp() - $3 * interval '1 microsecond')
			  AND (r.kind = 'override' OR a.id IS NULL OR a.request_instance = $1
			       OR r.submitted_at < clock_timestamp() - $2 * interval '1 microsecond')
			ORDER BY r.id LIMIT 1
			FOR UPDATE OF r SKIP LOCKED)
		RETURNING id, kind, coalesce(approval_id, ''), body, hub`,
		s.instance, ownerGrace.Microseconds(), stale.Microseconds()).
		Scan(&r.ID, &r.Kind, &r.ApprovalID, &r.Body, &r.Hub)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take a relayed decision: %w", err)
	}
	return r, nil
}

// FinishRelayed writes the answer to row id, which this proxy took, and
// announces it; the body goes (an override request's carries the
// requester's identity token, a bearer credential while it lasts). A row
// answered already (another proxy took it again after this one was
// thought dead) keeps its first answer: ok is then false.
func (s *Store) FinishRelayed(ctx context.Context, id int64, result []byte) (ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE relayed SET result = $3, done_at = clock_timestamp(), body = ''::bytea
			WHERE id = $1 AND claimed_instance = $2 AND done_at IS NULL`, id, s.instance, result)
		if err != nil {
			return err
		}
		ok = tag.RowsAffected() == 1
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, relayPayload(id))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("answer relayed %d: %w", id, err)
	}
	return ok, nil
}

// UnclaimRelayed gives back row id, which this proxy took and could not
// decide (its ledger or the database failed): any proxy may take it again.
func (s *Store) UnclaimRelayed(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE relayed SET claimed_instance = NULL, claimed_at = NULL
		WHERE id = $1 AND claimed_instance = $2 AND done_at IS NULL`, id, s.instance)
	if err != nil {
		return fmt.Errorf("give back relayed %d: %w", id, err)
	}
	return nil
}

// RelayAnswer returns row id's answer; done is false while no proxy has
// given one.
func (s *Store) RelayAnswer(ctx context.Context, id int64) (result []byte, done bool, err error) {
	err = s.pool.QueryRow(ctx, "SELECT result FROM relayed WHERE id = $1", id).Scan(&result)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, fmt.Errorf("relayed %d: no such row", id)
	}
	if err != nil {
		return nil, false, fmt.Errorf("relayed %d: %w", id, err)
	}
	return result, result != nil, nil
}

// RelayBacklog is how many relayed rows wait for an answer, and how long
// the oldest has waited (by the database's clock).
func (s *Store) RelayBacklog(ctx context.Context) (n int, oldest time.Duration, err error) {
	var us *int64
	// Only finite times count: a row written by hand with 'infinity' must
	// not make the figure (and the hub's /metrics) fail.
	err = s.pool.QueryRow(ctx, `SELECT count(*), (extract(epoch FROM clock_timestamp() -
			min(submitted_at) FILTER (WHERE isfinite(submitted_at))) * 1e6)::bigint
		FROM relayed WHERE done_at IS NULL`).Scan(&n, &us)
	if err != nil {
		return 0, 0, fmt.Errorf("relayed backlog: %w", err)
	}
	if us != nil {
		oldest = time.Duration(*us) * time.Microsecond
	}
	return n, oldest, nil
}

// PruneRelayed deletes the rows answered more than keep ago, and returns
// how many: the answers matter only to the hub that waits for them, and
// each decision's evidence is the record in the ledger of the proxy that
// took it.
func (s *Store) PruneRelayed(ctx context.Context, keep time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM relayed WHERE done_at < clock_timestamp() - $1 * interval '1 microsecond'", keep.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("prune relayed: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Ping checks the database answers (the hub's /readyz).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
