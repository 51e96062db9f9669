package approvals_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"reflect"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// FuzzApply feeds arbitrary submissions to Apply. It must never panic, must
// change nothing when it refuses, and must never count a decision whose
// signature does not verify, with the named approver's key, over this
// approval's statement. The approval needs one cfo or controller, so a
// single accepted approve completes it: the worst case.
//
// The committed corpus (testdata/fuzz/FuzzApply) holds valid signatures by
// the test keys (keyOf), so the fuzzer starts from submissions that pass
// and mutates them; run with
//
//	go test ./approvals/ -run '^$' -fuzz FuzzApply -fuzztime 30s
func FuzzApply(f *testing.F) {
	at := now.Format(time.RFC3339)
	good := signed("cfo@corp.example", approvals.Approve, now)
	f.Add(good.Approver, good.Decision, good.SignedAt, good.Signature, "", good.Reason)
	f.Add(good.Approver, approvals.Reject, good.SignedAt, good.Signature, "", "")
	f.Add("CFO@corp.example", approvals.Approve, at, good.Signature, testDigest, "")
	f.Add(jimDotted, approvals.Approve, at, signed(jimDotted, approvals.Approve, now).Signature, "", "")
	f.Add("controller@corp.example", approvals.Reject, at, signed("controller@corp.example", approvals.Reject, now).Signature, otherDigest, "no")
	f.Add(analyst, approvals.Approve, at, signed(analyst, approvals.Approve, now).Signature, "", "")
	f.Add("", "", "", "", "", "")
	f.Add("keyless@corp.example", "approve", "2026-09-30T14:05:00.999999999Z", "%%%", "\x00", "\n")

	ps := principals(f, cast)
	f.Fuzz(func(t *testing.T, approver, decision, signedAt, signature, digest, reason string) {
		s := approvals.Submission{Approver: approver, Decision: decision, SignedAt: signedAt,
			Signature: signature, Digest: digest, Reason: reason}
		a, before := pending(requireCFOorController), pending(requireCFOorController)
		d, ref := approvals.Apply(a, s, ps, now)
		if ref != nil {
			if d != nil {
				t.Fatalf("refused (%v) and returned a decision", ref)
			}
			if !reflect.DeepEqual(a, before) {
				t.Fatalf("refused (%v), yet the approval changed", ref)
			}
			if ref.Code == "" || ref.HTTPStatus() < 400 {
				t.Fatalf("refusal without a code or with status %d: %v", ref.HTTPStatus(), ref)
			}
			return
		}
		// Counted: it must be a genuine signature by a principal who may decide.
		p, ok := ps.Get(approver)
		if !ok || !p.CanSign() {
			t.Fatalf("counted a decision by %q, who cannot sign", approver)
		}
		if rules.CheckID(approver) != nil || d.Approver != p.ID {
			t.Fatalf("counted a decision by %q, recorded as %q: not the canonical id %q", approver, d.Approver, p.ID)
		}
		sig, err := base64.StdEncoding.DecodeString(signature)
		if err != nil || !ed25519.Verify(p.PublicKey, approvals.Statement(testID, testDigest, decision, approver, signedAt), sig) {
			t.Fatalf("counted a decision whose signature does not verify: %+v", s)
		}
		if !p.HasRole("cfo") && !p.HasRole("controller") {
			t.Fatalf("counted %q, who holds neither role", approver)
		}
		if d == nil || len(a.Decisions) != 1 || *d != a.Decisions[0] {
			t.Fatalf("counted, but decisions are %+v", a.Decisions)
		}
		want := map[string]string{approvals.Approve: approvals.StatusApproved, approvals.Reject: approvals.StatusRejected}[decision]
		if a.Status != want {
			t.Fatalf("%s counted, status %q", decision, a.Status)
		}
		if st, err := time.Parse(time.RFC3339, signedAt); err != nil || st.Sub(now).Abs() > approvals.MaxClockSkew {
			t.Fatalf("counted a decision signed at %q", signedAt)
		}
		if digest != "" && digest != testDigest {
			t.Fatalf("counted a decision that says it reviewed digest %q", digest)
		}
	})
}
