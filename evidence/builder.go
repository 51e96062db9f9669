package evidence

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// builder reads the range's records one at a time and keeps what the
// report and the control mapping need: counts (always complete), seq runs
// and detail rows (bounded, see maxRuns and maxRows). It depends on nothing
// but the records, the manifests they name and the anchor, so that Verify
// can run it again over a bundle and compare the derived files byte for byte.
type builder struct {
	manifest func(policy string) (*rules.Manifest, error)
	dual     map[string]bool // policy "\x00" action: base policy DUAL_APPROVAL
	change   map[string]bool // policy "\x00" action: a code change (isChangeAction)

	app       string
	records   uint64
	firstTime string
	lastTime  string
	byKind    map[string]uint64
	byAction  map[string]*[4]uint64 // allow, deny, pending, other
	denials   map[string]uint64     // reason -> count of denied requests
	counts    map[string]uint64     // summary counters
	policies  []*policyUse
	policyIdx map[string]*policyUse
	dualNames map[string]bool // actions that are DUAL_APPROVAL under some manifest
	chgNames  map[string]bool // actions that are code changes under some manifest

	items []*item

	appr      map[string]*apprRow
	apprOrder [2][]*apprRow // non-dual, dual
	apprTotal [2]uint64
	chgOrder  []*apprRow // the rows of code changes, also in apprOrder
	chgTotal  uint64
	ovr       map[string]*ovrRow
	ovrOrder  []*ovrRow
	ovrTotal  uint64
	caps      map[string]*capRow
	capOrder  []*capRow
	capTotal  uint64

	rejections table
	refusals   table
	configs    table
	archives   table
	cps        table
}

type policyUse struct {
	hash        string
	first, last uint64
	count       uint64
	m           *rules.Manifest
}

// table is a detail table being filled: rows up to maxRows, total complete.
type table struct {
	rows  [][]string
	total uint64
}

func (t *table) add(row ...string) {
	t.total++
	if len(t.rows) < maxRows {
		t.rows = append(t.rows, row)
	}
}

type tri int8

const (
	triAny tri = iota
	yes
	no
)

// spec selects records for one piece of evidence; the same spec gives the
// Go match and the jq selector printed for the auditor.
type spec struct {
	kind     record.Kind
	decision record.Decision
	reasons  []record.Reason
	dual     tri // the action's base approval_policy is DUAL_APPROVAL
	change   tri // the action is a code change (isChangeAction)
	override tri // an approval record of an override (data.approval_kind)
}

type item struct {
	control, id, desc string
	spec              spec
	seqs              seqList
}

type apprRow struct {
	id, action string
	dual       bool
	change     bool
	reqSeq     uint64
	reqTime    string
	amount     string
	onBehalf   string
	roles      []string
	decisions  []string
	refused    int
	outcome    string
}

type ovrRow struct {
	id, action, requestedBy, duration, justification string
	reqSeq                                           uint64
	reqTime                                          string
	decisions                                        []string
	token                                            string
	uses                                             seqList
}

type capRow struct {
	approval, action, app, digest, tokenID, issued, expires string
	seq, used                                               uint64
}

func newBuilder(manifest func(string) (*rules.Manifest, error)) *builder {
	b := &builder{
		manifest: manifest, dual: map[string]bool{}, change: map[string]bool{}, chgNames: map[string]bool{},
		byKind: map[string]uint64{}, byAction: map[string]*[4]uint64{}, denials: map[string]uint64{},
		counts: map[string]uint64{}, policyIdx: map[string]*policyUse{}, dualNames: map[string]bool{},
		appr: map[string]*apprRow{}, ovr: map[string]*ovrRow{}, caps: map[string]*capRow{},
	}
	for _, c := range controlDefs {
		for _, it := range c.items {
			b.items = append(b.items, &item{control: c.id, id: it.id, desc: it.desc, spec: it.spec})
		}
	}
	return b
}

var tokenRefusals = []record.Reason{record.InvalidToken, record.Consumed, record.ApprovalExpired, record.DigestMismatch,
	record.AppMismatch, record.ActionMismatch, record.NotApproved}

// controlDefs are the controls of docs/reference.md#evidence-bundle and the seed's compliance
// mapping, with the records that evidence each.
var controlDefs = []struct {
	id, framework, section, title, requirement, mechanism string
	none                                                  string // what no evidence means
	items                                                 []struct {
		id, desc string
		spec     spec
	}
}{
	{"SOX-302", "SOX", "SOX §302", "Dual approval of financial reports",
		"The CEO and CFO certify the financial reports; no AI-generated statement or filing is released without review by the officers responsible for it.",
		"Actions whose manifest approval_policy is DUAL_APPROVAL are held until one distinct person per required role signs the uapk-approval-v1 statement with their own Ed25519 key; one person fills one role, the requesting app and the On-Behalf-Of caller never count. Only then does the gateway issue a single-use capability token, and only the exact approved request (by digest) reaches the ERP.",
		"no financial report (an action under DUAL_APPROVAL) was requested, decided or released in it",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"held", "report requests held for dual approval", spec{kind: record.KindRequest, decision: record.Pending, dual: yes}},
			{"signed", "signed approvals of reports", spec{kind: record.KindApproval, decision: record.Approve, dual: yes, override: no}},
			{"rejected", "signed rejections of reports", spec{kind: record.KindApproval, decision: record.Reject, dual: yes, override: no}},
			{"released", "reports released to the ERP after approval", spec{kind: record.KindRequest, decision: record.Allow, reasons: []record.Reason{record.Approved, record.Capability}, dual: yes}},
			{"override_released", "reports released under an approved override (dual approval skipped)", spec{kind: record.KindOverride, decision: record.Allow, dual: yes}},
		}},
	{"SOX-404", "SOX", "SOX §404", "Segregation of duties over journal entries",
		"Internal control over financial reporting: no single person, and not the AI, can both originate and complete a financial transaction.",
		"REQUIRE_APPROVAL holds journal entries for an approver of the required role; amounts above amount_cap escalate (DUAL_APPROVAL by cfo and controller by default); the requester can never approve its own request; each approver's role is checked against the principals file; roles_allowed limits whom the agent may act for.",
		"no journal entry or other approval-gated request was held, decided or released, and no approval or caller was refused, in it",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"held", "entries held for approval", spec{kind: record.KindRequest, decision: record.Pending, dual: no}},
			{"signed", "signed approvals", spec{kind: record.KindApproval, decision: record.Approve, dual: no, override: no}},
			{"rejected", "signed rejections", spec{kind: record.KindApproval, decision: record.Reject, dual: no, override: no}},
			{"self_approval_refused", "self-approvals refused (requester or caller tried to approve)", spec{kind: record.KindApproval, decision: record.Refused, reasons: []record.Reason{record.RefuseSelf}}},
			{"role_checks", "approvals refused by role checks (wrong role, role already filled, same person twice, unknown approver)", spec{kind: record.KindApproval, decision: record.Refused, reasons: []record.Reason{record.RefuseWrongRole, record.RefuseRoleFilled, record.RefuseDuplicate, record.RefuseUnknown}}},
			{"caller_role_denied", "requests denied: the caller lacks a role in roles_allowed", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.RoleNotAllowed}}},
			{"released", "entries released to the ERP only after approval", spec{kind: record.KindRequest, decision: record.Allow, reasons: []record.Reason{record.Approved, record.Capability}, dual: no}},
		}},
	{"SOX-ITGC-CM", "SOX", "SOX ITGC (change management)", "Review and approval of code changes",
		"IT general control over change management: every change to in-scope code (the systems that process transactions or report on them) is reviewed and approved by someone other than its author, by the roles the policy names, and there is an audit trail of every code modification traceable to the people who approved it.",
		"The code host is reached only through the gateway. Merges of pull requests are held until the manifest's reviewers sign the uapk-approval-v1 statement with their own Ed25519 keys: DUAL_APPROVAL by a functional reviewer and a security reviewer, two distinct people, for repositories that handle money, one reviewer elsewhere. The merge is made on behalf of the pull request's author (X-UAPK-On-Behalf-Of, checked against roles_allowed), so the author can never approve it (self_approval). Pushes to protected branches and merges without a pull request are denylisted. Only the exact merge approved (by digest) reaches the code host, once. Code changes are the actions named merge… or push…, or approved by a functional_reviewer or security_reviewer.",
		"no code change (an action named merge… or push…, or one approved by a functional_reviewer or security_reviewer) was requested, reviewed, released or blocked in it",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"held", "code changes held for review", spec{kind: record.KindRequest, decision: record.Pending, change: yes}},
			{"signed", "signed reviewer approvals of code changes", spec{kind: record.KindApproval, decision: record.Approve, change: yes, override: no}},
			{"rejected", "signed reviewer rejections of code changes", spec{kind: record.KindApproval, decision: record.Reject, change: yes, override: no}},
			{"self_approval_refused", "approvals refused because the approver is the change's author or the agent (self_approval)", spec{kind: record.KindApproval, decision: record.Refused, reasons: []record.Reason{record.RefuseSelf}, change: yes}},
			{"role_checks", "reviews refused by role checks (wrong role, role already filled, same reviewer twice, unknown approver)", spec{kind: record.KindApproval, decision: record.Refused, reasons: []record.Reason{record.RefuseWrongRole, record.RefuseRoleFilled, record.RefuseDuplicate, record.RefuseUnknown}, change: yes}},
			{"released", "code changes released to the code host after review, each once", spec{kind: record.KindRequest, decision: record.Allow, reasons: []record.Reason{record.Approved, record.Capability}, change: yes}},
			{"blocked", "code changes denied (protected-branch pushes, merges without a pull request, callers not allowed, rejected)", spec{kind: record.KindRequest, decision: record.Deny, change: yes}},
			{"unreviewed", "code changes let through without a review (AUTO_APPROVE); none are expected", spec{kind: record.KindRequest, decision: record.Allow, reasons: []record.Reason{record.AutoApprove}, change: yes}},
			{"override_released", "code changes let through under an approved override (review skipped)", spec{kind: record.KindOverride, decision: record.Allow, change: yes}},
		}},
	{"SOX-802", "SOX", "SOX §802", "Retention and protection of audit records",
		"Audit records are kept for seven years and cannot be altered or destroyed.",
		"Every decision is a SHA-256 hash-chained ledger record, durable before anything is forwarded. Sealed segments go to object storage with Object Lock (mode: the manifest's audit.storage_class), retained until the last record's time plus audit.retention_years, with signed C2SP checkpoints beside them. The denylist keeps the agent from modifying or destroying audit records.",
		"",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"chain", "hash-chained records in this bundle", spec{}},
			{"archive", "segments archived with Object Lock", spec{kind: record.KindArchive}},
			{"checkpoint", "signed checkpoints", spec{kind: record.KindCheckpoint}},
			{"protected", "attempts on denylisted actions (audit_modify, log_delete, record_destroy...), denied", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.Denylisted}}},
			{"config", "configuration records (manifest hash and gateway key in force)", spec{kind: record.KindConfig}},
		}},
	{"ISO27001-A.9", "ISO27001", "ISO 27001 A.9", "Access control",
		"Access to information and systems is limited to what each user or process is authorised for.",
		"Each approved request gets a PASETO v4.public capability token signed by the gateway key, bound to the approval id, action, app and request digest, with an expiry, and spent in the same transaction as the record that uses it. Callers are checked against roles_allowed; unknown apps and unclassified calls are denied.",
		"no capability token was issued, used or refused and no access was denied in it",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"issued", "capability tokens issued", spec{kind: record.KindCapability, decision: record.Issued}},
			{"used", "approved requests let through by their approval or token, once", spec{kind: record.KindRequest, decision: record.Allow, reasons: []record.Reason{record.Approved, record.Capability}}},
			{"token_refused", "token and approval uses refused (forged, replayed, expired, another request)", spec{kind: record.KindRequest, decision: record.Deny, reasons: tokenRefusals}},
			{"access_denied", "access denied (role not allowed, unknown app, unclassified, policy DENY, bad escalation)", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.RoleNotAllowed, record.UnknownApp, record.Unclassified, record.PolicyDeny, record.BadEscalation}}},
		}},
	{"ISO27001-A.12", "ISO27001", "ISO 27001 A.12", "Operations security",
		"Operations are controlled: restricted hours, escalation of high-value operations, prohibited operations blocked, emergency changes approved and logged.",
		"business_hours_only denies actions outside tool_restrictions.time_windows.business_hours; amounts above amount_cap are escalated; the denylist is always denied, overrides included; an override is itself approved by override.roles_required, expires, and each use is an override record.",
		"no business-hours denial, amount escalation, denylist hit, override or oversized body occurred in it",
		[]struct {
			id, desc string
			spec     spec
		}{
			{"business_hours", "denied outside business hours", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.OutsideBusinessHours}}},
			{"escalated", "amount escalations (over cap, unreadable amount, over the cumulative cap, escalation requested)", spec{kind: record.KindRequest, decision: record.Pending, reasons: []record.Reason{record.AmountOverCap, record.AmountUnreadable, record.CumulativeOverCap, record.EscalationRequested}}},
			{"denylisted", "denylist hits", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.Denylisted}}},
			{"override_requested", "overrides requested", spec{kind: record.KindOverride, decision: record.Pending}},
			{"override_decided", "signed decisions on overrides", spec{kind: record.KindApproval, override: yes}},
			{"override_token", "override tokens issued", spec{kind: record.KindOverride, decision: record.Issued}},
			{"override_used", "requests let through by an override", spec{kind: record.KindOverride, decision: record.Allow}},
			{"body_too_large", "request bodies over the limit, refused", spec{kind: record.KindRequest, decision: record.Deny, reasons: []record.Reason{record.BodyTooLarge}}},
		}},
}

// isDual reports whether r's action is DUAL_APPROVAL under r's manifest.
func (b *builder) isDual(r *rec) (bool, error) {
	if r.Action == "" || r.Policy == "" {
		return false, nil
	}
	k := r.Policy + "\x00" + r.Action
	if d, ok := b.dual[k]; ok {
		return d, nil
	}
	pu, err := b.policy(r.Policy)
	if err != nil {
		return false, err
	}
	d := false
	if a, ok := pu.m.Action(r.Action); ok {
		d = a.Policy == rules.DualApproval
	}
	b.dual[k] = d
	if d {
		b.dualNames[r.Action] = true
	}
	return d, nil
}

// Code changes. The manifest language has no field that marks an action as
// a change to code, so the change-management control (SOX-ITGC-CM) takes
// the actions that are one by their name or by who approves them:
//
//   - an action named merge or push, or whose name starts with merge or
//     push followed by _, - or . (merge_payments, push_protected): a merge
//     or push into a branch that others build from;
//   - an action whose approval (roles_required, or its escalation's) needs
//     a role in changeReviewerRoles.
//
// Working on the agent's own branches (branch_create, branch_push, pr_open
// in examples/manifests/ai-coding-sox.json) is not a change to in-scope
// code until it is merged, and is named otherwise.
var (
	changePrefixes      = []string{"merge", "push"}
	changeReviewerRoles = []string{"functional_reviewer", "security_reviewer"}
)

// isChangeAction reports whether a is a code change, as above.
func isChangeAction(a *rules.Action) bool {
	for _, p := range changePrefixes {
		if rest, ok := strings.CutPrefix(a.Name, p); ok && (rest == "" || strings.ContainsRune("_-.", rune(rest[0]))) {
			return true
		}
	}
	roles := slices.Clone(a.RolesRequired)
	if a.Escalation != nil {
		roles = append(roles, a.Escalation.RolesRequired...)
	}
	for _, role := range roles {
		if slices.Contains(changeReviewerRoles, role) {
			return true
		}
	}
	return false
}

// isChange reports whether r's action is a code change under r's manifest.
func (b *builder) isChange(r *rec) (bool, error) {
	if r.Action == "" || r.Policy == "" {
		return false, nil
	}
	k := r.Policy + "\x00" + r.Action
	if c, ok := b.change[k]; ok {
		return c, nil
	}
	pu, err := b.policy(r.Policy)
	if err != nil {
		return false, err
	}
	c := false
	if a, ok := pu.m.Action(r.Action); ok {
		c = isChangeAction(a)
	}
	b.change[k] = c
	if c {
		b.chgNames[r.Action] = true
	}
	return c, nil
}

// changeList is the sorted names of the actions that are code changes in
// the manifests in force, for the jq selectors.
func (b *builder) changeList() []string {
	names := map[string]bool{}
	for n := range b.chgNames {
		names[n] = true
	}
	for _, pu := range b.policies {
		for _, a := range pu.m.Actions {
			if isChangeAction(a) {
				names[a.Name] = true
			}
		}
	}
	return sortedKeys(names)
}

func (b *builder) policy(hash string) (*policyUse, error) {
	if pu := b.policyIdx[hash]; pu != nil {
		return pu, nil
	}
	m, err := b.manifest(hash)
	if err != nil {
		return nil, err
	}
	pu := &policyUse{hash: hash, m: m}
	b.policyIdx[hash] = pu
	b.policies = append(b.policies, pu)
	return pu, nil
}

func (s *spec) match(r *rec, dual, change bool) bool {
	if s.kind != "" && r.Kind != s.kind {
		return false
	}
	if s.decision != record.None && r.Decision != s.decision {
		return false
	}
	if len(s.reasons) > 0 && !slices.Contains(s.reasons, r.Reason) {
		return false
	}
	if s.dual == yes && !dual || s.dual == no && dual {
		return false
	}
	if s.change == yes && !change || s.change == no && change {
		return false
	}
	if s.override != triAny {
		ovr := dataOf[record.Signature](r).ApprovalKind == approvals.KindOverride
		if s.override == yes && !ovr || s.override == no && ovr {
			return false
		}
	}
	return true
}

// jq renders the spec as a jq filter over records.jsonl.
func (s *spec) jq(dualNames, changeNames []string) string {
	var c []string
	if s.kind != "" {
		c = append(c, fmt.Sprintf(".kind==%q", s.kind))
	}
	if s.decision != record.None {
		c = append(c, fmt.Sprintf(".decision==%q", s.decision))
	}
	if len(s.reasons) == 1 {
		c = append(c, fmt.Sprintf(".reason==%q", s.reasons[0]))
	} else if len(s.reasons) > 1 {
		c = append(c, ".reason|IN("+quoteAll(s.reasons)+")")
		c[len(c)-1] = "(" + c[len(c)-1] + ")"
	}
	if s.dual != triAny {
		in := "(.action|IN(" + quoteAll(dualNames) + "))"
		if len(dualNames) == 0 {
			in = "false"
		}
		if s.dual == no {
			in = "(" + in + "|not)"
		}
		c = append(c, in)
	}
	if s.change != triAny {
		in := "(.action|IN(" + quoteAll(changeNames) + "))"
		if len(changeNames) == 0 {
			in = "false"
		}
		if s.change == no {
			in = "(" + in + "|not)"
		}
		c = append(c, in)
	}
	switch s.override {
	case yes:
		c = append(c, fmt.Sprintf(".data.approval_kind==%q", approvals.KindOverride))
	case no:
		c = append(c, fmt.Sprintf(".data.approval_kind!=%q", approvals.KindOverride))
	}
	if len(c) == 0 {
		return "."
	}
	return "select(" + strings.Join(c, " and ") + ")"
}

func quoteAll[S ~string](ss []S) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(string(s))
	}
	return strings.Join(q, ",")
}

// add takes the next record of the range, already checked as part of the
// chain.
func (b *builder) add(r *rec) error {
	if b.records == 0 {
		b.firstTime = r.Time
	}
	b.records++
	b.lastTime = r.Time
	if b.app == "" {
		b.app = r.App
	}
	b.byKind[string(r.Kind)]++
	if r.Policy != "" {
		pu, err := b.policy(r.Policy)
		if err != nil {
			return err
		}
		if pu.count == 0 {
			pu.first = r.Seq
		}
		pu.count++
		pu.last = r.Seq
	}
	dual, err := b.isDual(r)
	if err != nil {
		return err
	}
	change, err := b.isChange(r)
	if err != nil {
		return err
	}
	for _, it := range b.items {
		if it.spec.match(r, dual, change) {
			it.seqs.add(r.Seq)
		}
	}
	if r.Kind == record.KindRequest || r.Kind == record.KindOverride && (r.Decision == record.Allow || r.Decision == record.Deny) {
		act := r.Action
		if act == "" {
			act = "(unclassified)"
		}
		t := b.byAction[act]
		if t == nil {
			t = new([4]uint64)
			b.byAction[act] = t
		}
		switch r.Decision {
		case record.Allow:
			t[0]++
		case record.Deny:
			t[1]++
			b.denials[string(r.Reason)]++
		case record.Pending:
			t[2]++
		default:
			t[3]++
		}
		b.counts["requests"]++
		b.counts["requests_"+string(r.Decision)]++
	}
	b.details(r, dual)
	return nil
}

func (b *builder) details(r *rec, dual bool) {
	if r.Kind == record.KindForward {
		b.counts["forwards"]++
		if r.Reason == record.UpstreamError || r.Reason == record.UpstreamUnavailable || r.Reason == record.UpstreamTimeout {
			b.counts["upstream_errors"]++
		}
		return
	}
	if r.Kind == record.KindRequest && r.ApprovalID == "" {
		return // most records: counted already, no detail row
	}
	switch {
	case r.Kind == record.KindConfig:
		d := dataOf[record.Config](r)
		b.configs.add(seqText(r.Seq), shortTime(r.Time), short(r.Policy), d.ManifestVersion, d.ProxyVersion, keyFingerprint(d.GatewayKey), d.ManifestFile)
	case r.Kind == record.KindArchive:
		d := dataOf[record.Archive](r)
		b.archives.add(seqText(r.Seq), d.Key, fmt.Sprintf("%d-%d", d.First, d.Last), d.ObjectLockMode, d.RetainUntil, d.ChecksumSHA256, d.Store)
	case r.Kind == record.KindCheckpoint:
		d := dataOf[record.Checkpoint](r)
		b.cps.add(seqText(r.Seq), d.Origin, strconv.FormatUint(d.Size, 10), short(d.Hash), d.Key)
	case r.Kind == record.KindOverride:
		b.overrideRecord(r)
	case r.Kind == record.KindApproval && (dataOf[record.Signature](r).ApprovalKind == approvals.KindOverride || b.ovr[r.ApprovalID] != nil):
		b.overrideRecord(r)
	case r.is(record.KindCapability, record.Issued):
		d := dataOf[record.Token](r)
		b.counts["tokens_issued"]++
		b.capTotal++
		if len(b.capOrder) < maxRows {
			c := &capRow{approval: r.ApprovalID, action: r.Action, app: r.App, digest: r.Digest, tokenID: d.TokenID,
				issued: d.IssuedAt, expires: d.ExpiresAt, seq: r.Seq}
			b.caps[r.ApprovalID] = c
			b.capOrder = append(b.capOrder, c)
		}
		if a := b.row(r, dual); a != nil {
			a.outcome = "approved; token issued " + seqText(r.Seq)
		}
	case r.Kind == record.KindApproval:
		b.approvalRecord(r, dual)
	case r.Kind == record.KindRequest && r.ApprovalID != "":
		b.requestRecord(r, dataOf[record.Request](r), dual)
	}
}

func (b *builder) approvalRecord(r *rec, dual bool) {
	a := b.row(r, dual)
	switch r.Decision {
	case record.Approve, record.Reject:
		d := dataOf[record.Signature](r)
		b.counts["signed_"+string(r.Decision)]++
		if a != nil {
			a.decisions = append(a.decisions, decisionText(r, d))
			if r.Decision == record.Reject {
				a.outcome = "rejected " + seqText(r.Seq)
			}
		}
		if r.Decision == record.Reject {
			b.rejections.add(r.ApprovalID, r.Action, d.Approver+" ("+d.Role+")", d.SignedAt, d.Reason, seqText(r.Seq))
		}
	case record.Refused:
		d := dataOf[record.Refusal](r)
		b.counts["decisions_refused"]++
		if a != nil {
			a.refused++
		}
		b.refusals.add(seqText(r.Seq), r.ApprovalID, r.Action, d.Approver, string(r.Reason), d.Detail)
	case record.Expired:
		b.counts["approvals_expired"]++
		if a != nil {
			a.outcome = "expired " + seqText(r.Seq)
		}
	}
}

func (b *builder) requestRecord(r *rec, d *record.Request, dual bool) {
	switch {
	case r.Decision == record.Pending:
		if a := b.row(r, dual); a != nil {
			a.reqSeq, a.reqTime, a.amount, a.onBehalf, a.roles = r.Seq, r.Time, d.Amount, d.OnBehalfOf, d.RequiredRoles
			a.outcome = "pending at the end of the range"
		}
	case r.is(record.KindRequest, record.Allow, record.Approved, record.Capability):
		if a := b.row(r, dual); a != nil {
			a.outcome = "released to the ERP " + seqText(r.Seq)
		}
		if c := b.caps[r.ApprovalID]; c != nil && c.used == 0 {
			c.used = r.Seq
		}
	}
}

// row returns the detail row of r's approval, making it on first sight
// unless its table is full.
func (b *builder) row(r *rec, dual bool) *apprRow {
	if a := b.appr[r.ApprovalID]; a != nil {
		return a
	}
	if r.ApprovalID == "" {
		return nil
	}
	i := 0
	if dual {
		i = 1
	}
	b.apprTotal[i]++
	if len(b.apprOrder[i]) >= maxRows {
		return nil
	}
	change := b.change[r.Policy+"\x00"+r.Action]
	if change {
		b.chgTotal++
	}
	a := &apprRow{id: r.ApprovalID, action: r.Action, dual: dual, change: change, outcome: "pending at the end of the range"}
	b.appr[r.ApprovalID] = a
	b.apprOrder[i] = append(b.apprOrder[i], a)
	if change {
		b.chgOrder = append(b.chgOrder, a)
	}
	return a
}

func (b *builder) overrideRecord(r *rec) {
	o := b.ovr[r.ApprovalID]
	if o == nil && r.ApprovalID != "" {
		b.ovrTotal++
		if len(b.ovrOrder) < maxRows {
			o = &ovrRow{id: r.ApprovalID, action: r.Action, token: "not issued in the range"}
			b.ovr[r.ApprovalID] = o
			b.ovrOrder = append(b.ovrOrder, o)
		}
	}
	if r.Kind == record.KindApproval {
		switch r.Decision {
		case record.Approve, record.Reject:
			b.counts["signed_"+string(r.Decision)]++
			if r.Decision == record.Reject {
				d := dataOf[record.Signature](r)
				b.rejections.add(r.ApprovalID, r.Action+" (override)", d.Approver+" ("+d.Role+")", d.SignedAt, d.Reason, seqText(r.Seq))
			}
		case record.Refused:
			d := dataOf[record.Refusal](r)
			b.counts["decisions_refused"]++
			b.refusals.add(seqText(r.Seq), r.ApprovalID, r.Action+" (override)", d.Approver, string(r.Reason), d.Detail)
		case record.Expired:
			b.counts["approvals_expired"]++
		}
	}
	if o == nil {
		return
	}
	switch {
	case r.is(record.KindOverride, record.Pending):
		d := dataOf[record.OverrideRequest](r)
		o.requestedBy, o.duration, o.justification, o.reqSeq, o.reqTime = d.RequestedBy, d.Duration, d.Justification, r.Seq, r.Time
	case r.is(record.KindOverride, record.Issued):
		o.token = "issued " + seqText(r.Seq) + ", expires " + dataOf[record.Token](r).ExpiresAt
	case r.is(record.KindOverride, record.Allow):
		o.uses.add(r.Seq)
	case r.is(record.KindApproval, record.Approve), r.is(record.KindApproval, record.Reject):
		o.decisions = append(o.decisions, decisionText(r, dataOf[record.Signature](r)))
	case r.is(record.KindApproval, record.Refused):
		o.decisions = append(o.decisions, "refused "+string(r.Reason)+": "+dataOf[record.Refusal](r).Approver+" "+seqText(r.Seq))
	case r.is(record.KindApproval, record.Expired):
		o.token = "expired unapproved " + seqText(r.Seq)
	}
}

// decisionText is one signed decision in the report: who, in which role,
// approved or rejected when (the approvals store's status words), and
// "with a passkey" when it was a WebAuthn assertion.
func decisionText(r *rec, d *record.Signature) string {
	verb := approvals.StatusRejected
	if r.Decision == record.Approve {
		verb = approvals.StatusApproved
	}
	how := ""
	if d.WebAuthn != nil {
		how = " with a passkey"
	}
	return fmt.Sprintf("%s (%s) %s%s %s, %s", d.Approver, d.Role, verb, how, shortTime(d.SignedAt), seqText(r.Seq))
}

func seqText(seq uint64) string { return "#" + strconv.FormatUint(seq, 10) }

// short abbreviates a hex hash for tables; the full value is in the records.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// keyFingerprint is the first 16 hex digits of SHA-256 of a base64 raw key,
// the form the report shows gateway keys in.
func keyFingerprint(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		return ""
	}
	sum := sha256.Sum256(raw)
	return "SHA256:" + hex.EncodeToString(sum[:8])
}

// dualList is the sorted names of the actions under DUAL_APPROVAL in the
// manifests in force: the jq selectors' stand-in for the per-manifest test.
func (b *builder) dualList() []string {
	names := map[string]bool{}
	for n := range b.dualNames {
		names[n] = true
	}
	for _, pu := range b.policies {
		for _, a := range pu.m.Actions {
			if a.Policy == rules.DualApproval {
				names[a.Name] = true
			}
		}
	}
	return sortedKeys(names)
}
