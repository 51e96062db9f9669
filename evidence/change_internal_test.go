package evidence

import (
	"os"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/rules"
)

// TestCodeChangeActions: which actions the change-management control
// (SOX-ITGC-CM) takes as code changes, in the shipped manifests.
func TestCodeChangeActions(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]bool
	}{
		{"../examples/manifests/ai-coding-sox.json", map[string]bool{
			"push_protected": true, "merge_direct": true, "merge_payments": true, "merge": true,
			"protection_change": false, "branch_create": false, "branch_push": false, "pr_open": false, "repo_read": false}},
		{"../examples/manifests/sox-financial.json", map[string]bool{
			"journal_entry": false, "financial_report": false, "account_reconciliation": false, "ledger_read": false,
			"audit_modify": false, "log_delete": false, "record_destroy": false}},
	} {
		raw, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		m, err := rules.ParseManifest(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if len(m.Actions) != len(tc.want) {
			t.Errorf("%s: %d actions, the test knows %d", tc.file, len(m.Actions), len(tc.want))
		}
		for _, a := range m.Actions {
			if got := isChangeAction(a); got != tc.want[a.Name] {
				t.Errorf("%s: %s: code change %t, want %t", tc.file, a.Name, got, tc.want[a.Name])
			}
		}
	}
	for name, want := range map[string]bool{"merge": true, "merge-main": true, "merge.x": true, "push": true, "push_release": true,
		"merger": false, "pushover": false, "branch_push": false, "emerge": false} {
		if got := isChangeAction(&rules.Action{Name: name}); got != want {
			t.Errorf("%s: %t, want %t", name, got, want)
		}
	}
	esc := &rules.Action{Name: "deploy", Escalation: &rules.Escalation{RolesRequired: []string{"security_reviewer"}}}
	if !isChangeAction(esc) || isChangeAction(&rules.Action{Name: "deploy", RolesRequired: []string{"cfo"}}) {
		t.Error("roles: an escalation to a security_reviewer is a code change, a cfo approval is not")
	}
}
