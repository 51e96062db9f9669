package approvals_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// signedAs is signed with every statement field given by hand: the key of
// keyFrom signs (id, digest, decision, approver, signedAt), and the
// submission carries approver, decision and signedAt as given.
func signedAs(keyFrom, id, digest, decision, approver, signedAt string) approvals.Submission {
	return approvals.Submission{
		Approver:  approver,
		Decision:  decision,
		Reason:    "reviewed the support",
		SignedAt:  signedAt,
		Signature: approvals.Sign(keyOf(keyFrom), id, digest, decision, approver, signedAt),
	}
}

func with(s approvals.Submission, f func(*approvals.Submission)) approvals.Submission {
	f(&s)
	return s
}

// validSig is a real 64-byte signature, for submissions that must get past
// the signature-shape check to reach a later rule.
func validSig() string { return signed("cfo@corp.example", approvals.Approve, now).Signature }

func TestApplyRefusals(t *testing.T) {
	const cfo = "cfo@corp.example"
	at := now.Format(time.RFC3339)
	approvedBy := func(req rules.Requirement, decisions ...approvals.Decision) func() *approvals.Approval {
		return func() *approvals.Approval {
			a := pending(req)
			a.Decisions = decisions
			return a
		}
	}
	cfoApproved := approvals.Decision{Approver: cfo, Role: "cfo", Decision: approvals.Approve, SignedAt: at, Signature: validSig(), Record: 9}
	sig := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

	cases := []struct {
		name          string
		approval      func() *approvals.Approval // default: pending DUAL_APPROVAL {cfo},{controller}
		sub           approvals.Submission
		nilPrincipals bool
		want          record.Reason
		wantStatus    int
	}{
		// bad_request: the submission is not a decision at all.
		{name: "decision neither approve nor reject", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Decision = "maybe" }), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "decision in upper case", sub: signedAs(cfo, testID, testDigest, "Approve", cfo, at), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "decision empty", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Decision = "" }), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "approver missing", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Approver = "" }), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at missing", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.SignedAt = "" }), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signature missing", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Signature = "" }), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at with a space for T", sub: signedAs(cfo, testID, testDigest, approvals.Approve, cfo, "2026-09-30 14:05:00Z"), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at as +00:00, not Z", sub: signedAs(cfo, testID, testDigest, approvals.Approve, cfo, "2026-09-30T14:05:00+00:00"), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at in New York time", sub: signedAs(cfo, testID, testDigest, approvals.Approve, cfo, "2026-09-30T10:05:00-04:00"), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at a date only", sub: signedAs(cfo, testID, testDigest, approvals.Approve, cfo, "2026-09-30"), want: approvals.RefuseBadRequest, wantStatus: 400},
		{name: "signed_at as unix seconds", sub: signedAs(cfo, testID, testDigest, approvals.Approve, cfo, "1790773500"), want: approvals.RefuseBadRequest, wantStatus: 400},

		// approval_expired: the effective status counts, not the stored one.
		{name: "expired at exactly now", approval: func() *approvals.Approval { a := pending(dualCFOController); a.ExpiresAt = now; return a }, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseExpired, wantStatus: 409},
		{name: "expired a nanosecond ago", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.ExpiresAt = now.Add(-time.Nanosecond)
			return a
		}, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseExpired, wantStatus: 409},
		{name: "stored as expired", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.Status = approvals.StatusExpired
			return a
		}, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseExpired, wantStatus: 409},

		// approval_closed.
		{name: "already approved", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Status, a.Decisions = approvals.StatusApproved, []approvals.Decision{cfoApproved}
			return a
		}, sub: signed("cfo2@corp.example", approvals.Approve, now), want: approvals.RefuseClosed, wantStatus: 409},
		{name: "already rejected", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.Status = approvals.StatusRejected
			a.Decisions = []approvals.Decision{{Approver: cfo, Role: "cfo", Decision: approvals.Reject, SignedAt: at, Signature: validSig()}}
			return a
		}, sub: signed("controller@corp.example", approvals.Approve, now), want: approvals.RefuseClosed, wantStatus: 409},
		{name: "approved and consumed", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Status, a.Decisions, a.Consumed = approvals.StatusApproved, []approvals.Decision{cfoApproved}, 12
			return a
		}, sub: signed("cfo2@corp.example", approvals.Reject, now), want: approvals.RefuseClosed, wantStatus: 409},
		{name: "approved, past its expiry", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Status, a.Decisions, a.ExpiresAt = approvals.StatusApproved, []approvals.Decision{cfoApproved}, now.Add(-time.Minute)
			return a
		}, sub: signed("cfo2@corp.example", approvals.Approve, now), want: approvals.RefuseClosed, wantStatus: 409},

		// unknown_approver.
		{name: "not in the principals file", sub: signed("stranger@corp.example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "in the file without a public key", sub: signed("keyless@corp.example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "no principals file", sub: signed(cfo, approvals.Approve, now), nilPrincipals: true, want: approvals.RefuseUnknown, wantStatus: 403},

		// bad_signature: the shape of the signature.
		{name: "signature not base64", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Signature = "%%%" }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signature 63 bytes", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Signature = sig(63) }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signature 65 bytes", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Signature = sig(65) }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signature hex, not base64", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) {
			raw, _ := base64.StdEncoding.DecodeString(s.Signature)
			s.Signature = strings.Repeat("ab", len(raw)) // 128 hex digits decode as base64 to 96 bytes
		}), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signature base64 without padding", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) {
			raw, _ := base64.StdEncoding.DecodeString(s.Signature)
			s.Signature = base64.RawStdEncoding.EncodeToString(raw)
		}), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signature all zero", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Signature = sig(64) }), want: approvals.RefuseBadSignature, wantStatus: 403},
		// bad_signature: another key, or a statement that is not this one.
		{name: "signed with another approver's key", sub: signedAs("cfo2@corp.example", testID, testDigest, approvals.Approve, cfo, at), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed for another approval", sub: signedAs(cfo, otherID, testDigest, approvals.Approve, cfo, at), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed over another digest, digest not given", sub: signedAs(cfo, testID, otherDigest, approvals.Approve, cfo, at), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed over another digest, this digest claimed", sub: with(signedAs(cfo, testID, otherDigest, approvals.Approve, cfo, at), func(s *approvals.Submission) { s.Digest = testDigest }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed reject, submitted approve", sub: with(signed(cfo, approvals.Reject, now), func(s *approvals.Submission) { s.Decision = approvals.Approve }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed approve, submitted reject", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Decision = approvals.Reject }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "statement names another approver", sub: signedAs(cfo, testID, testDigest, approvals.Approve, "cfo2@corp.example", at), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "submitted as another approver", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Approver = "cfo2@corp.example" }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed_at moved a second after signing", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.SignedAt = now.Add(time.Second).Format(time.RFC3339) }), want: approvals.RefuseBadSignature, wantStatus: 403},
		{name: "signed_at respelled with fractional zeros", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.SignedAt = now.Format("2006-01-02T15:04:05.000Z") }), want: approvals.RefuseBadSignature, wantStatus: 403},

		// digest_mismatch: the approver says which request they reviewed.
		{name: "signed over another request's digest", sub: with(signedAs(cfo, testID, otherDigest, approvals.Approve, cfo, at), func(s *approvals.Submission) { s.Digest = otherDigest }), want: approvals.RefuseDigest, wantStatus: 403},

		// stale_signature: more than MaxClockSkew either way. Exactly
		// MaxClockSkew is allowed (TestApplyAccepts).
		{name: "signed 5m1s before the proxy's clock", sub: signed(cfo, approvals.Approve, now.Add(-approvals.MaxClockSkew-time.Second)), want: approvals.RefuseStale, wantStatus: 403},
		{name: "signed 5m1s after the proxy's clock", sub: signed(cfo, approvals.Approve, now.Add(approvals.MaxClockSkew+time.Second)), want: approvals.RefuseStale, wantStatus: 403},
		{name: "signed 5m and 1ns before", sub: signed(cfo, approvals.Approve, now.Add(-approvals.MaxClockSkew-time.Nanosecond)), want: approvals.RefuseStale, wantStatus: 403},
		{name: "signed 5m and 1ns after", sub: signed(cfo, approvals.Approve, now.Add(approvals.MaxClockSkew+time.Nanosecond)), want: approvals.RefuseStale, wantStatus: 403},
		{name: "signed a day ago", sub: signed(cfo, approvals.Approve, now.Add(-24*time.Hour)), want: approvals.RefuseStale, wantStatus: 403},

		// unknown_approver: an approver id not in canonical form is nobody,
		// whoever's key signed it.
		{name: "the On-Behalf-Of caller, id in another case", sub: signed("Analyst@Corp.Example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "the requesting app, id in another case", sub: signed("Finance-Agent", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "the override's requester, id in another case", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Kind, a.RequestedBy, a.OnBehalfOf, a.Duration = approvals.KindOverride, "ops-lead@corp.example", "", "4h"
			return a
		}, sub: signed("OPS-LEAD@corp.example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "approver id with dotted capital I, signed with jim's key", sub: signed("j\u0130m@corp.example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "approver id with Kelvin sign", sub: signed("\u212Aeyless@corp.example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		{name: "approver id with a trailing space", sub: signed("jim@corp.example ", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},

		// self_approval: the requester's ids are compared in ASCII lower case.
		{name: "the On-Behalf-Of caller", sub: signed(analyst, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the On-Behalf-Of caller, recorded in another case", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.OnBehalfOf = "ANALYST@CORP.EXAMPLE"
			return a
		}, sub: signed(analyst, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the requesting app", sub: signed(agentApp, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the requesting app, recorded in another case", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.App = "Finance-Agent" // app_id may have upper case; the principal is finance-agent
			return a
		}, sub: signed(agentApp, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the requesting app rejecting its own request", sub: signed(agentApp, approvals.Reject, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the override's requester", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Kind, a.RequestedBy, a.OnBehalfOf, a.Duration = approvals.KindOverride, "ops-lead@corp.example", "", "4h"
			return a
		}, sub: signed("ops-lead@corp.example", approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "the override's requester, recorded in another case", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Kind, a.RequestedBy, a.OnBehalfOf, a.Duration = approvals.KindOverride, "OPS-LEAD@corp.example", "", "4h"
			return a
		}, sub: signed("ops-lead@corp.example", approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		// The attack: On-Behalf-Of j\u0130m@... let jim approve his own request.
		// No canonical id equals it, and jim cannot be shown not to be it:
		// nobody may approve such a request.
		{name: "On-Behalf-Of with dotted capital I, jim approving", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.OnBehalfOf = "j\u0130m@corp.example"
			return a
		}, sub: signed(jim, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "On-Behalf-Of with dotted capital I, anyone approving", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.OnBehalfOf = "j\u0130m@corp.example"
			return a
		}, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "On-Behalf-Of with a space, anyone approving", approval: func() *approvals.Approval {
			a := pending(dualCFOController)
			a.OnBehalfOf = "Jim @corp.example"
			return a
		}, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},
		{name: "override requested by a non-canonical id", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Kind, a.RequestedBy, a.OnBehalfOf, a.Duration = approvals.KindOverride, "\u212Aim@corp.example", "", "4h"
			return a
		}, sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseSelf, wantStatus: 403},

		// duplicate_approver: one person counts once.
		{name: "same approver again", approval: approvedBy(dualCFOController, cfoApproved), sub: signed(cfo, approvals.Approve, now), want: approvals.RefuseDuplicate, wantStatus: 409},
		{name: "same approver again, id in another case", approval: approvedBy(dualCFOController, cfoApproved), sub: signed("CFO@Corp.Example", approvals.Approve, now), want: approvals.RefuseUnknown, wantStatus: 403},
		// Decisions recorded before ids had to be canonical still count as
		// the person ToLower made them.
		{name: "same approver again, recorded in another case", approval: approvedBy(dualCFOController,
			approvals.Decision{Approver: "BOTH@corp.example", Role: "cfo", Decision: approvals.Approve, SignedAt: at, Signature: validSig()}),
			sub: signed("both@corp.example", approvals.Approve, now), want: approvals.RefuseDuplicate, wantStatus: 409},
		{name: "jim again, recorded as j\u0130m", approval: approvedBy(dualCFOController,
			approvals.Decision{Approver: "j\u0130m@corp.example", Role: "cfo", Decision: approvals.Approve, SignedAt: at, Signature: validSig()}),
			sub: signed(jim, approvals.Approve, now), want: approvals.RefuseDuplicate, wantStatus: 409},
		{name: "same approver now rejecting", approval: approvedBy(dualCFOController, cfoApproved), sub: signed(cfo, approvals.Reject, now), want: approvals.RefuseDuplicate, wantStatus: 409},
		{name: "same person holding the other role too", approval: approvedBy(dualCFOController,
			approvals.Decision{Approver: "both@corp.example", Role: "cfo", Decision: approvals.Approve, SignedAt: at, Signature: validSig()}),
			sub: signed("both@corp.example", approvals.Approve, now), want: approvals.RefuseDuplicate, wantStatus: 409},

		// wrong_role.
		{name: "approver holds no needed role", sub: signed("clerk@corp.example", approvals.Approve, now), want: approvals.RefuseWrongRole, wantStatus: 403},
		{name: "approver holds a role of another action", sub: signed("fm@corp.example", approvals.Approve, now), want: approvals.RefuseWrongRole, wantStatus: 403},
		{name: "rejection by a holder of no needed role", sub: signed("clerk@corp.example", approvals.Reject, now), want: approvals.RefuseWrongRole, wantStatus: 403},
		{name: "controller on a cfo-only approval", approval: func() *approvals.Approval { return pending(requireCFO) }, sub: signed("controller@corp.example", approvals.Approve, now), want: approvals.RefuseWrongRole, wantStatus: 403},

		// role_filled.
		{name: "second cfo on a dual cfo+controller approval", approval: approvedBy(dualCFOController, cfoApproved), sub: signed("cfo2@corp.example", approvals.Approve, now), want: approvals.RefuseRoleFilled, wantStatus: 403},
	}

	ps := principals(t, cast)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			build := c.approval
			if build == nil {
				build = func() *approvals.Approval { return pending(dualCFOController) }
			}
			a, want := build(), build()
			p := ps
			if c.nilPrincipals {
				p = nil
			}
			d, ref := approvals.Apply(a, c.sub, p, now)
			if ref == nil {
				t.Fatalf("Apply accepted the decision (%+v); want refusal %s", d, c.want)
			}
			if ref.Code != c.want {
				t.Fatalf("refusal %q (%s), want %q", ref.Code, ref.Detail, c.want)
			}
			if d != nil {
				t.Errorf("refused, yet returned decision %+v", d)
			}
			if ref.Detail == "" || ref.Error() != string(ref.Code)+": "+ref.Detail {
				t.Errorf("Error() = %q: want code, colon, non-empty detail", ref.Error())
			}
			if got := ref.HTTPStatus(); got != c.wantStatus {
				t.Errorf("HTTPStatus = %d, want %d", got, c.wantStatus)
			}
			if !reflect.DeepEqual(a, want) {
				t.Errorf("a refused decision changed the approval:\n got %+v\nwant %+v", a, want)
			}
		})
	}
}

func TestApplyAccepts(t *testing.T) {
	const cfo = "cfo@corp.example"
	cases := []struct {
		name       string
		approval   func() *approvals.Approval // default: pending REQUIRE_APPROVAL {cfo}
		sub        approvals.Submission
		wantRole   string
		wantStatus string
	}{
		{name: "signed now", sub: signed(cfo, approvals.Approve, now), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "signed exactly 5m before the proxy's clock", sub: signed(cfo, approvals.Approve, now.Add(-approvals.MaxClockSkew)), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "signed exactly 5m after the proxy's clock", sub: signed(cfo, approvals.Approve, now.Add(approvals.MaxClockSkew)), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "signed 4m59.999999999s before, fractional seconds", sub: signed(cfo, approvals.Approve, now.Add(-approvals.MaxClockSkew+time.Nanosecond)), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "a nanosecond before expiry", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.ExpiresAt = now.Add(time.Nanosecond)
			return a
		}, sub: signed(cfo, approvals.Approve, now), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "digest given and equal", sub: with(signed(cfo, approvals.Approve, now), func(s *approvals.Submission) { s.Digest = testDigest }), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "rejection", sub: signed(cfo, approvals.Reject, now), wantRole: "cfo", wantStatus: approvals.StatusRejected},
		{name: "override approved by someone other than its requester", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.Kind, a.RequestedBy, a.OnBehalfOf, a.Duration = approvals.KindOverride, "ops-lead@corp.example", "", "4h"
			return a
		}, sub: signed(cfo, approvals.Approve, now), wantRole: "cfo", wantStatus: approvals.StatusApproved},
		{name: "no On-Behalf-Of caller", approval: func() *approvals.Approval {
			a := pending(requireCFO)
			a.OnBehalfOf = ""
			return a
		}, sub: signed(cfo, approvals.Approve, now), wantRole: "cfo", wantStatus: approvals.StatusApproved},
	}
	ps := principals(t, cast)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			build := c.approval
			if build == nil {
				build = func() *approvals.Approval { return pending(requireCFO) }
			}
			a := build()
			d, ref := approvals.Apply(a, c.sub, ps, now)
			if ref != nil {
				t.Fatalf("refused: %v", ref)
			}
			want := approvals.Decision{Approver: cfo, Role: c.wantRole, Decision: c.sub.Decision,
				Reason: c.sub.Reason, SignedAt: c.sub.SignedAt, Signature: c.sub.Signature}
			if *d != want {
				t.Errorf("decision %+v\nwant %+v", *d, want)
			}
			if len(a.Decisions) != 1 || &a.Decisions[0] != d {
				t.Errorf("Apply must return a pointer to the decision it appended; decisions %+v", a.Decisions)
			}
			if a.Status != c.wantStatus {
				t.Errorf("status %q, want %q", a.Status, c.wantStatus)
			}
		})
	}
}

// TestStoredDecisionVerifies checks what an auditor does with an approval
// (docs/reference.md#approval-statement-and-rules, #evidence-bundle): rebuild each statement from the stored approval and
// decision alone and verify the stored signature with the approver's key.
// An approver id in another case is refused, so every stored approver id
// is the principals file's.
func TestStoredDecisionVerifies(t *testing.T) {
	ps := principals(t, cast)
	for _, spelled := range []string{"cfo@corp.example", "CFO@corp.example", "Cfo@Corp.Example"} {
		t.Run(spelled, func(t *testing.T) {
			a := pending(requireCFO)
			_, ref := approvals.Apply(a, signed(spelled, approvals.Approve, now), ps, now)
			if spelled != "cfo@corp.example" {
				if ref == nil || ref.Code != approvals.RefuseUnknown {
					t.Fatalf("%q: refusal %v, want %s", spelled, ref, approvals.RefuseUnknown)
				}
				return
			}
			if ref != nil {
				t.Fatalf("refused: %v", ref)
			}
			d := a.Decisions[0]
			p, ok := ps.Get(d.Approver)
			if !ok {
				t.Fatalf("stored approver %q is not in the principals file", d.Approver)
			}
			sig, err := base64.StdEncoding.DecodeString(d.Signature)
			if err != nil {
				t.Fatal(err)
			}
			if !ed25519.Verify(p.PublicKey, approvals.Statement(a.ID, a.Digest, d.Decision, d.Approver, d.SignedAt), sig) {
				t.Errorf("stored decision %+v does not verify over the statement rebuilt from it", d)
			}
		})
	}
}

func TestRefusalHTTPStatus(t *testing.T) {
	want := map[record.Reason]int{
		approvals.RefuseBadRequest:   400,
		approvals.RefuseExpired:      409,
		approvals.RefuseClosed:       409,
		approvals.RefuseDuplicate:    409,
		approvals.RefuseUnknown:      403,
		approvals.RefuseBadSignature: 403,
		approvals.RefuseDigest:       403,
		approvals.RefuseStale:        403,
		approvals.RefuseSelf:         403,
		approvals.RefuseWrongRole:    403,
		approvals.RefuseRoleFilled:   403,
	}
	for code, status := range want {
		if got := (&approvals.Refusal{Code: code}).HTTPStatus(); got != status {
			t.Errorf("%s: HTTPStatus %d, want %d", code, got, status)
		}
	}
}
