package proxy

import (
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// hub wakes the requests held on an approval when it is decided. A held
// request costs a goroutine parked on a channel and a timer, nothing more.
type hub struct {
	mu      sync.Mutex
	waiters map[string][]chan struct{}
}

func (h *hub) subscribe(id string) chan struct{} {
	ch := make(chan struct{})
	h.mu.Lock()
	if h.waiters == nil {
		h.waiters = map[string][]chan struct{}{}
	}
	h.waiters[id] = append(h.waiters[id], ch)
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(id string, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.waiters[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(h.waiters, id)
	} else {
		h.waiters[id] = list
	}
}

func (h *hub) notify(id string) {
	h.mu.Lock()
	list := h.waiters[id]
	delete(h.waiters, id)
	h.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}

// Held returns how many requests are held open right now.
func (g *Gate) Held() int {
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	n := 0
	for _, l := range g.hub.waiters {
		n += len(l)
	}
	return n
}

// Await keeps a pending request (v, from Check) waiting up to v.Hold for its
// approval. When the approval is decided in time the request is retried
// through the gate, so it is let through once (or refused) and recorded like
// any retry; otherwise v, the 202, is returned. gone reports whether the
// agent has hung up: then nothing is executed and the approval stays usable
// by a later retry. stop ends the wait early (shutdown) with the 202.
func (g *Gate) Await(c *Call, v *Verdict, gone func() bool, stop <-chan struct{}) *Verdict {
	if v.Decision != "pending" || v.Hold <= 0 || v.ApprovalID == "" {
		return v
	}
	ch := g.hub.subscribe(v.ApprovalID)
	defer g.hub.unsubscribe(v.ApprovalID, ch)
	// The approval may have been decided between Check and subscribe.
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
	if gone != nil && gone() {
		g.log.Info().Str("approval_id", v.ApprovalID).Msg("held agent hung up; the approval stays usable by a retry")
		return v
	}
	retry := *c
	retry.ApprovalID = v.ApprovalID
	retry.Capability, retry.Override = "", ""
	return g.Check(&retry)
}
