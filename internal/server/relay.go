package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
)

// How a proxy takes what a hub queued (pgstore.TakeRelayed): the proxy
// holding a request takes its decisions at once; any other after
// relayOwnerGrace, in case the holder is gone; a row taken but not
// answered for relayStale is taken again (its taker died).
const (
	relayOwnerGrace = 3 * time.Second
	relayStale      = 30 * time.Second
	relayPoll       = time.Second
	// relayWorkers rows are decided at once: their ledger records then
	// share group commits, as decisions posted to the proxy itself do.
	relayWorkers = 2
	// Answered rows are deleted after relayKeep, looked for every
	// relayPruneEvery.
	relayKeep       = 24 * time.Hour
	relayPruneEvery = 10 * time.Minute
)

// relayTaker decides, with this proxy's approvals service, what the
// fleet's hubs queued: a hub keeps no ledger and checks no signature; the
// decision counts only once a proxy has checked it against its own
// principals and recorded it in its own ledger, as if it had been posted
// to its admin API.
type relayTaker struct {
	store *pgstore.Store
	svc   *approvals.Service
	log   zerolog.Logger
	kick  chan struct{}
	// identity, when set, proves an override request's requester again:
	// the hub is not trusted to say who asked.
	identity gate.Identity
	// healthy says whether this proxy can record a decision now (its
	// ledger); while it cannot, it takes nothing, and others do.
	healthy func() error
}

func newRelayTaker(store *pgstore.Store, svc *approvals.Service, identity gate.Identity, healthy func() error, log zerolog.Logger) *relayTaker {
	return &relayTaker{store: store, svc: svc, identity: identity, healthy: healthy, log: log, kick: make(chan struct{}, 1)}
}

// notified is told of every notification Watch hands on: a new relayed
// row this proxy should take at once wakes the taker.
func (t *relayTaker) notified(payload string) {
	if pgstore.RelayFor(payload, t.store.InstanceName()) {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// run takes rows when told of one and every relayPoll (notifications can
// be missed; rows of other proxies' requests become this one's after the
// grace), until stop closes.
func (t *relayTaker) run(stop <-chan struct{}) {
	tick := time.NewTicker(relayPoll)
	defer tick.Stop()
	prune := time.NewTicker(relayPruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.kick:
		case <-tick.C:
		case <-prune.C:
			t.prune()
			continue
		}
		var wg sync.WaitGroup
		for range relayWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.drain(stop)
			}()
		}
		wg.Wait()
	}
}

// prune deletes answered rows older than relayKeep, so that the table
// does not grow with every decision ever relayed.
func (t *relayTaker) prune() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := t.store.PruneRelayed(ctx, relayKeep); err != nil {
		t.log.Debug().Err(err).Msg("relayed decisions: cannot prune")
	} else if n > 0 {
		t.log.Info().Int64("deleted", n).Msg("relayed decisions answered a day ago deleted")
	}
}

// drain takes rows until none is left for this proxy, or one could not
// be decided (it is given back, for the next tick or another proxy).
func (t *relayTaker) drain(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if err := t.healthy(); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := t.store.TakeRelayed(ctx, relayOwnerGrace, relayStale)
		cancel()
		if err != nil {
			t.log.Debug().Err(err).Msg("relayed decisions: cannot take")
			return
		}
		if r == nil {
			return
		}
		if !t.take(r) {
			return
		}
	}
}

// take decides one row and writes the answer back for its hub; false when
// it could not be decided now (the row is given back).
func (t *relayTaker) take(r *pgstore.Relayed) bool {
	ans := t.decide(r)
	if ans.Code == approvals.AnswerUnavailable {
		// Nothing was decided (the ledger or the database failed): the
		// decision must not be lost with a final answer. Any proxy takes
		// it again, this one at its next tick.
		t.log.Warn().Int64("relayed", r.ID).Str("error", ans.Error).Msg("a relayed decision could not be decided here now; given back")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := t.store.UnclaimRelayed(ctx, r.ID); err != nil {
			t.log.Warn().Err(err).Int64("relayed", r.ID).Msg("relayed decision not given back; it is taken again once its claim is stale")
		}
		return false
	}
	t.finish(r, ans)
	return true
}

// decide runs one row through the approvals service. A panic is answered
// as an internal error, final: left unanswered, the row would be taken by
// the next proxy, and the next, each failing the same way.
func (t *relayTaker) decide(r *pgstore.Relayed) (ans approvals.Answer) {
	inst := t.store.InstanceName()
	defer func() {
		if p := recover(); p != nil {
			t.log.Error().Int64("relayed", r.ID).Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).
				Msg("a relayed decision made the proxy fail; answered as an internal error")
			ans = approvals.Answer{Instance: inst, Code: approvals.AnswerInternal, Error: "the proxy failed on this request; see its log"}
		}
	}()
	switch r.Kind {
	case pgstore.RelayDecision:
		var sub approvals.Submission
		if err := decodeRelayed(r.Body, &sub); err != nil {
			ans = approvals.Answer{Instance: inst, Code: approvals.AnswerInternal, Error: "the queued decision is unreadable: " + err.Error()}
			break
		}
		a, ref, err := t.svc.Decide(r.ApprovalID, sub)
		ans = approvals.DecisionAnswer(inst, a, ref, err)
		ev := t.log.Info()
		if ref != nil {
			ev = ev.Str("refused", string(ref.Code))
		}
		ev.Str("hub", r.Hub).Int64("relayed", r.ID).Str("approval_id", r.ApprovalID).Str("approver", sub.Approver).
			Msg("a decision queued at a hub, taken here")
	case pgstore.RelayOverride:
		var ro approvals.RelayedOverride
		if err := decodeRelayed(r.Body, &ro); err != nil {
			ans = approvals.Answer{Instance: inst, Code: approvals.AnswerInternal, Error: "the queued override request is unreadable: " + err.Error()}
			break
		}
		req := ro.Request
		if t.identity != nil {
			if ce := gate.ProveRequester(t.identity, ro.CallerToken, req.RequestedBy); ce != nil {
				t.log.Warn().Str("hub", r.Hub).Int64("relayed", r.ID).Str("reason", ce.Reason).
					Msg("an override request queued at a hub does not prove its requester here; refused")
				ans = approvals.Answer{Instance: inst, Caller: ce}
				break
			}
		}
		a, err := t.svc.RequestOverride(req)
		ans = approvals.OverrideAnswer(inst, a, err)
		t.log.Info().Str("hub", r.Hub).Int64("relayed", r.ID).Str("requested_by", req.RequestedBy).
			Msg("an override request queued at a hub, taken here")
	default:
		ans = approvals.Answer{Instance: inst, Code: approvals.AnswerInternal, Error: "unknown relayed kind " + r.Kind}
	}
	return ans
}

// finish writes ans back for row r's hub.
func (t *relayTaker) finish(r *pgstore.Relayed, ans approvals.Answer) {
	if ans.Approval != nil && ans.Approval.Token != "" {
		// A bearer secret: the hub shows no token either.
		ans.Approval = ans.Approval.Clone()
		ans.Approval.Token = ""
	}
	body, err := json.Marshal(ans)
	if err != nil {
		t.log.Error().Err(err).Int64("relayed", r.ID).Msg("relayed answer not encoded")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := t.store.FinishRelayed(ctx, r.ID, body); err != nil {
		// Taken again after relayStale; the second decision is then
		// refused as a duplicate, and the approval is as the first left it.
		t.log.Warn().Err(err).Int64("relayed", r.ID).Msg("relayed answer not written back")
	} else if !ok {
		t.log.Warn().Int64("relayed", r.ID).Msg("relayed row answered by another proxy first")
	}
}

// decodeRelayed reads a queued body as strictly as the admin API read it.
func decodeRelayed(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}
