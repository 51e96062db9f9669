package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check warns, and still exits 0, when match rules name no host and
// tool_restrictions.erp_hosts is not set: the forward door would forward
// nothing they classify. The shipped example names its ERP hosts; the seed
// manifest has no match rules at all; neither gets this warning.
func TestCheckWarnsOfRulesWithoutHostAndNoERPHosts(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const warning = "warning: tool_restrictions.erp_hosts: not set, and 2 match rules name no host (the first at actions.je.match[0]): " +
		"on the forward door they classify nothing, and requests to hosts that no match rule names are denied unknown_host; " +
		"list the ERP's host[:port] here (on the sidecar door rules without a host apply to --upstream)"
	actions := `"actions":{"je":{"approval_policy":"AUTO_APPROVE","match":[{"method":"POST","path":"/je"},{"method":"PUT","path":"/je/*"},{"host":"gl.example.com","path":"/gl/**"}]}}`
	tests := []struct {
		name, file string
		warned     bool
	}{
		{"rules without a host, no erp_hosts", write("no-erp-hosts.json", `{"app_id":"x",`+actions+`}`), true},
		{"erp_hosts set", write("erp-hosts.json", `{"app_id":"x",`+actions+`,"tool_restrictions":{"erp_hosts":["erp.example.com:443"]}}`), false},
		{"erp_hosts empty: sidecar only, said so", write("erp-hosts-empty.json", `{"app_id":"x",`+actions+`,"tool_restrictions":{"erp_hosts":[]}}`), false},
		{"the example", soxManifest, false},
		{"the seed", "../../rules/testdata/seed-manifest.json", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := runCLI(t, &out, "check", tt.file); code != 0 {
				t.Fatalf("exit %d: %s", code, out.String())
			}
			got := out.String()
			if !strings.Contains(got, ": ok: app ") {
				t.Errorf("no ok line:\n%s", got)
			}
			if tt.warned != strings.Contains(got, tt.file+": "+warning+"\n") {
				t.Errorf("warned %v, want %v:\n%s", !tt.warned, tt.warned, got)
			}
			if !tt.warned && strings.Contains(got, "erp_hosts") {
				t.Errorf("an erp_hosts finding:\n%s", got)
			}
		})
	}
}

// A bad erp_hosts entry is a problem at its path: exit 1.
func TestCheckRefusesBadERPHosts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.json")
	doc := `{"app_id":"x","actions":{"je":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/je"}]}},` +
		`"tool_restrictions":{"erp_hosts":["https://erp.example.com", "*"]}}`
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := runCLI(t, &out, "check", p); code != 1 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, w := range []string{p + `: tool_restrictions.erp_hosts[0]: bad ERP host "https://erp.example.com": has a scheme`,
		p + `: tool_restrictions.erp_hosts[1]: bad ERP host "*": a wildcard label needs at least two plain labels after it`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}
