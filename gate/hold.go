package gate

import (
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Await keeps a pending request (v, from Check) waiting up to v.Hold for its
// approval. When the approval is decided in time the request is retried
// through the gate, so it is let through once (or refused) and recorded like
// any retry; otherwise v, the 202, is returned. gone reports whether the
// agent has hung up: then nothing is executed and the approval stays usable
// by a later retry. stop ends the wait early (shutdown) with the 202.
func (g *Gate) Await(c *Call, v *Verdict, gone func() bool, stop <-chan struct{}) *Verdict {
	if v.Outcome != rules.Pending || v.Hold <= 0 || v.ApprovalID == "" {
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
	if gone != nil && gone() {
		g.log.Info().Str("approval_id", v.ApprovalID).Msg("held agent hung up; the approval stays usable by a retry")
		return v
	}
	retry := *c
	retry.ApprovalID = v.ApprovalID
	retry.Capability, retry.Override = "", ""
	return g.Check(&retry)
}
