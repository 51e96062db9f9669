package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// errNeedCounters: Update's hook met a passkey decision whose counter row
// it had not locked; Update locks it and appends again (nothing written).
var errNeedCounters = errors.New("passkey counter not locked")

// lockRow reads approval id inside tx and locks its row until tx ends.
func lockRow(ctx context.Context, tx pgx.Tx, id string) (*row, error) {
	return scan(tx.QueryRow(ctx, "SELECT "+cols+" FROM approvals WHERE id = $1 FOR UPDATE", id))
}

func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = tx.Rollback(ctx) // after Commit a no-op; a broken connection is closed by the pool
}

// Create appends e and stores a, new, with a.RequestRecord set to the
// record's seq. The row is inserted first, in a transaction that holds it
// unseen (and any second Create of the id waiting) while the record is
// appended, and commits after it: a pending approval never exists without
// its request record.
func (s *Store) Create(ctx context.Context, a *approvals.Approval, e ledger.Entry) (ledger.Record, error) {
	change := nonce()
	data, err := encode(a)
	if err != nil {
		return ledger.Record{}, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("create approval %s: %w", a.ID, err)
	}
	defer rollback(tx)
	tag, err := tx.Exec(ctx, `INSERT INTO approvals (id, kind, status, app, action, created_at, expires_at,
		token_id, data, request_instance, request_record, max_uses, uses, last_change, last_instance, last_record)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $10, 0)
		ON CONFLICT (id) DO NOTHING`,
		a.ID, a.Kind, a.Status, a.App, a.Action, a.CreatedAt, a.ExpiresAt, a.TokenID, data, s.instance, a.MaxUses, a.Uses, change)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("create approval %s: %w", a.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return ledger.Record{}, fmt.Errorf("approval %s exists already", a.ID)
	}
	rec, err := s.l.Append(ctx, e)
	if err != nil {
		return ledger.Record{}, err
	}
	c := a.Clone()
	c.RequestRecord = rec.Seq
	if data, err = encode(c); err != nil {
		return rec, s.notTaken(a.ID, rec, err)
	}
	if err := s.finish(ctx, tx, a.ID, change, rec, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE approvals SET data = $2, request_record = $3, last_record = $3,
			changed_at = clock_timestamp() WHERE id = $1`,
			a.ID, data, int64(rec.Seq))
		return err
	}); err != nil {
		return rec, err
	}
	a.RequestRecord = rec.Seq
	return rec, nil
}

// provisional is the record change sees in Update's dry run: e's fields,
// seq 0 (the ledger has not numbered it).
func provisional(e ledger.Entry) *ledger.Record {
	return &ledger.Record{V: 1, Kind: e.Kind, App: e.App, Action: e.Action, Decision: e.Decision, Reason: e.Reason,
		ApprovalID: e.ApprovalID, Digest: e.Digest, Policy: e.Policy, Data: e.Data}
}

// Update appends e and stores what change makes of approval id.
//
// Under the row's lock, change first runs on a copy with a provisional
// record (seq 0) to learn which passkeys the decision shows, and their
// counter rows are locked too. Then e is appended with a hook that runs
// change again, on a fresh copy, with the real record, and checks the
// counters against the locked rows, inside the ledger's own transaction:
// a refused change (change's error, ErrPasskeyReplayed) writes no record.
// Only then is the approval written and the transaction committed.
func (s *Store) Update(ctx context.Context, id string, e ledger.Entry, change func(a *approvals.Approval, rec *ledger.Record) error) (ledger.Record, error) {
	nc := nonce()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	defer rollback(tx)
	cur, err := lockRow(ctx, tx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Record{}, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	if err != nil {
		return ledger.Record{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	probe := cur.a.Clone()
	if err := change(probe, provisional(e)); err != nil {
		return ledger.Record{}, fmt.Errorf("approval %s: %w", id, err)
	}
	locked := map[string]uint32{}
	if err := lockCounters(ctx, tx, credentials(probe), locked); err != nil {
		return ledger.Record{}, fmt.Errorf("update approval %s: %w", id, err)
	}

	var (
		out   *approvals.Approval
		raise map[string]uint32
		need  []string
	)
	prev := e.Tx
	e.Tx = func(btx *bolt.Tx, rec *ledger.Record) error {
		out, raise, need = nil, nil, nil // a re-run starts afresh
		a := cur.a.Clone()
		if err := change(a, rec); err != nil {
			return err
		}
		if a.ID != id || a.Consumed != cur.a.Consumed || a.Uses != cur.a.Uses {
			return ErrStoreOwned
		}
		r, missing, err := newCounters(a, rec.Seq, locked)
		if len(missing) > 0 {
			need = missing
			return errNeedCounters
		}
		if err != nil {
			return err
		}
		if prev != nil {
			if err := prev(btx, rec); err != nil {
				return err
			}
		}
		out, raise = a, r
		return nil
	}
	var rec ledger.Record
	for attempt := 0; ; attempt++ {
		rec, err = s.l.Append(ctx, e)
		if errors.Is(err, errNeedCounters) && attempt < 3 {
			// change decided otherwise with the real record than in the
			// dry run: lock what it needs and try again.
			if err := lockCounters(ctx, tx, need, locked); err != nil {
				return ledger.Record{}, fmt.Errorf("update approval %s: %w", id, err)
			}
			continue
		}
		if err != nil {
			return ledger.Record{}, err
		}
		break
	}
	if out == nil {
		return rec, s.notTaken(id, rec, errors.New("the ledger did not run the entry's hook (pgstore.Ledger must)"))
	}
	data, err := encode(out)
	if err != nil {
		return rec, s.notTaken(id, rec, err)
	}
	err = s.finish(ctx, tx, id, nc, rec, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE approvals SET kind = $2, status = $3, app = $4, action = $5,
			created_at = $6, expires_at = $7, token_id = $8, data = $9, request_record = $10, max_uses = $11,
			last_change = $12, last_instance = $13, last_record = $14, changed_at = clock_timestamp()
			WHERE id = $1`,
			id, out.Kind, out.Status, out.App, out.Action, out.CreatedAt, out.ExpiresAt, out.TokenID, data,
			int64(out.RequestRecord), out.MaxUses, nc, s.instance, int64(rec.Seq)); err != nil {
			return err
		}
		for cred, n := range raise {
			if _, err := tx.Exec(ctx, "UPDATE passkey_counters SET counter = $2, updated_at = clock_timestamp() WHERE credential_id = $1",
				cred, int64(n)); err != nil {
				return err
			}
		}
		return nil
	})
	return rec, err
}

// credentials lists the passkeys a's decisions show.
func credentials(a *approvals.Approval) []string {
	var out []string
	for _, d := range a.Decisions {
		if d.WebAuthn != nil {
			out = append(out, d.WebAuthn.CredentialID)
		}
	}
	return out
}

// lockCounters locks the counter rows of creds not yet in locked (making
// missing ones at 0, which reads as "none" does: PasskeyCounter says 0, and
// any counter is above it) and reads them into locked. Rows are taken in
// credential order, so two decisions never wait on each other in a cycle.
func lockCounters(ctx context.Context, tx pgx.Tx, creds []string, locked map[string]uint32) error {
	var todo []string
	for _, c := range creds {
		if _, ok := locked[c]; !ok {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	sort.Strings(todo)
	if _, err := tx.Exec(ctx, `INSERT INTO passkey_counters (credential_id, counter)
		SELECT c, 0 FROM unnest($1::text[]) AS c ORDER BY c ON CONFLICT (credential_id) DO NOTHING`, todo); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT credential_id, counter FROM passkey_counters
		WHERE credential_id = ANY($1) ORDER BY credential_id FOR UPDATE`, todo)
	if err != nil {
		return err
	}
	var cred string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&cred, &n}, func() error {
		locked[cred] = uint32(n)
		return nil
	})
	return err
}

// newCounters applies the replay rule to the passkey decision a gains by
// record seq: its counter must be above the stored one, unless both are 0
// (an authenticator that keeps none). It returns the counters to store, or
// the credentials it would need locked first.
func newCounters(a *approvals.Approval, seq uint64, locked map[string]uint32) (map[string]uint32, []string, error) {
	var raise map[string]uint32
	var missing []string
	for _, d := range a.Decisions {
		if d.WebAuthn == nil || d.Record != seq {
			continue
		}
		cred, n := d.WebAuthn.CredentialID, passkey.Counter(*d.WebAuthn)
		last, ok := locked[cred]
		if !ok {
			missing = append(missing, cred)
			continue
		}
		if r, ok := raise[cred]; ok {
			last = max(last, r)
		}
		if last >= n {
			if last != 0 {
				return nil, nil, approvals.ErrPasskeyReplayed // 0 after counting is a clone's too
			}
			continue
		}
		if raise == nil {
			raise = map[string]uint32{}
		}
		raise[cred] = n
	}
	return raise, missing, nil
}

// Consume appends e and marks approval id used by it under tokenID, after
// approvals.CheckConsume, once across the fleet. PostgreSQL decides: the
// claim commits first; then the record is appended (any hook e has runs in
// the ledger's transaction, as in the embedded store); then the record's
// seq is written back. A record that cannot be written gives the claim
// back. See the package documentation for the failure cases.
func (s *Store) Consume(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	claim := nonce()
	if err := s.claim(ctx, id, tokenID, claim); err != nil {
		return ledger.Record{}, err
	}
	rec, err := s.l.Append(ctx, e)
	if err != nil {
		if uerr := s.unclaim(ctx, id, tokenID, claim); uerr != nil {
			s.log.Error().Err(uerr).Str("approval_id", id).Str("claim", claim).
				Msg("approval claimed without a ledger record, and the claim could not be given back; it stays unusable")
			return ledger.Record{}, errors.Join(err, fmt.Errorf("%w: approval %s: %v", ErrStranded, id, uerr))
		}
		return ledger.Record{}, err
	}
	if err := s.recordClaim(ctx, id, tokenID, claim, rec.Seq); err != nil {
		// The use took effect (claimed, recorded): only its seq is
		// missing from the row, which Release accepts.
		s.log.Warn().Err(err).Str("approval_id", id).Uint64("seq", rec.Seq).
			Msg("approval used and recorded; its record's seq not written back")
	}
	return rec, nil
}

// claim marks approval id used under tokenID by this instance, committed,
// with claim as its nonce.
func (s *Store) claim(ctx context.Context, id, tokenID, claim string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("consume approval %s: %w", id, err)
	}
	defer rollback(tx)
	r, err := lockRow(ctx, tx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: approval %s not found", approvals.ErrNotApproved, id)
	}
	if err != nil {
		return fmt.Errorf("consume approval %s: %w", id, err)
	}
	if err := approvals.CheckConsume(r.a, tokenID); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO tokens_used (token_id, approval_id, instance, claim)
		VALUES ($1, $2, $3, $4) ON CONFLICT (token_id) DO NOTHING`, tokenID, id, s.instance, claim)
	if err != nil {
		return fmt.Errorf("consume approval %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: token %s was already used", approvals.ErrConsumed, tokenID)
	}
	tag, err = tx.Exec(ctx, `UPDATE approvals SET consumed_instance = $2, consumed_token = $3, consumed_claim = $4,
		consumed_record = NULL, consumed_at = clock_timestamp(), changed_at = clock_timestamp()
		WHERE id = $1 AND consumed_claim IS NULL AND status = 'approved' AND token_id = $3`, id, s.instance, tokenID, claim)
	if err != nil {
		return fmt.Errorf("consume approval %s: %w", id, err)
	}
	if tag.RowsAffected() != 1 {
		// The row's columns disagree with its document: refuse.
		return fmt.Errorf("%w: approval %s: its row does not show it approved and unused", approvals.ErrNotApproved, id)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, id); err != nil {
		return fmt.Errorf("consume approval %s: %w", id, err)
	}
	cerr := tx.Commit(ctx)
	if cerr == nil {
		return nil
	}
	if errors.Is(cerr, pgx.ErrTxCommitRollback) {
		return fmt.Errorf("consume approval %s: %w", id, cerr)
	}
	// The answer to the commit was lost: read the row back.
	dctx, cancel := s.afterRecord(ctx)
	defer cancel()
	ours, err := s.took(dctx, "SELECT consumed_claim IS NOT DISTINCT FROM $2 FROM approvals WHERE id = $1", id, claim)
	switch {
	case err != nil:
		s.log.Error().Err(err).Str("approval_id", id).Str("claim", claim).Msg("approval claim's outcome unknown; it may stay unusable")
		return fmt.Errorf("%w: approval %s: the claim's commit failed (%v) and the row could not be read: %v", ErrStranded, id, cerr, err)
	case ours:
		return nil
	}
	return fmt.Errorf("consume approval %s: %w", id, cerr)
}

// unclaim gives back claim, whose record could not be written, retrying
// within the store's timeout.
func (s *Store) unclaim(ctx context.Context, id, tokenID, claim string) error {
	ctx, cancel := s.afterRecord(ctx)
	defer cancel()
	return s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `WITH u AS (
				UPDATE approvals SET consumed_instance = NULL, consumed_token = NULL, consumed_claim = NULL,
					consumed_record = NULL, consumed_at = NULL, changed_at = clock_timestamp()
				WHERE id = $1 AND consumed_claim = $2 RETURNING id),
			d AS (DELETE FROM tokens_used WHERE token_id = $3 AND claim = $2)
			SELECT pg_notify($4, id) FROM u`, id, claim, tokenID, Channel)
		return err
	})
}

// recordClaim writes the seq of claim's record back.
func (s *Store) recordClaim(ctx context.Context, id, tokenID, claim string, seq uint64) error {
	ctx, cancel := s.afterRecord(ctx)
	defer cancel()
	return s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `WITH u AS (
				UPDATE approvals SET consumed_record = $3, changed_at = clock_timestamp()
				WHERE id = $1 AND consumed_claim = $2 RETURNING id),
			t AS (UPDATE tokens_used SET record = $3 WHERE token_id = $4 AND claim = $2)
			SELECT pg_notify($5, id) FROM u`, id, claim, int64(seq), tokenID, Channel)
		return err
	})
}

// UseOverride appends e, the record of a request override id lets through
// under tokenID, and counts that use, after approvals.CheckOverrideUse. The
// count is raised first by one conditional update (uses < max_uses), so
// proxies racing for the last use get it once; a record that cannot be
// written gives the use back.
func (s *Store) UseOverride(ctx context.Context, id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	for attempt := 0; ; attempt++ {
		var uses int
		err := s.pool.QueryRow(ctx, `WITH u AS (
				UPDATE approvals SET uses = uses + 1, changed_at = clock_timestamp()
				WHERE id = $1 AND kind = 'override' AND status = 'approved' AND token_id = $2
					AND (max_uses = 0 OR uses < max_uses)
				RETURNING id, uses)
			SELECT uses FROM u, pg_notify($3, u.id)`, id, tokenID, Channel).Scan(&uses)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return ledger.Record{}, fmt.Errorf("use override %s: %w", id, err)
		}
		a, err := s.Get(id)
		if errors.Is(err, approvals.ErrNotFound) {
			return ledger.Record{}, fmt.Errorf("%w: override %s not found", approvals.ErrNotApproved, id)
		}
		if err != nil {
			return ledger.Record{}, err
		}
		if err := approvals.CheckOverrideUse(a, tokenID); err != nil {
			return ledger.Record{}, err
		}
		if attempt == 2 {
			return ledger.Record{}, fmt.Errorf("%w: override %s: its row does not show it usable", approvals.ErrNotApproved, id)
		}
		// A use was given back between the update and the read: again.
	}
	rec, err := s.l.Append(ctx, e)
	if err != nil {
		if uerr := s.unuse(ctx, id); uerr != nil {
			s.log.Error().Err(uerr).Str("approval_id", id).
				Msg("override use counted without a ledger record, and not given back: one use is lost")
		}
		return ledger.Record{}, err
	}
	return rec, nil
}

func (s *Store) unuse(ctx context.Context, id string) error {
	ctx, cancel := s.afterRecord(ctx)
	defer cancel()
	return s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `WITH u AS (
				UPDATE approvals SET uses = uses - 1, changed_at = clock_timestamp()
				WHERE id = $1 AND uses > 0 RETURNING id)
			SELECT pg_notify($2, id) FROM u`, id, Channel)
		return err
	})
}

// Release appends e and undoes the Consume by record usedBy of this
// instance's ledger (approval id and token tokenID usable again). The
// record comes first, under the row's lock, and the approval is usable
// again only once it is durable: a failure leaves it consumed.
func (s *Store) Release(ctx context.Context, id, tokenID string, usedBy uint64, e ledger.Entry) (ledger.Record, error) {
	nc := nonce()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("release approval %s: %w", id, err)
	}
	defer rollback(tx)
	notUsed := fmt.Errorf("approval %s is not consumed by record %d of %s", id, usedBy, s.instance)
	r, err := lockRow(ctx, tx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Record{}, notUsed
	}
	if err != nil {
		return ledger.Record{}, fmt.Errorf("release approval %s: %w", id, err)
	}
	// A claim whose seq was not written back is this one if it is ours,
	// under this token: the token is used once.
	ok := r.claim != nil && *r.consumedInstance == s.instance && *r.consumedToken == tokenID &&
		r.a.TokenID == tokenID && usedBy != 0 && (r.consumedRecord == nil || uint64(*r.consumedRecord) == usedBy)
	if !ok {
		return ledger.Record{}, notUsed
	}
	rec, err := s.l.Append(ctx, e)
	if err != nil {
		return ledger.Record{}, err
	}
	err = s.finish(ctx, tx, id, nc, rec, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE approvals SET consumed_instance = NULL, consumed_token = NULL,
			consumed_claim = NULL, consumed_record = NULL, consumed_at = NULL,
			last_change = $2, last_instance = $3, last_record = $4, changed_at = clock_timestamp()
			WHERE id = $1`, id, nc, s.instance, int64(rec.Seq)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM tokens_used WHERE token_id = $1 AND claim = $2", tokenID, *r.claim)
		return err
	})
	return rec, err
}

// finish runs write in tx after rec is durable, announces the change and
// commits, on the store's own deadline. The change carries nonce change in
// last_change, so that a commit whose answer is lost is told from one that
// failed by reading the row back.
func (s *Store) finish(ctx context.Context, tx pgx.Tx, id, change string, rec ledger.Record, write func(context.Context, pgx.Tx) error) error {
	ctx, cancel := s.afterRecord(ctx)
	defer cancel()
	err := write(ctx, tx)
	if err == nil {
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, id)
	}
	if err != nil {
		return s.notTaken(id, rec, err)
	}
	cerr := tx.Commit(ctx)
	if cerr == nil {
		return nil
	}
	if errors.Is(cerr, pgx.ErrTxCommitRollback) {
		return s.notTaken(id, rec, cerr)
	}
	took, err := s.took(ctx, "SELECT last_change = $2 FROM approvals WHERE id = $1", id, change)
	switch {
	case err != nil:
		s.log.Error().Err(err).Str("approval_id", id).Uint64("seq", rec.Seq).
			Msg("ledger record written; whether PostgreSQL took the change is unknown")
		return fmt.Errorf("%w: approval %s, record %d: commit: %v; read back: %v", ErrOutcomeUnknown, id, rec.Seq, cerr, err)
	case took:
		return nil
	}
	return s.notTaken(id, rec, cerr)
}

func (s *Store) notTaken(id string, rec ledger.Record, err error) error {
	s.log.Error().Err(err).Str("approval_id", id).Uint64("seq", rec.Seq).
		Msg("ledger record of an approval change that PostgreSQL did not take")
	return fmt.Errorf("%w: approval %s, record %d: %v", ErrNotTaken, id, rec.Seq, err)
}

// took asks, on a fresh connection, whether a change whose commit answer
// was lost is in the row: q selects one boolean for (id, nonce); no row is
// false.
func (s *Store) took(ctx context.Context, q, id, nonce string) (bool, error) {
	var ok bool
	err := s.retry(ctx, func() error {
		err := s.pool.QueryRow(ctx, q, id, nonce).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			ok = false
			return nil
		}
		return err
	})
	return ok, err
}

// retry runs fn until it succeeds or ctx ends, backing off from 50 ms.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	wait := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
