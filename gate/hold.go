package gate

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Holdable reports whether v is a pending verdict whose action holds the
// request for its approval (Await, Park).
func Holdable(v *Verdict) bool {
	return v.Outcome == rules.Pending && v.Hold > 0 && v.ApprovalID != ""
}

// Await keeps a pending request (v, from Check) waiting up to v.Hold for its
// approval. When the approval is decided in time the request is retried
// through the gate, so it is let through once (or refused) and recorded like
// any retry; otherwise v, the 202, is returned. gone reports whether the
// agent has hung up: then nothing is executed and the approval stays usable
// by a later retry. stop ends the wait early (shutdown) with the 202.
func (g *Gate) Await(c *Call, v *Verdict, gone func() bool, stop <-chan struct{}) *Verdict {
	if !Holdable(v) {
		return v
	}
	ch, done := g.approvals.Wait(v.ApprovalID)
	defer done()
	// The approval may have been decided between Check and Wait.
	if a, err := g.approvals.Get(v.ApprovalID); err != nil || a.Status == approvals.StatusPending {
		t := time.NewTimer(v.Hold)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
			return v
		case <-stop:
			return v
		}
	}
	return g.released(c, v, gone)
}

// released is a held request whose approval was decided: decided again, as
// a retry on the approval, unless its agent has hung up.
func (g *Gate) released(c *Call, v *Verdict, gone func() bool) *Verdict {
	if gone != nil && gone() {
		g.log.Info().Str("approval_id", v.ApprovalID).Msg("held agent hung up; the approval stays usable by a retry")
		return v
	}
	retry := *c
	retry.ApprovalID = v.ApprovalID
	retry.Capability, retry.Override = "", ""
	return g.Check(&retry)
}

// Park is Await without a goroutine to wait on: the held request is an
// entry in the approvals' table of waiters and a timer for v.Hold, and done
// gets what Await would have returned, once, on a goroutine of its own,
// when the approval is decided, the hold ends, or Stop is called (shutdown:
// the 202). A door parks a connection this way so that a request held for
// minutes keeps none of the stack and buffers that served it. Park returns
// nil, and never calls done, when v does not hold (Holdable): the door
// answers v itself.
func (g *Gate) Park(c *Call, v *Verdict, gone func() bool, done func(*Verdict)) *Hold {
	if !Holdable(v) {
		return nil
	}
	h := &Hold{g: g, c: c, v: v, gone: gone, done: done}
	// end may run before both are armed (a decision that comes at once):
	// it takes mu, so it finds them.
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unnotify = g.approvals.Notify(v.ApprovalID, func() { h.end(true) })
	h.timer = time.AfterFunc(v.Hold, func() { h.end(false) })
	// The approval may have been decided between Check and Notify.
	if a, err := g.approvals.Get(v.ApprovalID); err == nil && a.Status != approvals.StatusPending {
		h.end(true)
	}
	return h
}

// Hold is one request held by Park.
type Hold struct {
	g    *Gate
	c    *Call
	v    *Verdict
	gone func() bool
	done func(*Verdict)

	ended    atomic.Bool // the first of decision, hold end and Stop wins
	mu       sync.Mutex  // held while Park arms the two below
	timer    *time.Timer
	unnotify func() bool
}

// Stop ends the hold now with the 202, unless it has ended already.
func (h *Hold) Stop() { h.end(false) }

// end finishes the hold, once: decided says the approval was decided (else
// the hold ended or Stop was called, and the answer is the 202).
func (h *Hold) end(decided bool) {
	if !h.ended.CompareAndSwap(false, true) {
		return
	}
	go func() {
		h.mu.Lock()
		h.timer.Stop()
		h.unnotify()
		h.mu.Unlock()
		v := h.v
		if decided {
			v = h.g.released(h.c, h.v, h.gone)
		}
		h.done(v)
	}()
}
