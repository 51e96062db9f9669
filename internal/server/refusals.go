package server

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// refusals counts admin calls refused for their token and sums them up in
// one ledger record per period at most: a caller without a token can make
// the proxy count, never make the ledger grow faster than that.
type refusals struct {
	mu     sync.Mutex
	counts record.AdminRefusals
	since  time.Time

	ledger  *ledger.Ledger
	app     string
	policy  string
	now     func() time.Time
	log     zerolog.Logger
	observe func(reason string)
}

// add counts one refusal; it never blocks on the ledger.
func (r *refusals) add(reason string) {
	r.observe(reason)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts.Refused == 0 {
		r.since = r.now()
	}
	r.counts.Refused++
	switch reason {
	case "missing_token":
		r.counts.MissingToken++
	case "bad_token":
		r.counts.BadToken++
	case "missing_scope":
		r.counts.MissingScope++
	}
}

// flush writes the summary of the refusals counted since the last one, if
// any; what cannot be written is counted again next time.
func (r *refusals) flush() {
	r.mu.Lock()
	d, since := r.counts, r.since
	r.counts = record.AdminRefusals{}
	r.mu.Unlock()
	if d.Refused == 0 {
		return
	}
	d.Door = "admin"
	d.Since, d.Until = since.UTC().Format(time.RFC3339Nano), r.now().UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.ledger.Append(ctx, ledger.Entry{Kind: record.KindRequest, App: r.app, Decision: record.Deny,
		Reason: record.AdminRefused, Policy: r.policy, Data: d.Map()})
	if err != nil {
		r.log.Error().Err(err).Int("refused", d.Refused).Msg("admin refusals not recorded; counted again next time")
		r.mu.Lock()
		r.counts.Refused += d.Refused
		r.counts.MissingToken += d.MissingToken
		r.counts.BadToken += d.BadToken
		r.counts.MissingScope += d.MissingScope
		if r.since.IsZero() || since.Before(r.since) {
			r.since = since
		}
		r.mu.Unlock()
		return
	}
	r.log.Warn().Int("refused", d.Refused).Int("missing_token", d.MissingToken).Int("bad_token", d.BadToken).
		Int("missing_scope", d.MissingScope).Msg("admin API calls refused for their token")
}

// loop flushes every period until stop is closed, and once more then.
func (r *refusals) loop(every time.Duration, stop <-chan struct{}, done func()) {
	defer done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			r.flush()
			return
		case <-t.C:
			r.flush()
		}
	}
}
