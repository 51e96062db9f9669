package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pollOverlap is how far back each poll looks before the previous one
// began: a change is stamped (changed_at) a moment before its transaction
// commits, and must not fall between two polls while it is invisible.
const pollOverlap = 5 * time.Second

// Watch backoff between attempts to reconnect.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Change is one approval's change as Changed sees it.
type Change struct {
	ID string
	At time.Time // changed_at, by the database's clock
}

// Changed returns the approvals changed at or after since, by the
// database's clock, oldest first, and that clock's time before it looked:
// what to pass, less an overlap, to the next call. It is Watch's fallback
// for a missed notification.
func (s *Store) Changed(ctx context.Context, since time.Time) ([]Change, time.Time, error) {
	var now time.Time
	if err := s.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		return nil, time.Time{}, fmt.Errorf("changed approvals: %w", err)
	}
	rows, err := s.pool.Query(ctx, "SELECT id, changed_at FROM approvals WHERE changed_at >= $1 ORDER BY changed_at, id", since)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("changed approvals: %w", err)
	}
	var out []Change
	var c Change
	if _, err := pgx.ForEachRow(rows, []any{&c.ID, &c.At}, func() error {
		out = append(out, c)
		return nil
	}); err != nil {
		return nil, time.Time{}, fmt.Errorf("changed approvals: %w", err)
	}
	return out, now, nil
}

// Watch calls fn with the id of each approval whose change commits, at any
// proxy of the fleet, until ctx ends; it returns ctx's error. It LISTENs on
// a connection of its own, reconnecting with backoff when that is lost,
// and polls with Changed every PollInterval (and on each reconnection), so
// that a change whose notification was missed reaches fn within about one
// interval. fn may be called more than once for one change, and for
// changes of no interest to the caller: it should look the approval up.
// It runs on Watch's goroutine and must be quick.
func (s *Store) Watch(ctx context.Context, fn func(id string)) error {
	w := &watcher{s: s, fn: fn, seen: map[seenKey]struct{}{}}
	w.since = time.Now()
	rctx, cancel := s.readCtx()
	if err := s.pool.QueryRow(rctx, "SELECT clock_timestamp()").Scan(&w.since); err != nil {
		s.log.Warn().Err(err).Msg("approvals watch: database clock unread; polling from the local clock")
	}
	cancel()
	backoff := minBackoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		conn, err := s.listen(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("approvals watch: cannot listen")
			w.poll(ctx) // the pool may still reach the database
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		if s.onListen != nil {
			s.onListen()
		}
		w.poll(ctx) // what changed while nothing listened
		err = w.serve(ctx, conn)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(cctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn().Err(err).Msg("approvals watch: connection lost; reconnecting")
	}
}

func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

type seenKey struct {
	id string
	at int64
}

// watcher is Watch's state: where its poll has got to, and the changes in
// the overlap it has reported already.
type watcher struct {
	s     *Store
	fn    func(string)
	since time.Time
	seen  map[seenKey]struct{}
}

// serve hands on notifications from conn and polls between them, until
// conn fails or ctx ends.
func (w *watcher) serve(ctx context.Context, conn *pgx.Conn) error {
	last := time.Now()
	for {
		wait := w.s.poll - time.Since(last)
		if wait <= 0 {
			w.poll(ctx)
			last = time.Now()
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			w.fn(n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Time to poll; the connection stays usable.
		default:
			return err
		}
	}
}

// poll reports what changed since the last poll (less the overlap) that it
// has not reported already.
func (w *watcher) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, w.s.timeout)
	defer cancel()
	changes, now, err := w.s.Changed(pctx, w.since.Add(-pollOverlap))
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Debug().Err(err).Msg("approvals watch: poll failed")
		}
		return
	}
	for _, c := range changes {
		k := seenKey{c.ID, c.At.UnixNano()}
		if _, ok := w.seen[k]; ok {
			continue
		}
		w.seen[k] = struct{}{}
		w.fn(c.ID)
	}
	w.since = now
	floor := now.Add(-2 * pollOverlap).UnixNano()
	for k := range w.seen {
		if k.at < floor {
			delete(w.seen, k)
		}
	}
}
