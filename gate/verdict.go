package gate

import (
	"strconv"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Verdict is what the gate decided and recorded for one call: a value the
// door turns into its answer. Outcome Allow means forward; Deny and Pending
// mean answer without forwarding (Reason says why, and the door maps it to
// a status code).
type Verdict struct {
	Outcome    rules.Outcome
	Reason     record.Reason
	Action     string
	App        string
	Record     uint64 // ledger seq of the request record, 0 if none was written
	ApprovalID string
	Digest     string
	// Capability is the token the ERP receives in X-UAPK-Capability with an
	// approved request.
	Capability string
	// What a pending approval needs, and until when.
	RequiredRoles []string
	ExpiresAt     time.Time
	// Hold is how long the door may keep the agent waiting for this
	// pending approval (Gate.Await).
	Hold time.Duration
	// Message, for a refusal the agent's developer must act on, says what
	// to fix (unauthenticated_caller: why the token did not verify).
	Message string
	// MCP is the JSON-RPC tools/call decided on (docs/reference.md#mcp),
	// nil for any other request: the door answers a held or refused one in
	// JSON-RPC, with its id.
	MCP *rules.MCPCall

	door    string
	started time.Time
	// used: the approval (and its token) this verdict consumed, by Record.
	usedID, usedToken string
}

// UsesApproval reports whether the verdict lets a request through on an
// approval it used up: the doors send such a request on a connection of its
// own, so that a failure tells for sure whether the ERP got it.
func (v *Verdict) UsesApproval() bool { return v.usedID != "" }

// Forward reports whether the door must send the request to the ERP.
func (v *Verdict) Forward() bool { return v.Outcome == rules.Allow }

// Decision is the verdict's word in X-UAPK-Decision and the record:
// allow, deny or pending.
func (v *Verdict) Decision() record.Decision { return record.Decision(v.Outcome.String()) }

// Headers calls set with the X-UAPK-* response headers of v; each door
// writes them into its own header type.
func (v *Verdict) Headers(set func(name, value string)) {
	set(HeaderDecision, string(v.Decision()))
	if v.Action != "" {
		set(HeaderAction, v.Action)
	}
	if v.Record != 0 {
		set(HeaderRecord, strconv.FormatUint(v.Record, 10))
	}
	if v.ApprovalID != "" {
		set(HeaderApprovalID, v.ApprovalID)
	}
}

// Request headers an agent may send (docs/reference.md#headers). Every
// X-UAPK-* header is removed before a request reaches the ERP; the doors
// read these first.
const (
	HeaderApp           = "X-UAPK-App"
	HeaderJustification = "X-UAPK-Justification"
	HeaderOnBehalfOf    = "X-UAPK-On-Behalf-Of"
	HeaderEscalation    = "X-UAPK-Escalation"
	HeaderApprovalID    = "X-UAPK-Approval-Id"
	HeaderCapability    = "X-UAPK-Capability"
	HeaderOverride      = "X-UAPK-Override"

	HeaderDecision = "X-UAPK-Decision"
	HeaderAction   = "X-UAPK-Action"
	HeaderRecord   = "X-UAPK-Record"
)
