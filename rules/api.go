package rules

// API skeleton shared by the rules package and its callers. The bodies live in
// the other files of this package.

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Policy is an approval policy named in a manifest.
type Policy string

const (
	AutoApprove     Policy = "AUTO_APPROVE"
	RequireApproval Policy = "REQUIRE_APPROVAL"
	DualApproval    Policy = "DUAL_APPROVAL"
	DenyPolicy      Policy = "DENY"
	RecordAndAllow  Policy = "RECORD_AND_ALLOW" // default_policy only
)

// Outcome is what the gate must do with a request.
type Outcome int

const (
	Deny Outcome = iota // zero value fails closed
	Allow
	Pending
)

// String returns "deny", "allow" or "pending", the values of X-UAPK-Decision
// and of the ledger record's decision field.
func (o Outcome) String() string {
	switch o {
	case Allow:
		return "allow"
	case Pending:
		return "pending"
	default:
		return "deny"
	}
}

// The reason codes the rules give, under the names this package has always
// used; the codes themselves live with every other in package record.
const (
	ReasonAutoApprove          = record.AutoApprove
	ReasonRecordAndAllow       = record.RecordAndAllow
	ReasonDenylisted           = record.Denylisted
	ReasonUnclassified         = record.Unclassified
	ReasonPolicyDeny           = record.PolicyDeny
	ReasonOutsideBusinessHours = record.OutsideBusinessHours
	ReasonRoleNotAllowed       = record.RoleNotAllowed
	ReasonBadEscalation        = record.BadEscalation
	ReasonApprovalRequired     = record.ApprovalRequired
	ReasonDualApproval         = record.DualApproval
	ReasonAmountOverCap        = record.AmountOverCap
	ReasonCumulativeOverCap    = record.CumulativeOverCap
	ReasonAmountUnreadable     = record.AmountUnreadable
	ReasonEscalationRequested  = record.EscalationRequested
	ReasonAmbiguousBody        = record.AmbiguousBody
	ReasonUnknownHost          = record.UnknownHost
)

// Request is the transport-neutral view of one outbound call. Doors fill it;
// no net/http or fasthttp type crosses into this package.
type Request struct {
	Method     string    // upper case
	Scheme     string    // "http" or "https"
	Host       string    // host[:port] as sent to the ERP
	Path       string    // escaped path, starts with "/"
	RawQuery   string    // without "?"
	Body       []byte    // the whole request body (already size-limited by the door)
	App        string    // X-UAPK-App or the manifest's app_id
	OnBehalfOf string    // X-UAPK-On-Behalf-Of, "" if absent
	Escalation string    // X-UAPK-Escalation, "" if absent
	Time       time.Time // the gate's clock; rules never read the wall clock

	// AgentChosenHost is set by a door that sends a request wherever the
	// agent names (the forward door). Then Host must be named by a match
	// rule's host or by tool_restrictions.erp_hosts, else the request is
	// denied unknown_host, and match rules without a host apply only to
	// hosts in erp_hosts. A door whose target is fixed by configuration
	// (the sidecar and its --upstream) leaves it false: there rules
	// without a host apply to that one target.
	AgentChosenHost bool

	// ContentType is the Content-Type header as sent. A body sent as JSON
	// (application/json, */*+json) must be one unambiguous JSON document
	// (docs/reference.md#reasons, ambiguous_body).
	ContentType string
}

// URL returns the absolute URL sent to the ERP: scheme://host/path[?query].
func (r *Request) URL() string {
	u := r.Scheme + "://" + r.Host + r.Path
	if r.RawQuery != "" {
		u += "?" + r.RawQuery
	}
	return u
}

// Requirement says who must approve: one distinct approver per slot, each
// holding at least one role of the slot. REQUIRE_APPROVAL [a,b] is one slot
// {a,b}; DUAL_APPROVAL [cfo,controller] is two slots {cfo},{controller}.
type Requirement struct {
	Policy Policy     `json:"policy"`
	Slots  [][]string `json:"slots"`
}

// Roles returns the distinct roles named by the slots, in order.
func (q Requirement) Roles() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range q.Slots {
		for _, r := range s {
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return out
}

// Decision is the verdict on one request. It is a value: the gate records it
// and the door writes it back.
type Decision struct {
	Outcome     Outcome
	Reason      record.Reason // one of the Reason* codes
	Action      string        // "" when unclassified
	Requirement Requirement   // set when Outcome == Pending
	Amount      string        // decimal text of the amount read from the body, "" if none
	Escalated   bool          // amount_cap or X-UAPK-Escalation changed the requirement
	Detail      string        // human-readable explanation, for logs and records
	Hold        time.Duration
	ApprovalTTL time.Duration
	// MCP is the JSON-RPC tools/call the request carries on an MCP path
	// (docs/reference.md#mcp), nil for any other request: the door then
	// answers in JSON-RPC, and the digest covers MCP.Params.
	MCP *MCPCall
}

// Principal is a person (or service) with roles and, for approvers, a key.
type Principal struct {
	ID        string
	Roles     []string
	PublicKey ed25519.PublicKey // nil when the principal cannot sign with the CLI
	// Passkeys are the principal's WebAuthn credentials (webauthn:), for
	// the dashboard; each signs decisions as an assertion.
	Passkeys []Passkey
	// Email is where notifications reach the principal ("" none).
	Email string
}

// Passkey is one WebAuthn credential of a principal.
type Passkey struct {
	ID        []byte           // the credential id
	PublicKey crypto.PublicKey // *ecdsa.PublicKey (P-256) or ed25519.PublicKey
	PEM       string           // the key as the principals file gave it, normalised
}

// Passkey returns the principal's credential with id, if any.
func (pr *Principal) Passkey(id []byte) (*Passkey, bool) {
	if pr == nil {
		return nil, false
	}
	for i := range pr.Passkeys {
		if bytes.Equal(pr.Passkeys[i].ID, id) {
			return &pr.Passkeys[i], true
		}
	}
	return nil, false
}
