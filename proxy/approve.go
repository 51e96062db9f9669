package proxy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// errConflict means the approval changed between the preview of a decision
// and its transaction; the decision is re-evaluated.
var errConflict = errors.New("approval changed concurrently")

// DecideApproval records an approver's signed decision (CONTRACT §4). It
// returns the approval as it stands after, or the refusal, which is recorded
// too. When the decision completes an approval, a single-use capability
// token (or, for an override, the override token) is issued and recorded,
// and requests held on it are woken.
func (g *Gate) DecideApproval(id string, s approvals.Submission) (*approvals.Approval, *approvals.Refusal, error) {
	if !approvals.ValidID(id) {
		return nil, nil, approvals.ErrNotFound
	}
	principals := g.engine.Load().Principals()
	for attempt := 0; ; attempt++ {
		a, err := g.approvals.Get(id)
		if err != nil {
			return nil, nil, err
		}
		now := g.now()
		preview := *a
		preview.Decisions = append([]approvals.Decision(nil), a.Decisions...)
		d, ref := approvals.Apply(&preview, s, principals, now)
		if ref != nil {
			return a, ref, g.recordRefusal(a, s, ref)
		}
		if preview.Status == approvals.StatusApproved {
			g.issue(&preview, now)
		}
		entry := ledger.Entry{
			Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
			Decision: record.Decision(s.Decision), Reason: "signed", Policy: g.engine.Load().Manifest().Hash,
			Data: map[string]any{
				"approver": d.Approver, "role": d.Role, "signed_at": s.SignedAt, "signature": s.Signature,
				"reason": clip(s.Reason, maxJustification), "status": preview.Status, "approval_kind": a.Kind,
				"statement_sha256": sha256Hex(approvals.Statement(a.ID, a.Digest, s.Decision, s.Approver, s.SignedAt)),
			},
			Tx: func(tx *bolt.Tx, rec *ledger.Record) error {
				cur, err := approvals.GetTx(tx, id)
				if err != nil {
					return err
				}
				d2, ref2 := approvals.Apply(cur, s, principals, now)
				if ref2 != nil || cur.Status != preview.Status || d2.Role != d.Role {
					return errConflict
				}
				d2.Record = rec.Seq
				cur.Token, cur.TokenID, cur.TokenExp, cur.Completed = preview.Token, preview.TokenID, preview.TokenExp, preview.Completed
				return approvals.Put(tx, cur)
			},
		}
		rec, err := g.append(entry)
		if errors.Is(err, errConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		g.log.Info().Str("approval_id", id).Str("approver", d.Approver).Str("role", d.Role).
			Str("decision", s.Decision).Str("status", preview.Status).Uint64("seq", rec.Seq).Msg("approval decision")
		if preview.Status == approvals.StatusApproved {
			g.recordToken(&preview)
		}
		if preview.Status != approvals.StatusPending {
			g.obs.ApprovalCompleted(a.Action, preview.Status, now.Sub(a.CreatedAt))
			g.hub.notify(id)
		}
		after, err := g.approvals.Get(id)
		return after, nil, err
	}
}

// issue signs the token an approved approval grants.
func (g *Gate) issue(a *approvals.Approval, now time.Time) {
	c := &tokens.Claims{Kind: tokens.KindCapability, ApprovalID: a.ID, Action: a.Action, App: a.App,
		Digest: a.Digest, IssuedAt: now, Expires: a.ExpiresAt}
	if a.Kind == approvals.KindOverride {
		d, _ := time.ParseDuration(a.Duration) // checked when the override was requested
		c = &tokens.Claims{Kind: tokens.KindOverride, ApprovalID: a.ID, Action: a.Action, App: a.App,
			IssuedAt: now, Expires: now.Add(d)}
	}
	a.Token = g.tokens.Issue(c)
	a.TokenID, a.TokenExp, a.Completed = c.ID, c.Expires.UTC(), now.UTC()
}

// recordToken writes the capability record of an issued token. The token
// itself is a bearer secret and stays out of the ledger; its id, hash and
// binding go in.
func (g *Gate) recordToken(a *approvals.Approval) {
	kind, reason := record.KindCapability, tokens.KindCapability
	if a.Kind == approvals.KindOverride {
		kind, reason = record.KindOverride, "override_token_issued"
	}
	_, err := g.append(ledger.Entry{
		Kind: kind, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: "issued", Reason: record.Reason(reason), Policy: g.engine.Load().Manifest().Hash,
		Data: map[string]any{
			"token_id": a.TokenID, "token_sha256": sha256Hex([]byte(a.Token)),
			"expires_at": a.TokenExp.Format(time.RFC3339), "issued_at": a.Completed.Format(time.RFC3339),
		},
	})
	if err != nil {
		g.log.Error().Err(err).Str("approval_id", a.ID).Msg("token issued but its record was not written")
	}
}

// recordRefusal writes a refused decision: who tried, what and why.
func (g *Gate) recordRefusal(a *approvals.Approval, s approvals.Submission, ref *approvals.Refusal) error {
	_, err := g.append(ledger.Entry{
		Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: "refused", Reason: record.Reason(ref.Code), Policy: g.engine.Load().Manifest().Hash,
		Data: map[string]any{"approver": clip(s.Approver, 256), "decision_requested": clip(s.Decision, 256),
			"signed_at": clip(s.SignedAt, 256), "detail": ref.Detail},
	})
	g.log.Warn().Str("approval_id", a.ID).Str("approver", clip(s.Approver, 256)).Str("reason", ref.Code).
		Str("detail", ref.Detail).Msg("approval decision refused")
	return err
}

// clip keeps junk from a client valid UTF-8 and at most max bytes (plus an
// ellipsis) before it is recorded.
func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// ExpireDue marks pending approvals past their expiry as expired, one
// ledger record each, and wakes whatever waits on them.
func (g *Gate) ExpireDue() (int, error) {
	now := g.now()
	list, err := g.approvals.Due(now)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range list {
		id := a.ID
		_, err := g.append(ledger.Entry{
			Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: id, Digest: a.Digest,
			Decision: "expired", Reason: "ttl_elapsed", Policy: g.engine.Load().Manifest().Hash,
			Data: map[string]any{"expires_at": a.ExpiresAt.Format(time.RFC3339), "decisions": len(a.Decisions)},
			Tx: func(tx *bolt.Tx, _ *ledger.Record) error {
				cur, err := approvals.GetTx(tx, id)
				if err != nil {
					return err
				}
				if cur.Status != approvals.StatusPending {
					return errConflict
				}
				cur.Status = approvals.StatusExpired
				return approvals.Put(tx, cur)
			},
		})
		if errors.Is(err, errConflict) {
			continue // decided meanwhile
		}
		if err != nil {
			return n, err
		}
		n++
		g.hub.notify(id)
	}
	return n, nil
}

// OverrideRequest asks for an emergency override (CONTRACT §1, §3).
type OverrideRequest struct {
	Action        string `json:"action"`
	Duration      string `json:"duration"`
	Justification string `json:"justification"`
	RequestedBy   string `json:"requested_by"`
}

// BadRequestError is an invalid request from a client; its message says why.
type BadRequestError struct{ Problems []string }

func (e *BadRequestError) Error() string { return strings.Join(e.Problems, "; ") }

// OverrideDigest is what override approvers sign in place of a request
// digest: hex SHA-256 of "uapk-override-v1\nAPP\nACTION\nDURATION\nREQUESTED_BY\n"
// followed by hex(SHA-256(justification)).
func OverrideDigest(app, action, duration, requestedBy, justification string) string {
	j := sha256.Sum256([]byte(justification))
	return sha256Hex([]byte(fmt.Sprintf("uapk-override-v1\n%s\n%s\n%s\n%s\n%x", app, action, duration, requestedBy, j)))
}

// RequestOverride records an override request as an approval that needs the
// manifest's override.roles_required. It never covers a denylisted action.
func (g *Gate) RequestOverride(r OverrideRequest) (*approvals.Approval, error) {
	r.Action, r.Duration = clip(r.Action, maxHeaderValue), clip(r.Duration, 64)
	r.Justification, r.RequestedBy = clip(r.Justification, maxJustification), clip(r.RequestedBy, maxHeaderValue)
	m := g.engine.Load().Manifest()
	var problems []string
	act, ok := m.Action(r.Action)
	switch {
	case m.Override == nil:
		problems = append(problems, "the manifest has no override section: overrides are off")
	case r.Action == "":
		problems = append(problems, "action is required")
	case !ok:
		problems = append(problems, fmt.Sprintf("action %q is not in the manifest", r.Action))
	case m.Denylisted(r.Action) || act.Policy == rules.DenyPolicy:
		problems = append(problems, fmt.Sprintf("action %q is denied by the manifest; no override can allow it", r.Action))
	}
	d, err := time.ParseDuration(r.Duration)
	switch {
	case err != nil || d <= 0:
		problems = append(problems, fmt.Sprintf("duration %q must be a positive duration such as 4h", r.Duration))
	case m.Override != nil && d > m.Override.MaxDuration:
		problems = append(problems, fmt.Sprintf("duration %s is longer than override.max_duration %s", d, m.Override.MaxDuration))
	}
	if strings.TrimSpace(r.Justification) == "" {
		problems = append(problems, "justification is required")
	}
	if strings.TrimSpace(r.RequestedBy) == "" {
		problems = append(problems, "requested_by is required")
	}
	if len(problems) > 0 {
		return nil, &BadRequestError{Problems: problems}
	}
	now := g.now()
	slots := make([][]string, 0, len(m.Override.RolesRequired))
	for _, role := range m.Override.RolesRequired {
		slots = append(slots, []string{role})
	}
	a := &approvals.Approval{
		ID: approvals.NewID(), Kind: approvals.KindOverride, Status: approvals.StatusPending,
		Action: r.Action, App: m.AppID, Justification: r.Justification, RequestedBy: r.RequestedBy,
		Duration: d.String(), Digest: OverrideDigest(m.AppID, r.Action, d.String(), r.RequestedBy, r.Justification),
		Reason: "override_requested", Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: slots},
		RequiredRoles: append([]string(nil), m.Override.RolesRequired...), Decisions: []approvals.Decision{},
		CreatedAt: now.UTC(), ExpiresAt: now.Add(act.ApprovalTTL).UTC(),
	}
	_, err = g.append(ledger.Entry{
		Kind: record.KindOverride, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: "pending", Reason: "override_requested", Policy: m.Hash,
		Data: map[string]any{"requested_by": r.RequestedBy, "duration": a.Duration,
			"justification": r.Justification, "required_roles": toAny(a.RequiredRoles),
			"expires_at": a.ExpiresAt.Format(time.RFC3339)},
		Tx: func(tx *bolt.Tx, rec *ledger.Record) error {
			a.RequestRecord = rec.Seq
			return approvals.Put(tx, a)
		},
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}
