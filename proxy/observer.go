package proxy

import "time"

// Observer receives what the gate sees, for metrics. It is called on the
// request path and must not block. Labels are fixed sets (door, action,
// decision): never a request id, approval id or URL.
type Observer interface {
	// Decision: one request decided and recorded; took is the gate's time,
	// ledger write included.
	Decision(door, action, decision string, took time.Duration)
	// Upstream: one ERP round trip (err != nil when it failed).
	Upstream(door string, took time.Duration, err error)
	// ApprovalCompleted: an approval became approved or rejected, waited
	// from its creation.
	ApprovalCompleted(action, status string, waited time.Duration)
}

type nopObserver struct{}

func (nopObserver) Decision(string, string, string, time.Duration)  {}
func (nopObserver) Upstream(string, time.Duration, error)           {}
func (nopObserver) ApprovalCompleted(string, string, time.Duration) {}
