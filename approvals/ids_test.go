package approvals_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// jimDotted is jim's id with U+0130 for the i: strings.ToLower makes it
// jim@corp.example, strings.EqualFold does not match the two.
const jimDotted = "j\u0130m@corp.example"

// TestOnePersonOneID replays the attack: jim, holding cfo and controller,
// signed a DUAL_APPROVAL as jimDotted and as jim, and it went through.
func TestOnePersonOneID(t *testing.T) {
	type step struct {
		who, decision string
		want          record.Reason
		status        string
	}
	cases := []struct {
		name       string
		onBehalfOf string
		steps      []step
	}{
		{"jim as j\u0130m, then as jim, fills one slot", analyst, []step{
			{jimDotted, approvals.Approve, approvals.RefuseUnknown, approvals.StatusPending},
			{jim, approvals.Approve, "", approvals.StatusPending},
			{"controller@corp.example", approvals.Approve, "", approvals.StatusApproved}, // jim counts for cfo
		}},
		{"jim, then as j\u0130m, fills one slot", analyst, []step{
			{jim, approvals.Approve, "", approvals.StatusPending},
			{jimDotted, approvals.Approve, approvals.RefuseUnknown, approvals.StatusPending},
		}},
		{"jim as JIM, then as jim, fills one slot", analyst, []step{
			{"JIM@corp.example", approvals.Approve, approvals.RefuseUnknown, approvals.StatusPending},
			{jim, approvals.Approve, "", approvals.StatusPending},
		}},
		// On-Behalf-Of j\u0130m let jim approve his own request. Now no one
		// may approve a request asked for by an id that is not canonical
		// even in ASCII lower case; a rejection still ends it.
		{"On-Behalf-Of j\u0130m: jim may not approve", jimDotted, []step{
			{jim, approvals.Approve, approvals.RefuseSelf, approvals.StatusPending},
		}},
		{"On-Behalf-Of j\u0130m: nobody may approve, a rejection counts", jimDotted, []step{
			{"cfo@corp.example", approvals.Approve, approvals.RefuseSelf, approvals.StatusPending},
			{"controller@corp.example", approvals.Approve, approvals.RefuseSelf, approvals.StatusPending},
			{"controller@corp.example", approvals.Reject, "", approvals.StatusRejected},
		}},
		// An identity provider's email claim in mixed case is the same
		// person in ASCII lower case: jim may not approve, others may.
		{"On-Behalf-Of Jim@Corp.Example: jim may not approve, others may", "Jim@Corp.Example", []step{
			{jim, approvals.Approve, approvals.RefuseSelf, approvals.StatusPending},
			{"cfo@corp.example", approvals.Approve, "", approvals.StatusPending},
			{"controller@corp.example", approvals.Approve, "", approvals.StatusApproved},
		}},
	}
	ps := principals(t, cast)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := pending(dualCFOController)
			a.OnBehalfOf = c.onBehalfOf
			at := now
			for i, s := range c.steps {
				at = at.Add(time.Second)
				_, ref := approvals.Apply(a, signed(s.who, s.decision, at), ps, at)
				var got record.Reason
				if ref != nil {
					got = ref.Code
				}
				if got != s.want || a.Status != s.status {
					t.Fatalf("step %d (%q %s): refusal %q (%v), status %s; want %q, %s", i, s.who, s.decision, got, ref, a.Status, s.want, s.status)
				}
			}
			for _, d := range a.Decisions {
				if rules.CheckID(d.Approver) != nil {
					t.Errorf("decision recorded for non-canonical id %q", d.Approver)
				}
			}
			if a.Status == approvals.StatusApproved {
				assertDistinctSlots(t, a)
			}
		})
	}
}

// TestAllZeroKeyForgery: the all-zero Ed25519 public key (a point of order
// 4) let anybody approve: the signature 01 00..00 || 32 zero bytes (R the
// identity, S = 0) verifies with it for one statement in four, and the
// attacker picks signed_at until it does. Such a key no longer loads.
func TestAllZeroKeyForgery(t *testing.T) {
	const mallory = "mallory@corp.example"
	zero := make(ed25519.PublicKey, ed25519.PublicKeySize)
	forged := make([]byte, ed25519.SignatureSize)
	forged[0] = 1

	// The forgery is real: some signed_at within the clock window verifies.
	var sub approvals.Submission
	for ns := 0; ns < 1000 && sub.Signature == ""; ns++ {
		at := now.Add(time.Duration(ns)).Format(time.RFC3339Nano)
		if ed25519.Verify(zero, approvals.Statement(testID, testDigest, approvals.Approve, mallory, at), forged) {
			sub = approvals.Submission{Approver: mallory, Decision: approvals.Approve, SignedAt: at,
				Signature: base64.StdEncoding.EncodeToString(forged)}
		}
	}
	if sub.Signature == "" {
		t.Fatal("no signed_at made the forged signature verify; the test shows nothing")
	}

	der, err := x509.MarshalPKIXPublicKey(zero)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		ID        string   `json:"id"`
		Roles     []string `json:"roles"`
		PublicKey string   `json:"public_key"`
	}
	doc, _ := json.Marshal(map[string][]entry{"principals": {
		{ID: mallory, Roles: []string{"cfo"}, PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))},
	}})
	ps, err := rules.ParsePrincipals(doc, t.TempDir())
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		// The old parser took the key; show what it let through.
		a := pending(requireCFO)
		_, ref := approvals.Apply(a, sub, ps, now)
		t.Fatalf("principals file with the all-zero key loaded (err %v); forged approval: refusal %v, status %s", err, ref, a.Status)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Path != "principals[0].public_key" ||
		!strings.Contains(ve.Problems[0].Message, mallory) || !strings.Contains(ve.Problems[0].Message, "small-order") {
		t.Errorf("problems %v: want one at principals[0].public_key naming %s and saying small-order", ve.Problems, mallory)
	}

	// Without that entry mallory is nobody, and the forgery counts for nothing.
	a := pending(requireCFO)
	if _, ref := approvals.Apply(a, sub, principals(t, cast), now); ref == nil || ref.Code != approvals.RefuseUnknown || a.Status != approvals.StatusPending {
		t.Errorf("forged approval: refusal %v, status %s; want %s and pending", ref, a.Status, approvals.RefuseUnknown)
	}
}
