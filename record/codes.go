package record

// Kind is a record's kind member.
type Kind string

// The record kinds (docs/reference.md, "Records").
const (
	KindRequest      Kind = "request"      // a request and the gate's verdict on it
	KindApproval     Kind = "approval"     // a signed decision, a refused one, or an expiry
	KindCapability   Kind = "capability"   // a capability token issued for an approved request
	KindOverride     Kind = "override"     // an override asked for, its token issued, or a request it let through
	KindForward      Kind = "forward"      // what came back from the ERP for an allowed request
	KindCheckpoint   Kind = "checkpoint"   // a signed checkpoint written to the archive
	KindArchive      Kind = "archive"      // a sealed segment written to the archive
	KindConfig       Kind = "config"       // the manifest, principals and keys in force from this seq on
	KindNotification Kind = "notification" // a notification delivered or failed
	KindOutcome      Kind = "outcome"      // what is known of an allowed request after a crash
)

// Kinds lists every kind, in the order the reference gives them.
var Kinds = []Kind{KindRequest, KindApproval, KindCapability, KindOverride, KindForward,
	KindCheckpoint, KindArchive, KindConfig, KindNotification, KindOutcome}

// Known reports whether k is one of the kinds.
func (k Kind) Known() bool {
	for _, x := range Kinds {
		if k == x {
			return true
		}
	}
	return false
}

// Decision is a record's decision member: what the gate answered a request
// (allow, deny, pending), what a person signed (approve, reject), or what
// became of an approval or token.
type Decision string

const (
	Allow   Decision = "allow"   // request forwarded
	Deny    Decision = "deny"    // request refused
	Pending Decision = "pending" // request (or override) held for approval
	Approve Decision = "approve" // an approver's signed approval
	Reject  Decision = "reject"  // an approver's signed rejection
	Refused Decision = "refused" // a decision that did not count
	Expired Decision = "expired" // an approval whose time ran out
	Issued  Decision = "issued"  // a capability or override token signed
	Unknown Decision = "unknown" // outcome: the proxy cannot tell whether the ERP received the request
	None    Decision = ""        // records of the proxy's own work
)

// Reason is a record's reason member: a stable code clients, dashboards and
// auditors match on.
type Reason string

// Reasons the rules give (the manifest's policy).
const (
	AutoApprove          Reason = "auto_approve"           // allow: AUTO_APPROVE action
	RecordAndAllow       Reason = "record_and_allow"       // allow: unclassified, default_policy RECORD_AND_ALLOW
	Denylisted           Reason = "denylisted"             // deny: action on tool_restrictions.denylist
	Unclassified         Reason = "unclassified"           // deny: no action matched, default_policy DENY
	PolicyDeny           Reason = "policy_deny"            // deny: action's approval_policy is DENY
	OutsideBusinessHours Reason = "outside_business_hours" // deny: business_hours_only outside the window
	RoleNotAllowed       Reason = "role_not_allowed"       // deny: On-Behalf-Of caller lacks every roles_allowed role
	BadEscalation        Reason = "bad_escalation"         // deny: X-UAPK-Escalation is not a valid role name
	ApprovalRequired     Reason = "approval_required"      // pending: REQUIRE_APPROVAL
	DualApproval         Reason = "dual_approval_required" // pending: DUAL_APPROVAL
	AmountOverCap        Reason = "amount_over_cap"        // pending: amount > amount_cap, escalated
	CumulativeOverCap    Reason = "cumulative_over_cap"    // pending: the window's sum below the escalation level plus the amount > cumulative_cap, escalated
	AmountUnreadable     Reason = "amount_unreadable"      // pending: amount_cap set but no amount could be read
	EscalationRequested  Reason = "escalation_requested"   // pending: X-UAPK-Escalation added a role to an AUTO_APPROVE action
	AmbiguousBody        Reason = "ambiguous_body"         // deny, 400: a JSON body not valid UTF-8 JSON, or with keys equal after case folding
	UnknownHost          Reason = "unknown_host"           // deny: forward door, a host no match rule's host and no tool_restrictions.erp_hosts entry names
	MCPBatch             Reason = "mcp_batch"              // deny, 400: a JSON-RPC batch (array) on an MCP path
)

// Reasons the gate gives for a request, beside the rules'.
const (
	UnknownApp        Reason = "unknown_app"        // deny: X-UAPK-App is not the manifest's app_id
	NotApproved       Reason = "not_approved"       // 409: the approval is not (yet) approved, or unknown
	ApprovalExpired   Reason = "expired"            // 409: the approval or its token ran out
	Consumed          Reason = "consumed"           // 409: the approval or token was used already
	DigestMismatch    Reason = "digest_mismatch"    // 409: approved for another request; also a refused signature over another digest
	Rejected          Reason = "rejected"           // deny: an approver rejected it
	BodyTooLarge      Reason = "body_too_large"     // 413: body over --max-body
	Approved          Reason = "approved"           // allow: retry of an approved request
	Capability        Reason = "capability"         // allow: capability token presented; also a capability record's reason
	Override          Reason = "override"           // allow: an override token skipped the approval policy
	InvalidToken      Reason = "invalid_token"      // 409: not a token of ours, or the wrong kind
	AppMismatch       Reason = "app_mismatch"       // 409: token bound to another app
	ActionMismatch    Reason = "action_mismatch"    // 409: token bound to another action
	LedgerUnavailable Reason = "ledger_unavailable" // 503: the record could not be made durable; nothing forwarded
	AmbiguousRequest  Reason = "ambiguous_request"  // 400: a header or parameter by which servers change the method or target
	HeadersMismatch   Reason = "headers_mismatch"   // 409: a retry whose Content-Type or Content-Encoding is not the approved one's
	AmbiguousPath     Reason = "ambiguous_path"     // 400: a request target a server could resolve to another path than the gate
	TooManyPending    Reason = "too_many_pending"   // 429: the app holds max_pending pending approvals already
	// ExecuteMismatch: POST /v1/execute whose templated request classifies
	// as another action than the one named (or as none): refused, 403.
	ExecuteMismatch Reason = "execute_mismatch"
	// 401: with identity configured, X-UAPK-On-Behalf-Of is missing, not a
	// token, or a token that does not verify.
	UnauthenticatedCaller Reason = "unauthenticated_caller"
	// 401: the principals file lists a key for the calling app and the
	// request carries no valid app signature (X-UAPK-Signature), a stale
	// timestamp or a nonce used before.
	UnauthenticatedApp Reason = "unauthenticated_app"
	// Admin API calls refused for their token, summed up in one record.
	AdminRefused Reason = "admin_refused"
)

// Reasons an override token did not apply to a request: the request went to
// its approval policy instead (held, 202), and its record's
// data.override_not_applied names which.
const (
	OverrideExhausted        Reason = "override_exhausted"         // the override has let through its max_uses requests
	OverrideOverAmount       Reason = "override_over_amount"       // the amount is above the override's max_amount (or the action's amount_cap)
	OverrideAmountUnreadable Reason = "override_amount_unreadable" // the override bounds the amount, and this request's cannot be read
)

// Reasons only the forward door gives.
const (
	TunnelHost       Reason = "tunnel_host"        // allow: CONNECT to a tool_restrictions.tunnel_hosts target
	TunnelNotAllowed Reason = "tunnel_not_allowed" // deny: CONNECT elsewhere without interception
	BadTarget        Reason = "bad_target"         // 400: not an http(s) absolute URI or host:port
	HostMismatch     Reason = "host_mismatch"      // 421: Host inside a tunnel is not the CONNECT target
	ConnectInTunnel  Reason = "connect_in_tunnel"  // 405: CONNECT inside an intercepted tunnel
)

// Reasons of forward records: what came of a forwarded request.
const (
	Forwarded           Reason = "forwarded"            // the ERP answered (any status)
	UpstreamError       Reason = "upstream_error"       // the ERP received the request, but its answer broke
	UpstreamUnavailable Reason = "upstream_unavailable" // the ERP cannot have received the request (refused, no route); an approval it used is usable again
	UpstreamTimeout     Reason = "upstream_timeout"     // no answer within --upstream-timeout; the ERP may have received it
	TunnelClosed        Reason = "tunnel_closed"        // a blind tunnel ended
)

// Reasons of approval, capability and override records.
const (
	Signed              Reason = "signed"                // a decision that counted
	TTLElapsed          Reason = "ttl_elapsed"           // an approval expired
	OverrideRequested   Reason = "override_requested"    // an override asked for
	OverrideTokenIssued Reason = "override_token_issued" // an override approved and its token signed
)

// Refusal codes: why a signed decision did not count. Each rule of
// docs/reference.md ("Approval rules") has its own.
const (
	RefuseBadRequest   Reason = "bad_request"        // decision not approve|reject, missing fields
	RefuseExpired      Reason = "approval_expired"   // the approval's ttl has passed
	RefuseClosed       Reason = "approval_closed"    // already approved, rejected or consumed
	RefuseUnknown      Reason = "unknown_approver"   // not in the principals file, or has no key
	RefuseBadSignature Reason = "bad_signature"      // not base64, or does not verify
	RefuseDigest       Reason = DigestMismatch       // signed over another request's digest
	RefuseStale        Reason = "stale_signature"    // signed_at more than 5 minutes from the proxy's clock
	RefuseSelf         Reason = "self_approval"      // the requesting app or the On-Behalf-Of caller
	RefuseDuplicate    Reason = "duplicate_approver" // this person has already decided
	RefuseWrongRole    Reason = "wrong_role"         // holds none of the roles the approval needs
	RefuseRoleFilled   Reason = "role_filled"        // holds a needed role, but its slot is taken
)

// Reasons of notification records.
const (
	NotificationDelivered Reason = "delivered"           // a mail or webhook post was accepted
	NotificationFailed    Reason = "notification_failed" // an attempt failed (data.final: no more follow)
)

// Reasons of outcome records: what is known of an allowed request whose
// forward record is missing.
const (
	// decision unknown: found at start, the proxy stopped (crash, kill -9,
	// power loss, a full disk, a shutdown whose grace ran out) between the
	// request record and its forward record.
	CrashRecovery Reason = "crash_recovery"
	// decision unknown: the forward record could not be committed (a full
	// disk); written once the ledger is writable again, with what the
	// proxy knew of the ERP's answer.
	ForwardNotRecorded Reason = "forward_not_recorded"
	// decision deny: the request record became durable only after its
	// caller had stopped waiting (a commit stuck past the append timeout);
	// the agent was answered 503 ledger_unavailable and nothing was
	// forwarded.
	NotForwarded Reason = "not_forwarded"
)

// Reasons of config records.
const (
	Start Reason = "start" // the proxy started; the principals file is read only then
)

// Reasons lists every reason code above, for checks that a mapping or a
// document names only codes that exist.
var Reasons = []Reason{
	AutoApprove, RecordAndAllow, Denylisted, Unclassified, PolicyDeny, OutsideBusinessHours,
	RoleNotAllowed, BadEscalation, ApprovalRequired, DualApproval, AmountOverCap, CumulativeOverCap,
	AmountUnreadable, EscalationRequested, AmbiguousBody, UnknownHost, MCPBatch,
	UnknownApp, NotApproved, ApprovalExpired, Consumed, DigestMismatch, Rejected, BodyTooLarge,
	Approved, Capability, Override, InvalidToken, AppMismatch, ActionMismatch, LedgerUnavailable,
	AmbiguousRequest, HeadersMismatch, AmbiguousPath, TooManyPending, UnauthenticatedCaller, UnauthenticatedApp, AdminRefused, ExecuteMismatch,
	OverrideExhausted, OverrideOverAmount, OverrideAmountUnreadable,
	TunnelHost, TunnelNotAllowed, BadTarget, HostMismatch, ConnectInTunnel,
	Forwarded, UpstreamError, UpstreamUnavailable, UpstreamTimeout, TunnelClosed,
	Signed, TTLElapsed, OverrideRequested, OverrideTokenIssued,
	RefuseBadRequest, RefuseExpired, RefuseClosed, RefuseUnknown, RefuseBadSignature,
	RefuseStale, RefuseSelf, RefuseDuplicate, RefuseWrongRole, RefuseRoleFilled,
	NotificationDelivered, NotificationFailed,
	CrashRecovery, ForwardNotRecorded, NotForwarded,
	Start,
}

// Known reports whether r is one of the reason codes.
func (r Reason) Known() bool {
	for _, x := range Reasons {
		if r == x {
			return true
		}
	}
	return false
}
