package rules

// API skeleton shared by the rules package and its callers. The bodies live in
// the other files of this package.

import (
	"crypto/ed25519"
	"time"
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

// Stable reason codes. Clients and auditors match on these strings.
const (
	ReasonAutoApprove          = "auto_approve"           // allow: AUTO_APPROVE action
	ReasonRecordAndAllow       = "record_and_allow"       // allow: unclassified, default_policy RECORD_AND_ALLOW
	ReasonDenylisted           = "denylisted"             // deny: action on tool_restrictions.denylist
	ReasonUnclassified         = "unclassified"           // deny: no action matched, default_policy DENY
	ReasonPolicyDeny           = "policy_deny"            // deny: action's approval_policy is DENY
	ReasonOutsideBusinessHours = "outside_business_hours" // deny: business_hours_only outside the window
	ReasonRoleNotAllowed       = "role_not_allowed"       // deny: On-Behalf-Of caller lacks every roles_allowed role
	ReasonBadEscalation        = "bad_escalation"         // deny: X-UAPK-Escalation is not a valid role name
	ReasonApprovalRequired     = "approval_required"      // pending: REQUIRE_APPROVAL
	ReasonDualApproval         = "dual_approval_required" // pending: DUAL_APPROVAL
	ReasonAmountOverCap        = "amount_over_cap"        // pending: amount > amount_cap, escalated
	ReasonAmountUnreadable     = "amount_unreadable"      // pending: amount_cap set but no amount could be read
	ReasonEscalationRequested  = "escalation_requested"   // pending: X-UAPK-Escalation added a role to an AUTO_APPROVE action
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
	Reason      string      // one of the Reason* codes
	Action      string      // "" when unclassified
	Requirement Requirement // set when Outcome == Pending
	Amount      string      // decimal text of the amount read from the body, "" if none
	Escalated   bool        // amount_cap or X-UAPK-Escalation changed the requirement
	Detail      string      // human-readable explanation, for logs and records
	Hold        time.Duration
	ApprovalTTL time.Duration
}

// Principal is a person (or service) with roles and, for approvers, a key.
type Principal struct {
	ID        string
	Roles     []string
	PublicKey ed25519.PublicKey // nil when the principal cannot sign
}
