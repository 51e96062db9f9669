package pgstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uapk-gateway/uapk-proxy/internal/desk"
)

// DeskSessions keeps the dashboard's sign-ins in the fleet's database, for
// hubs behind a load balancer. It implements desk.Sessions.
type DeskSessions struct{ s *Store }

var _ desk.Sessions = DeskSessions{}

// DeskSessions returns the store's desk sessions.
func (s *Store) DeskSessions() DeskSessions { return DeskSessions{s} }

func hashHex(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

func (d DeskSessions) ctx() (context.Context, context.CancelFunc) { return d.s.readCtx() }

// SigninKey returns the fleet's sign-in key, made by the first hub that
// asks.
func (d DeskSessions) SigninKey() ([]byte, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	var key []byte
	err := pgx.BeginFunc(ctx, d.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO desk_keys (name, key) VALUES ('signin', $1) ON CONFLICT (name) DO NOTHING", k); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT key FROM desk_keys WHERE name = 'signin'").Scan(&key)
	})
	if err != nil {
		return nil, fmt.Errorf("desk sign-in key: %w", err)
	}
	return key, nil
}

// Put starts session id, and deletes the sessions and used sign-ins that
// expired before it began (sign-ins are rare: the tables stay small).
func (d DeskSessions) Put(id string, s desk.Session) error {
	ctx, cancel := d.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, d.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM desk_sessions WHERE expires_at < clock_timestamp() - interval '1 day'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM desk_signins_used WHERE expires_at < clock_timestamp() - interval '1 day'"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO desk_sessions (id_sha256, principal, csrf, expires_at) VALUES ($1, $2, $3, $4)",
			hashHex(id), s.Principal, s.CSRF, s.Expires)
		return err
	})
	if err != nil {
		return fmt.Errorf("desk session: %w", err)
	}
	return nil
}

// Get returns session id unless it has expired at now.
func (d DeskSessions) Get(id string, now time.Time) (*desk.Session, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	s := &desk.Session{}
	err := d.s.pool.QueryRow(ctx, "SELECT principal, csrf, expires_at FROM desk_sessions WHERE id_sha256 = $1", hashHex(id)).
		Scan(&s.Principal, &s.CSRF, &s.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("desk session: %w", err)
	}
	if !now.Before(s.Expires) {
		return nil, nil
	}
	return s, nil
}

// Delete ends session id, its challenges with it.
func (d DeskSessions) Delete(id string) error {
	ctx, cancel := d.ctx()
	defer cancel()
	if _, err := d.s.pool.Exec(ctx, "DELETE FROM desk_sessions WHERE id_sha256 = $1", hashHex(id)); err != nil {
		return fmt.Errorf("desk sign-out: %w", err)
	}
	return nil
}

// UseSignin marks sign-in challenge ch used until exp, across the fleet.
func (d DeskSessions) UseSignin(ch string, exp, now time.Time) (bool, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	tag, err := d.s.pool.Exec(ctx, "INSERT INTO desk_signins_used (challenge_sha256, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
		hashHex(ch), exp)
	if err != nil {
		return false, fmt.Errorf("desk sign-in: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// PutChallenge gives session id a decision challenge, keeping its
// desk.MaxChallenges newest unexpired ones.
func (d DeskSessions) PutChallenge(id, value string, c desk.Challenge, now time.Time) error {
	ctx, cancel := d.ctx()
	defer cancel()
	sid := hashHex(id)
	err := pgx.BeginFunc(ctx, d.s.pool, func(tx pgx.Tx) error {
		// The session's row serializes its challenges' changes.
		var one int
		if err := tx.QueryRow(ctx, "SELECT 1 FROM desk_sessions WHERE id_sha256 = $1 FOR UPDATE", sid).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // signed out meanwhile: the challenge can never be answered
			}
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM desk_challenges WHERE session_sha256 = $1 AND expires_at <= $2", sid, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO desk_challenges (session_sha256, value, principal, approval, decision, signed_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (session_sha256, value) DO UPDATE SET principal = $3, approval = $4, decision = $5, signed_at = $6, expires_at = $7`,
			sid, value, c.Principal, c.Approval, c.Decision, c.SignedAt, c.Expires); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM desk_challenges WHERE session_sha256 = $1 AND value NOT IN (
			SELECT value FROM desk_challenges WHERE session_sha256 = $1 ORDER BY expires_at DESC LIMIT $2)`, sid, desk.MaxChallenges)
		return err
	})
	if err != nil {
		return fmt.Errorf("desk challenge: %w", err)
	}
	return nil
}

// TakeChallenge spends session id's challenge value for approval, once
// across the fleet.
func (d DeskSessions) TakeChallenge(id, value, approval string, now time.Time) (*desk.Challenge, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	c := &desk.Challenge{}
	err := d.s.pool.QueryRow(ctx, `DELETE FROM desk_challenges
		WHERE session_sha256 = $1 AND value = $2 AND approval = $3 AND expires_at > $4
		RETURNING principal, approval, decision, signed_at, expires_at`, hashHex(id), value, approval, now).
		Scan(&c.Principal, &c.Approval, &c.Decision, &c.SignedAt, &c.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("desk challenge: %w", err)
	}
	return c, nil
}
