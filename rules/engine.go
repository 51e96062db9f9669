package rules

import (
	"errors"
	"fmt"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Engine decides requests against one manifest and, optionally, the
// principals file. It holds no mutable state: Decide is safe for concurrent
// use and reads neither the clock nor the network.
type Engine struct {
	m *Manifest
	p *Principals
}

// NewEngine returns an Engine for m. p may be nil: then no caller is known,
// and every action with roles_allowed is denied (role_not_allowed).
func NewEngine(m *Manifest, p *Principals) *Engine {
	if m == nil {
		panic("rules: NewEngine with a nil manifest")
	}
	return &Engine{m: m, p: p}
}

// Manifest returns the manifest the engine decides by.
func (e *Engine) Manifest() *Manifest { return e.m }

// Principals returns the principals the engine knows, possibly nil.
func (e *Engine) Principals() *Principals { return e.p }

// Classify returns the first action, in manifest order, with a match rule
// for r, or nil when none matches. When the agent chose the host
// (r.AgentChosenHost), rules without a host count only for hosts in
// tool_restrictions.erp_hosts, and a host that neither erp_hosts nor any
// rule's host names fails with an error wrapping ErrUnknownHost. It fails
// with an error wrapping ErrAmbiguousPath when r.Path has no canonical form
// (see Decide).
func (e *Engine) Classify(r *Request) (*Action, error) {
	c, err := e.classify(r)
	return c.action, err
}

// classified is what classify found: the action, and on an MCP path
// (docs/reference.md#mcp) the tools/call read from the body.
type classified struct {
	action  *Action
	mcpPath bool     // a match rule naming mcp_tool matches the host and path
	mcp     *MCPCall // the body's tools/call, nil when it is another message
}

// classify is Classify with what it read of an MCP body. On an MCP path a
// body that cannot be read the way every MCP server reads it fails with
// an error wrapping ErrMCPBody.
func (e *Engine) classify(r *Request) (classified, error) {
	var host reqHost
	if e.m.hostRules || r.AgentChosenHost {
		host = parseReqHost(r.Host, r.Scheme)
	}
	hostless := true // rules without a host apply
	if r.AgentChosenHost {
		hostless = e.m.erpHost(host)
		if !hostless && !e.m.namedHost(host) {
			return classified{}, fmt.Errorf("%w: %s", ErrUnknownHost, clip(r.Host))
		}
	}
	path, err := canonicalPath(r.Path, false)
	if err != nil {
		return classified{}, fmt.Errorf("%w: %v", ErrAmbiguousPath, err)
	}
	var c classified
	if e.m.mcpRules && e.m.mcpPath(host, path, hostless) {
		c.mcpPath = true
		if c.mcp, err = readMCP(r.Body); err != nil {
			return c, fmt.Errorf("%w: %w", ErrMCPBody, err)
		}
	}
	c.action = e.m.classify(r.Method, host, path, hostless, c)
	return c, nil
}

// mcpPath reports whether a match rule naming mcp_tool matches host and
// path, whatever its method: the path is then an MCP endpoint for every
// method, so that no method reaches a tool without being read as MCP.
func (m *Manifest) mcpPath(host reqHost, path string, hostless bool) bool {
	for _, a := range m.Actions {
		for i := range a.Match {
			mr := &a.Match[i]
			if mr.MCPTool == "" {
				continue
			}
			if mr.host == nil && !hostless || mr.host != nil && !mr.host.match(host) {
				continue
			}
			if mr.path.match(path) {
				return true
			}
		}
	}
	return false
}

// classify finds the first action with a rule for the request. On an MCP
// path a tools/call is matched only by rules naming its tool, and any
// other message only by rules naming none (the session's action).
func (m *Manifest) classify(method string, host reqHost, path string, hostless bool, c classified) *Action {
	for _, a := range m.Actions {
		for i := range a.Match {
			mr := &a.Match[i]
			if c.mcpPath {
				if c.mcp != nil && (mr.MCPTool == "" || mr.MCPTool != c.mcp.Tool) || c.mcp == nil && mr.MCPTool != "" {
					continue
				}
			} else if mr.MCPTool != "" {
				continue
			}
			if mr.Method != "" && !strings.EqualFold(mr.Method, method) {
				continue
			}
			if mr.host == nil && !hostless || mr.host != nil && !mr.host.match(host) {
				continue
			}
			if mr.path.match(path) {
				return a
			}
		}
	}
	return nil
}

// Decide classifies r and returns the verdict. The steps, in order:
//
//  1. Host, when the agent chose it (r.AgentChosenHost: the forward door).
//     A host that no match rule's host and no tool_restrictions.erp_hosts
//     entry names is denied as unknown_host whatever default_policy says;
//     for a host outside erp_hosts, match rules without a host do not
//     apply in the next step. (A door with a fixed target skips this: its
//     rules without a host apply to that target.)
//  2. Classify. A path with no canonical form (dot or empty segments,
//     encoded '/', '\' or NUL, ';' parameters, bad escapes) is denied as
//     unclassified whatever default_policy says. No matching action:
//     default_policy DENY gives deny/unclassified, RECORD_AND_ALLOW
//     allow/record_and_allow.
//  3. Action on the denylist: deny/denylisted.
//  4. approval_policy DENY: deny/policy_deny.
//  5. business_hours_only outside the window (or r.Time zero):
//     deny/outside_business_hours.
//  6. roles_allowed: the On-Behalf-Of caller must be a known principal
//     holding one of them, else deny/role_not_allowed.
//  7. A non-empty X-UAPK-Escalation that is not a role token:
//     deny/bad_escalation.
//  8. A body sent as JSON (Content-Type application/json or */*+json) that
//     is not one unambiguous JSON document (body.go): deny/ambiguous_body.
//     The same for an unclassified request that RECORD_AND_ALLOW would let
//     through. An empty body is no body.
//  9. Amount, when the action has amount paths or amount_cap: per path the
//     larger of the sum of the positive and of the negative values it
//     selects (numeric strings count), the largest over the paths. With
//     amount_cap, an unreadable amount gives pending/amount_unreadable and
//     an amount over the cap pending/amount_over_cap, both with the
//     escalation requirement.
//  10. Otherwise the approval_policy: allow/auto_approve,
//     pending/approval_required or pending/dual_approval_required.
//  11. X-UAPK-Escalation adds a slot {role} unless a single-role slot for it
//     exists; an allow becomes pending/escalation_requested.
func (e *Engine) Decide(r *Request) Decision {
	if r == nil {
		return Decision{Outcome: Deny, Reason: ReasonUnclassified, Detail: "no request"}
	}
	c, err := e.classify(r)
	a := c.action
	if errors.Is(err, ErrMCPBody) {
		reason := ReasonAmbiguousBody
		if errors.Is(err, errMCPBatch) {
			reason = record.MCPBatch
		}
		return Decision{Outcome: Deny, Reason: reason,
			Detail: fmt.Sprintf("the body on MCP path %s is refused: %v", clip(r.Path), errors.Unwrap(err))}
	}
	if errors.Is(err, ErrUnknownHost) {
		return Decision{Outcome: Deny, Reason: ReasonUnknownHost,
			Detail: fmt.Sprintf("host %s is named by no match rule and no tool_restrictions.erp_hosts entry; a request to a host the agent chose goes only to hosts the manifest names, whatever default_policy says", clip(r.Host))}
	}
	if err != nil {
		return Decision{Outcome: Deny, Reason: ReasonUnclassified,
			Detail: fmt.Sprintf("refused to classify path %s: %v; such paths are denied whatever default_policy says", clip(r.Path), err)}
	}
	if a == nil && c.mcp != nil {
		return Decision{Outcome: Deny, Reason: ReasonUnclassified, MCP: c.mcp,
			Detail: fmt.Sprintf("no match rule names MCP tool %s on this path; a tool no rule names is denied whatever default_policy says", clip(c.mcp.Tool))}
	}
	if a == nil {
		if e.m.DefaultPolicy == RecordAndAllow {
			if e.m.mcpRules && !c.mcpPath {
				// An MCP server on a path no mcp_tool rule names: a tool
				// call there must not run unread where the manifest gates
				// tools by name.
				if call, err := readMCP(r.Body); err == nil && call != nil {
					return Decision{Outcome: Deny, Reason: ReasonUnclassified,
						Detail: fmt.Sprintf("a tools/call of %s on %s, a path no mcp_tool rule matches; tools are called only on the manifest's MCP paths", clip(call.Tool), clip(r.Path))}
				}
			}
			if isJSONBody(r) {
				if res := scanBody(r.Body, nil); res.invalid != "" {
					return Decision{Outcome: Deny, Reason: ReasonAmbiguousBody, Detail: ambiguousDetail(r, res.invalid)}
				}
			}
			return Decision{Outcome: Allow, Reason: ReasonRecordAndAllow, Detail: "no action matches; default_policy RECORD_AND_ALLOW"}
		}
		return Decision{Outcome: Deny, Reason: ReasonUnclassified, Detail: "no action matches; default_policy DENY"}
	}
	d := Decision{Action: a.Name, Hold: a.Hold, ApprovalTTL: a.ApprovalTTL, MCP: c.mcp}
	deny := func(reason record.Reason, detail string) Decision {
		d.Outcome, d.Reason, d.Detail = Deny, reason, detail
		return d
	}
	if a.Denylisted {
		return deny(ReasonDenylisted, "action "+a.Name+" is on tool_restrictions.denylist")
	}
	if a.Policy == DenyPolicy {
		return deny(ReasonPolicyDeny, "action "+a.Name+" has approval_policy DENY")
	}
	if a.BusinessHoursOnly {
		w := e.m.BusinessHours
		if r.Time.IsZero() {
			return deny(ReasonOutsideBusinessHours, "action "+a.Name+" is business_hours_only and the request has no time")
		}
		if !w.Contains(r.Time) {
			return deny(ReasonOutsideBusinessHours, fmt.Sprintf("action %s runs only %s, Monday to Friday; the request came at %s",
				a.Name, w, r.Time.In(w.Location).Format("Mon 2006-01-02 15:04 MST")))
		}
	}
	if len(a.RolesAllowed) > 0 {
		if why := e.callerRefused(a, r.OnBehalfOf); why != "" {
			return deny(ReasonRoleNotAllowed, why)
		}
	}
	if r.Escalation != "" && !ValidRole(r.Escalation) {
		return deny(ReasonBadEscalation, fmt.Sprintf("X-UAPK-Escalation %s is not a role name ([a-z0-9_.-]{1,64})", clip(r.Escalation)))
	}

	var body bodyResult
	switch {
	case c.mcp != nil:
		// The body was judged whole by readMCP; amounts are read from
		// params.arguments.
		if len(a.amount) > 0 {
			if c.mcp.args == nil {
				body.why = "the tools/call has no params.arguments"
			} else {
				body = scanBody(c.mcp.args, a.amount)
			}
		}
	case c.mcpPath:
		// A session message, judged by readMCP: amounts from the body.
		if len(a.amount) > 0 {
			body = scanBody(r.Body, a.amount)
		}
	default:
		if asJSON := isJSONBody(r); asJSON || len(a.amount) > 0 {
			body = scanBody(r.Body, a.amount)
			if asJSON && body.invalid != "" {
				return deny(ReasonAmbiguousBody, ambiguousDetail(r, body.invalid))
			}
		}
	}
	if len(a.amount) > 0 || a.hasCap {
		amount, why := decimal{}, "the action lists no amount paths"
		if len(a.amount) > 0 {
			amount, why = body.amount, body.why
			if body.invalid != "" {
				why = body.invalid
			}
		}
		if why == "" {
			d.Amount = amount.String()
		}
		if a.hasCap {
			switch {
			case why != "":
				d.Outcome, d.Reason, d.Escalated = Pending, ReasonAmountUnreadable, true
				d.Requirement = a.esc.clone()
				d.Detail = fmt.Sprintf("action %s has amount_cap %s but the amount cannot be read: %s; needs %s",
					a.Name, a.cap, why, describe(d.Requirement))
			case amount.cmpAbs(a.cap) > 0:
				d.Outcome, d.Reason, d.Escalated = Pending, ReasonAmountOverCap, true
				d.Requirement = a.esc.clone()
				d.Detail = fmt.Sprintf("amount %s exceeds amount_cap %s of action %s; escalated to %s",
					d.Amount, a.cap, a.Name, describe(d.Requirement))
			}
		}
	}
	if d.Reason == "" {
		switch a.Policy {
		case AutoApprove:
			d.Outcome, d.Reason, d.Detail = Allow, ReasonAutoApprove, a.allowDetail
		case RequireApproval:
			d.Outcome, d.Reason = Pending, ReasonApprovalRequired
			d.Requirement = a.base.clone()
			d.Detail = "action " + a.Name + " needs " + describe(d.Requirement)
		case DualApproval:
			d.Outcome, d.Reason = Pending, ReasonDualApproval
			d.Requirement = a.base.clone()
			d.Detail = "action " + a.Name + " needs " + describe(d.Requirement)
		default:
			// Unreachable for a validated manifest; fail closed.
			return deny(ReasonPolicyDeny, "action "+a.Name+" has no usable approval_policy")
		}
	}
	if role := r.Escalation; role != "" && !hasSingleSlot(d.Requirement, role) {
		if d.Outcome == Allow {
			d.Outcome, d.Reason = Pending, ReasonEscalationRequested
			d.Requirement = Requirement{Policy: RequireApproval}
		}
		d.Requirement.Slots = append(d.Requirement.Slots, []string{role})
		d.Escalated = true
		d.Detail += "; X-UAPK-Escalation adds an approval by " + role
	}
	return d
}

// isJSONBody reports whether r has a body sent as JSON: Content-Type
// application/json or any */*+json, parameters and case aside.
func isJSONBody(r *Request) bool {
	if len(r.Body) == 0 {
		return false
	}
	mt, _, _ := strings.Cut(r.ContentType, ";")
	mt = strings.Trim(mt, " \t")
	if strings.EqualFold(mt, "application/json") {
		return true
	}
	const suffix = "+json"
	return strings.IndexByte(mt, '/') > 0 && len(mt) > len(suffix) && strings.EqualFold(mt[len(mt)-len(suffix):], suffix)
}

func ambiguousDetail(r *Request, why string) string {
	return fmt.Sprintf("the body, sent as %s, is refused: %s; the ERP could read it otherwise than the gate", clip(r.ContentType), why)
}

// callerRefused returns why the On-Behalf-Of caller may not use a, or "".
func (e *Engine) callerRefused(a *Action, caller string) string {
	if caller == "" {
		return fmt.Sprintf("action %s is only for callers with role %s; no X-UAPK-On-Behalf-Of caller was named",
			a.Name, strings.Join(a.RolesAllowed, ", "))
	}
	pr, ok := e.p.Get(caller)
	if !ok {
		return fmt.Sprintf("action %s is only for callers with role %s; caller %s is not a known principal",
			a.Name, strings.Join(a.RolesAllowed, ", "), clip(caller))
	}
	for _, r := range a.RolesAllowed {
		if pr.HasRole(r) {
			return ""
		}
	}
	return fmt.Sprintf("action %s is only for callers with role %s; caller %s holds none of them",
		a.Name, strings.Join(a.RolesAllowed, ", "), pr.ID)
}

func hasSingleSlot(q Requirement, role string) bool {
	for _, s := range q.Slots {
		if len(s) == 1 && s[0] == role {
			return true
		}
	}
	return false
}

// describe renders a requirement for Detail: "approval by cfo",
// "approvals by cfo and controller", "approval by a or b".
func describe(q Requirement) string {
	var b strings.Builder
	if len(q.Slots) == 1 {
		b.WriteString("approval by ")
	} else {
		b.WriteString("approvals by ")
	}
	for i, s := range q.Slots {
		if i > 0 {
			b.WriteString(" and ")
		}
		b.WriteString(strings.Join(s, " or "))
	}
	return b.String()
}

// clip quotes untrusted text for Detail, bounded so that a long header
// cannot bloat logs and records.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
