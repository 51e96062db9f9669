package evidence

import (
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// TestOverrideDigestBothForms: the bundle verifier's own override digest
// gives the known answers of both forms (approvals/override_test.go has
// the shell commands), and a bundle's override whose bounds were changed
// after signing no longer matches its digest.
func TestOverrideDigestBothForms(t *testing.T) {
	const app, action, dur, by, just = "financial-ai-assistant", "journal_entry", "4h0m0s", "ops-lead@corp.example", "Q4 close"
	for _, tc := range []struct {
		maxAmount string
		maxUses   int
		want      string
	}{
		{"", 0, "4ed5d38627fcbe1bd2537bbf3e10d440d7486e365c4c791dbfbba4d683ca75c8"},
		{"5000000", 3, "423c2f0245bd40a5ea38297f0d87e55a49df7f4d9d5e0cf3a0f5601251147ba2"},
		{"", 3, "78a006a050c496198c83f693539716e42a02764923d9548c5307f9a6eda30326"},
	} {
		if got := overrideDigest(app, action, dur, by, just, tc.maxAmount, tc.maxUses); got != tc.want {
			t.Errorf("bounds %q, %d: %s, want %s", tc.maxAmount, tc.maxUses, got, tc.want)
		}
	}

	entry := func(maxAmount string, maxUses int) *ApprovalEntry {
		return &ApprovalEntry{ID: "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa", Kind: approvals.KindOverride, App: app, Action: action,
			Duration: dur, RequestedBy: by, Justification: just, MaxAmount: maxAmount, MaxUses: maxUses,
			Digest: approvals.OverrideDigest(app, action, dur, by, just, "5000000", 3)}
	}
	v := &bundleVerifier{}
	if p := v.checkApproval(entry("5000000", 3)); p != nil {
		t.Errorf("the override as signed: %v", p)
	}
	for _, changed := range []*ApprovalEntry{entry("50000000", 3), entry("5000000", 30), entry("", 0)} {
		if p := v.checkApproval(changed); p == nil || p.Code != ProblemApprovalMismatch {
			t.Errorf("bounds %q, %d under the digest of 5000000, 3: %v", changed.MaxAmount, changed.MaxUses, p)
		}
	}
}
