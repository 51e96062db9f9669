package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exampleManifest is the shipped example, read where it ships: it must load
// with no warnings whatever its later edits.
const exampleManifest = "../examples/manifests/sox-financial.json"

func mustLoad(t testing.TB, path string) *Manifest {
	t.Helper()
	m, err := LoadManifest(path)
	if err != nil {
		t.Fatalf("LoadManifest(%s): %v", path, err)
	}
	return m
}

func problemPaths(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Path
	}
	return out
}

func TestSeedManifestLoadsWithExpectedWarnings(t *testing.T) {
	data, err := os.ReadFile("testdata/seed-manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatalf("seed manifest must load unchanged: %v", err)
	}
	want := []Problem{
		{"actions.journal_entry.match", "no match rules: no request can be classified as this action"},
		{"actions.journal_entry.amount_cap", "no amount paths: the amount can never be read, so every request is held for escalated approval (amount_unreadable)"},
		{"actions.financial_report.match", "no match rules: no request can be classified as this action"},
		{"actions.account_reconciliation.match", "no match rules: no request can be classified as this action"},
		{"tool_restrictions.denylist[0]", `no action named "audit_modify" is defined, so this entry matches nothing (such requests are unclassified)`},
		{"tool_restrictions.denylist[1]", `no action named "log_delete" is defined, so this entry matches nothing (such requests are unclassified)`},
		{"tool_restrictions.denylist[2]", `no action named "record_destroy" is defined, so this entry matches nothing (such requests are unclassified)`},
	}
	if got := m.Warnings(); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n got %q\nwant %q", got, want)
	}
	sum := sha256.Sum256(data)
	if m.Hash != hex.EncodeToString(sum[:]) || string(m.Raw) != string(data) {
		t.Errorf("Hash/Raw do not describe the input bytes")
	}
	if m.AppID != "financial-ai-assistant" || m.Version != "1.0" || m.DefaultPolicy != DenyPolicy {
		t.Errorf("header: %q %q %q", m.AppID, m.Version, m.DefaultPolicy)
	}
	var names []string
	for _, a := range m.Actions {
		names = append(names, a.Name)
	}
	if want := []string{"journal_entry", "financial_report", "account_reconciliation"}; !reflect.DeepEqual(names, want) {
		t.Errorf("actions %v, want %v (manifest order)", names, want)
	}
	je, _ := m.Action("journal_entry")
	if je.AmountCap == nil || je.AmountCap.RatString() != "1000000" {
		t.Errorf("amount_cap %v", je.AmountCap)
	}
	if got := je.EscalationRequirement(); !reflect.DeepEqual(got, Requirement{Policy: RequireApproval, Slots: [][]string{{"cfo"}}}) {
		t.Errorf("default escalation %+v", got)
	}
	if m.BusinessHours == nil || m.BusinessHours.String() != "09:00-17:00 EST" || m.BusinessHours.Location.String() != "America/New_York" {
		t.Errorf("business hours %v", m.BusinessHours)
	}
	if m.Audit != (Audit{RetentionYears: 7, StorageClass: "COMPLIANCE", Immutable: true}) {
		t.Errorf("audit %+v", m.Audit)
	}
	if !m.Denylisted("audit_modify") || m.Denylisted("journal_entry") {
		t.Errorf("Denylisted")
	}
	if m.Override != nil {
		t.Errorf("override %+v, want nil", m.Override)
	}
}

func TestExampleManifestLoadsWithoutWarnings(t *testing.T) {
	for _, path := range []string{exampleManifest, "testdata/sox-financial.json", "testdata/sox-financial.yaml"} {
		t.Run(filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), func(t *testing.T) {
			m := mustLoad(t, path)
			if w := m.Warnings(); len(w) != 0 {
				t.Errorf("warnings: %q", w)
			}
			if m.Override == nil || m.Override.MaxDuration != 8*time.Hour || !reflect.DeepEqual(m.Override.RolesRequired, []string{"cfo"}) {
				t.Errorf("override %+v", m.Override)
			}
			for _, name := range m.Denylist {
				if a, ok := m.Action(name); !ok || !a.Denylisted {
					t.Errorf("denylisted action %s not marked", name)
				}
			}
		})
	}
}

// The YAML form decodes to the same manifest as the JSON form, key order
// (match order) included.
func TestYAMLMatchesJSON(t *testing.T) {
	j := mustLoad(t, "testdata/sox-financial.json")
	y := mustLoad(t, "testdata/sox-financial.yaml")
	if j.Hash == y.Hash {
		t.Fatal("different inputs, same hash")
	}
	for _, m := range []*Manifest{j, y} {
		m.Hash, m.Raw = "", nil
	}
	jj, _ := json.MarshalIndent(j, "", " ")
	yj, _ := json.MarshalIndent(y, "", " ")
	if string(jj) != string(yj) {
		t.Errorf("JSON and YAML differ:\nJSON %s\nYAML %s", jj, yj)
	}
	// Compiled patterns too, which JSON output does not show.
	for i := range j.Actions {
		if !reflect.DeepEqual(j.Actions[i].Match, y.Actions[i].Match) {
			t.Errorf("action %s: compiled match rules differ", j.Actions[i].Name)
		}
	}
}

func TestInvalidManifests(t *testing.T) {
	tests := []struct {
		file string
		want []string // problem paths, in order
	}{
		{"syntax.json", []string{""}},
		{"no-actions.json", []string{"actions"}},
		{"missing-app-id.yaml", []string{"app_id", "actions"}},
		{"business-hours-no-window.json", []string{"actions.financial_report.business_hours_only"}},
		{"hold-over-ttl.yaml", []string{"actions.journal_entry.hold", "actions.report.hold"}},
		{"duplicate-keys.json", []string{"actions.journal_entry", "app_id"}},
		{"yaml-alias.yaml", []string{"actions.report.roles_required", "roles"}},
		{"bad-window.json", []string{"tool_restrictions.time_windows.business_hours"}},
		{"bad-zone.yaml", []string{"tool_restrictions.time_windows.business_hours", "override.max_duration"}},
		{"escalation.json", []string{
			"actions.journal_entry.escalation.role",
			"actions.journal_entry.escalation.roles_required",
			"actions.payment.escalation.approval_policy",
			"actions.refund.escalation.approval_policy",
		}},
		{"unknown-nested.json", []string{
			"actions.a.match[0].verb",
			"tool_restrictions.time_windows.night",
			"tool_restrictions.allowlist",
			"override.auto",
			"audit.bucket",
		}},
		{"wrong-types.json", []string{
			"app_id",
			"version",
			"actions.a.description",
			"actions.a.amount_cap",
			"actions.a.business_hours_only",
			"actions.a.match",
			"actions.a.amount",
			"actions.a.roles_allowed",
			"actions.b",
			"tool_restrictions.denylist",
			"tool_restrictions.time_windows",
			"tool_restrictions.tunnel_hosts[0]",
			"default_policy",
			"override",
			"audit.retention_years",
			"audit.immutable",
		}},
		// One document with every kind of problem: all are listed.
		{"many-problems.json", []string{
			"app_id",
			"colour",
			"actions.a.approval_policy",
			"actions.a.roles_required[1]",
			"actions.a.roles_required[2]",
			"actions.a.roles_required[3]",
			"actions.a.amount_cap",
			"actions.a.amount[0]",
			"actions.a.amount[1]",
			"actions.a.amount[2]",
			"actions.a.amount[3]",
			"actions.a.amount[4]",
			"actions.a.match[0].method",
			"actions.a.match[0].path",
			"actions.a.match[1].path",
			"actions.a.match[2].path",
			"actions.a.match[3].path",
			"actions.a.match[4].host",
			"actions.a.match[5].path",
			"actions.a.match[6].path",
			"actions.a.match[7].path",
			"actions.a.hold",
			"actions.a.approval_ttl",
			"actions.a.escalation.approval_policy",
			"actions.a.escalation.roles_required",
			"actions.a.business_hours_only",
			"actions.a.descripton",
			"actions.b.roles_required",
			"actions.b.hold",
			"actions.c.roles_required",
			`actions["d d"]`,
			`actions["d d"].approval_policy`,
			"actions.e.roles_allowed",
			"actions.e.approval_policy",
			"tool_restrictions.denylist[0]",
			"tool_restrictions.denylist[2]",
			"tool_restrictions.denylist[3]",
			"tool_restrictions.time_windows.business_hours",
			"tool_restrictions.tunnel_hosts[0]",
			"tool_restrictions.tunnel_hosts[1]",
			"tool_restrictions.tunnel_hosts[3]",
			"default_policy",
			"override.roles_required",
			"override.max_duration",
			"audit.retention_years",
			"audit.storage_class",
			"audit.immutable",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m, err := LoadManifest(filepath.Join("testdata/invalid", tt.file))
			if m != nil || err == nil {
				t.Fatal("invalid manifest loaded")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %T %v, want *ValidationError", err, err)
			}
			if got := problemPaths(ve.Problems); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problem paths:\n got %q\nwant %q\n%v", got, tt.want, err)
			}
			if lines := strings.Split(err.Error(), "\n"); len(lines) != len(ve.Problems) {
				t.Errorf("Error() has %d lines for %d problems", len(lines), len(ve.Problems))
			}
		})
	}
}

// Exact messages for the problems a user meets most, as the check command
// prints them.
func TestProblemMessages(t *testing.T) {
	tests := []struct {
		name, doc string
		want      string // one line of Error()
	}{
		{"unknown key with suggestion", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a"}],"roles_alowed":["x"]}}}`,
			`actions.a.roles_alowed: unknown key "roles_alowed" (did you mean "roles_allowed"?)`},
		{"dual needs two roles", `{"app_id":"x","actions":{"r":{"approval_policy":"DUAL_APPROVAL","roles_required":["cfo","cfo"],"match":[{"path":"/a"}]}}}`,
			"actions.r.roles_required: DUAL_APPROVAL needs at least two distinct roles"},
		{"require needs roles", `{"app_id":"x","actions":{"r":{"approval_policy":"REQUIRE_APPROVAL","match":[{"path":"/a"}]}}}`,
			"actions.r.roles_required: required: REQUIRE_APPROVAL needs at least one role"},
		{"amount cap string", `{"app_id":"x","actions":{"r":{"approval_policy":"AUTO_APPROVE","amount_cap":"1000000","match":[{"path":"/a"}]}}}`,
			"actions.r.amount_cap: must be a number, not string"},
		{"amount cap not finite yaml", "app_id: x\nactions:\n  r: {approval_policy: AUTO_APPROVE, amount_cap: .inf, match: [{path: /a}]}\n",
			"actions.r.amount_cap: .inf is not a finite decimal number within range"},
		{"gjson modifier", `{"app_id":"x","actions":{"r":{"approval_policy":"AUTO_APPROVE","amount":["lines.@reverse.0"],"match":[{"path":"/a"}]}}}`,
			`actions.r.amount[0]: bad amount path "lines.@reverse.0": '@' is not allowed: gjson modifiers and pipes are refused`},
		{"glob", `{"app_id":"x","actions":{"r":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a/x**"}]}}}`,
			`actions.r.match[0].path: bad path pattern "/a/x**": segment "x**": "**" must be a whole segment`},
		{"window order", `{"app_id":"x","actions":{"r":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a"}]}},"tool_restrictions":{"time_windows":{"business_hours":"17:00-09:00 EST"}}}`,
			`tool_restrictions.time_windows.business_hours: bad time window "17:00-09:00 EST": start 17:00 is not before end 09:00 (windows cannot span midnight)`},
		{"odd action name quoted in path", `{"app_id":"x","actions":{"a.b":{"approval_policy":"NOPE","match":[{"path":"/a"}]}}}`,
			`actions["a.b"].approval_policy: unknown approval_policy "NOPE" (AUTO_APPROVE, REQUIRE_APPROVAL, DUAL_APPROVAL or DENY)`},
		{"not an object", `["app_id"]`, "must be an object, not array"},
		{"empty document", "", "empty document"},
		{"trailing data", `{"app_id":"x"} {}`, "invalid JSON at line 1, column 16: unexpected data after the top-level value"},
		{"two yaml documents", "app_id: x\n---\napp_id: y\n", "invalid YAML: more than one document"},
		{"yaml syntax", "app_id: [x\n", "invalid YAML: line 1: did not find expected ',' or ']'"},
		{"yaml merge key", "app_id: x\nbase: &b {approval_policy: AUTO_APPROVE}\nactions:\n  a:\n    <<: *b\n", "actions.a: line 5: merge keys (<<) are not supported"},
		{"yaml binary tag", "app_id: !!binary eA==\n", "app_id: line 1: unsupported YAML tag !!binary"},
		{"json too deep", `{"app_id":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, "invalid JSON at line 1, column 75: document nests too deeply"},
		{"yaml too deep", "app_id: " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "\n", "app_id" + strings.Repeat("[0]", 64) + ": document nests too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(tt.doc))
			if err == nil {
				t.Fatal("no error")
			}
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				if line == tt.want {
					found = true
				}
			}
			if !found {
				t.Errorf("want line %q in:\n%v", tt.want, err)
			}
		})
	}
}

func TestManifestWarnings(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"roles_required unused", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","roles_required":["cfo"],"match":[{"path":"/a"}]}},"tool_restrictions":{"erp_hosts":["erp.example.com"]}}`,
			[]string{"actions.a.roles_required"}},
		{"escalation without cap", `{"app_id":"x","actions":{"a":{"approval_policy":"REQUIRE_APPROVAL","roles_required":["fm"],"escalation":{"approval_policy":"REQUIRE_APPROVAL","roles_required":["cfo"]},"match":[{"path":"/a"}]}},"tool_restrictions":{"erp_hosts":["erp.example.com"]}}`,
			[]string{"actions.a.escalation"}},
		{"escalation weaker than base", `{"app_id":"x","actions":{"a":{"approval_policy":"DUAL_APPROVAL","roles_required":["cfo","controller"],"amount_cap":5,"amount":["amount"],"escalation":{"approval_policy":"REQUIRE_APPROVAL","roles_required":["cfo"]},"match":[{"path":"/a"}]}},"tool_restrictions":{"erp_hosts":["erp.example.com"]}}`,
			[]string{"actions.a.escalation"}},
		{"empty match list", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[]}}}`,
			[]string{"actions.a.match"}},
		{"clean", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a"}]}},"tool_restrictions":{"denylist":["a"],"erp_hosts":["erp.example.com"]}}`,
			nil},
		{"host-less rules without erp_hosts", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"host":"erp.example.com","path":"/h"},{"path":"/a"}]}}}`,
			[]string{"tool_restrictions.erp_hosts"}},
		{"empty erp_hosts: host-less rules for the sidecar door only", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a"}]}},"tool_restrictions":{"erp_hosts":[]}}`,
			nil},
		{"every rule names its host", `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"host":"erp.example.com","path":"/a"}]}}}`,
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := problemPaths(m.Warnings()); !reflect.DeepEqual(got, append([]string{}, tt.want...)) {
				t.Errorf("warnings %q, want %q", m.Warnings(), tt.want)
			}
		})
	}
}

// The erp_hosts warning names the first host-less rule and says what the
// forward door does without erp_hosts.
func TestERPHostsWarning(t *testing.T) {
	tests := []struct{ name, match, want string }{
		{"one rule", `[{"path":"/a"}]`, "tool_restrictions.erp_hosts: not set, and the match rule at actions.a.match[0] names no host: " +
			"on the forward door it classifies nothing, and requests to hosts that no match rule names are denied unknown_host; " +
			"list the ERP's host[:port] here (on the sidecar door rules without a host apply to --upstream)"},
		{"several rules", `[{"host":"erp.example.com","path":"/h"},{"path":"/a"},{"method":"GET","path":"/b"}]`,
			"tool_restrictions.erp_hosts: not set, and 2 match rules name no host (the first at actions.a.match[1]): " +
				"on the forward door they classify nothing, and requests to hosts that no match rule names are denied unknown_host; " +
				"list the ERP's host[:port] here (on the sidecar door rules without a host apply to --upstream)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(`{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":` + tt.match + `}}}`))
			if err != nil {
				t.Fatal(err)
			}
			if w := m.Warnings(); len(w) != 1 || w[0].String() != tt.want {
				t.Errorf("warnings %q\nwant [%q]", w, tt.want)
			}
		})
	}
}

// tool_restrictions.erp_hosts: what is accepted as written, and every
// refusal with its path.
func TestERPHostsParsing(t *testing.T) {
	doc := func(hosts string) string {
		return `{"app_id":"x","actions":{"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/a"}]}},"tool_restrictions":{"erp_hosts":` + hosts + `}}`
	}
	good := []struct{ name, hosts string }{
		{"name", `["erp.example.com"]`},
		{"name and port", `["erp.example.com:8443"]`},
		{"any port, said so", `["erp.example.com:*"]`},
		{"single label", `["localhost:9090"]`},
		{"trailing dot", `["erp.example.com."]`},
		{"wildcards in the leftmost label", `["*.erp.example.com", "gl-?.corp.example"]`},
		{"IP literals", `["10.0.0.5:8080", "[::1]:9090", "[fd00::1]"]`},
		{"empty list", `[]`},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(doc(tt.hosts)))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if err := json.Unmarshal([]byte(tt.hosts), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.ERPHosts, want) {
				t.Errorf("ERPHosts %q, want %q", m.ERPHosts, want)
			}
		})
	}
	const hint = " (want host[:port], e.g. erp.example.com or erp.example.com:8443)"
	bad := []struct{ name, hosts, want string }{
		{"not a list", `"erp.example.com"`, "tool_restrictions.erp_hosts: must be an array of strings, not string"},
		{"not a string", `["erp.example.com", 443]`, "tool_restrictions.erp_hosts[1]: must be a string, not number"},
		{"empty", `[""]`, `tool_restrictions.erp_hosts[0]: bad ERP host "": empty host` + hint},
		{"a URL", `["https://erp.example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "https://erp.example.com": has a scheme; the scheme is the request's` + hint},
		{"a path", `["erp.example.com/api"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp.example.com/api": has a path, fragment or user; name the host alone` + hint},
		{"a user", `["agent@erp.example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "agent@erp.example.com": has a path, fragment or user; name the host alone` + hint},
		{"port 0", `["erp.example.com:0"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp.example.com:0": bad port "0" (1-65535 or *)` + hint},
		{"port out of range", `["erp.example.com:65536"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp.example.com:65536": bad port "65536" (1-65535 or *)` + hint},
		{"empty port", `["erp.example.com:"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp.example.com:": empty port` + hint},
		{"IPv6 without brackets", `["fd00::1"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "fd00::1": IPv6 literals must be in brackets` + hint},
		{"empty label", `["erp..example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp..example.com": empty label in host name` + hint},
		{"space", `["erp example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp example.com": character ' ' not allowed in a host name pattern` + hint},
		{"any host", `["*"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "*": a wildcard label needs at least two plain labels after it (*.erp.example.com, not *.com)` + hint},
		{"any host on a port", `["*:443"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "*:443": a wildcard label needs at least two plain labels after it (*.erp.example.com, not *.com)` + hint},
		{"wildcard under a top-level domain", `["*.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "*.com": a wildcard label needs at least two plain labels after it (*.erp.example.com, not *.com)` + hint},
		{"wildcard not leftmost", `["erp.*.example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "erp.*.example.com": a wildcard is allowed only in the leftmost label` + hint},
		{"two wildcard labels", `["*.*.example.com"]`, `tool_restrictions.erp_hosts[0]: bad ERP host "*.*.example.com": a wildcard is allowed only in the leftmost label` + hint},
		{"duplicate, other spelling", `["erp.example.com", "ERP.example.com."]`, `tool_restrictions.erp_hosts[1]: duplicate entry "ERP.example.com."`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(doc(tt.hosts)))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("accepted, or not a ValidationError: %v", err)
			}
			if len(ve.Problems) != 1 || ve.Problems[0].String() != tt.want {
				t.Errorf("problems:\n%v\nwant\n%s", err, tt.want)
			}
		})
	}
}

// Warnings travel with a ValidationError so that check can print both.
func TestValidationErrorCarriesWarnings(t *testing.T) {
	_, err := ParseManifest([]byte(`{"app_id":"","actions":{"a":{"approval_policy":"AUTO_APPROVE"}}}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatal(err)
	}
	if got := problemPaths(ve.Warnings); !reflect.DeepEqual(got, []string{"actions.a.match"}) {
		t.Errorf("warnings %q", ve.Warnings)
	}
}

func TestManifestValues(t *testing.T) {
	doc := `
app_id: x
actions:
  a:
    approval_policy: AUTO_APPROVE
    amount_cap: 1_000_000.50
    amount: ["amount", 'lines.#.amount', 'odd\.key']
    match: [{method: post, host: "*.Example.com:8443", path: "/A/%62/*"}]
    hold: 90s
  b:
    approval_policy: REQUIRE_APPROVAL
    roles_required: [cfo, controller]
    amount_cap: 0x10
    amount: [amount]
    match: [{method: "*", path: /b}]
tool_restrictions:
  tunnel_hosts: ["*.bank.example:443", "[::1]:8443"]
  time_windows: {business_hours: "08:30-24:00 Europe/London"}
default_policy: RECORD_AND_ALLOW
audit: {retention_years: 10, storage_class: GOVERNANCE, immutable: false}
`
	m, err := ParseManifest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	a, b := m.Actions[0], m.Actions[1]
	if a.AmountCap.FloatString(2) != "1000000.50" || b.AmountCap.RatString() != "16" {
		t.Errorf("caps %v %v", a.AmountCap, b.AmountCap)
	}
	if a.Hold != 90*time.Second || a.ApprovalTTL != DefaultApprovalTTL {
		t.Errorf("hold %v ttl %v", a.Hold, a.ApprovalTTL)
	}
	if a.Match[0].Method != "POST" || b.Match[0].Method != "" {
		t.Errorf("methods %q %q", a.Match[0].Method, b.Match[0].Method)
	}
	if got := b.Requirement(); !reflect.DeepEqual(got, Requirement{Policy: RequireApproval, Slots: [][]string{{"cfo", "controller"}}}) {
		t.Errorf("requirement %+v", got)
	}
	if m.DefaultPolicy != RecordAndAllow || m.Audit != (Audit{10, "GOVERNANCE", false}) {
		t.Errorf("default %v audit %+v", m.DefaultPolicy, m.Audit)
	}
	if w := m.BusinessHours; w.Start != 8*time.Hour+30*time.Minute || w.End != 24*time.Hour || w.Location.String() != "Europe/London" {
		t.Errorf("window %+v", w)
	}
	for _, tt := range []struct {
		target string
		want   bool
	}{
		{"api.bank.example:443", true},
		{"API.Bank.Example.:443", true},
		{"api.bank.example:8443", false},
		{"api.bank.example", false},
		{"bank.example:443", false},
		{"[::1]:8443", true},
		{"[0:0::1]:8443", true},
		{"[::1]:443", false},
		{"evil.example:443", false},
	} {
		if got := m.TunnelAllowed(tt.target); got != tt.want {
			t.Errorf("TunnelAllowed(%q) = %v", tt.target, got)
		}
	}
}

func TestAmountPathSyntax(t *testing.T) {
	good := []string{"amount", "lines.#.amount", "lines.#.debit", "a.b.c", "lines.0.amount", "amo?nt", "amount*", `odd\.key`, "#.amount", "total-amount", "a.#.b.#.c"}
	bad := []string{"", ".amount", "amount.", "a..b", "lines.#", "#", "a|b", "@reverse", "amount.@this", "lines.#(x>1).y", "a#.b", "a.#b", "!true", "[a,b]", "{a}", "a b", `a\`, `a\x`, "..amount", strings.Repeat("a", 257)}
	for _, p := range good {
		if err := checkAmountPath(p); err != nil {
			t.Errorf("checkAmountPath(%q): %v", p, err)
		}
	}
	for _, p := range bad {
		if err := checkAmountPath(p); err == nil {
			t.Errorf("checkAmountPath(%q) accepted", p)
		}
	}
}

// TestOverrideMaxUses: override.max_uses is optional, a whole number from 1
// to MaxOverrideUses.
func TestOverrideMaxUses(t *testing.T) {
	raw, err := os.ReadFile(exampleManifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, section string
		want          int
		problem       bool
	}{
		{"absent", `{"roles_required": ["cfo"], "max_duration": "8h"}`, 0, false},
		{"one", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": 1}`, 1, false},
		{"the most", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": 1000000}`, MaxOverrideUses, false},
		{"zero", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": 0}`, 0, true},
		{"negative", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": -3}`, 0, true},
		{"fraction", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": 2.5}`, 0, true},
		{"too many", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": 1000001}`, 0, true},
		{"a string", `{"roles_required": ["cfo"], "max_duration": "8h", "max_uses": "3"}`, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(raw), `"override": {"roles_required": ["cfo"], "max_duration": "8h"}`, `"override": `+tc.section, 1)
			m, err := ParseManifest([]byte(doc))
			if tc.problem {
				var ve *ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "override.max_uses" {
					t.Fatalf("got %v, want one problem at override.max_uses", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Override.MaxUses != tc.want {
				t.Errorf("max_uses %d, want %d", m.Override.MaxUses, tc.want)
			}
		})
	}
}

func TestParseAmount(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"1000000", "1000000", true},
		{"2500.50", "2500.5", true},
		{"1e6", "1000000", true},
		{"0", "0", true},
		{"-5", "-5", true},
		{"999999999.999999999999", "999999999.999999999999", true},
		{"", "", false},
		{" 5", "", false},
		{"+5", "", false},
		{"05", "", false},
		{"1/3", "", false},
		{"0x10", "", false},
		{"1e999999", "", false},
		{"NaN", "", false},
	} {
		got, ok := ParseAmount(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseAmount(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCumulativeCap(t *testing.T) {
	raw, err := os.ReadFile(exampleManifest)
	if err != nil {
		t.Fatal(err)
	}
	const key = `"amount_cap": 1000000,`
	for _, tc := range []struct {
		name, section string
		amount        string
		window        time.Duration
		problemAt     string
	}{
		{"a day", `{"amount": 1000000, "window": "24h"}`, "1000000", 24 * time.Hour, ""},
		{"exact decimal", `{"amount": 0.1, "window": "1m"}`, "0.1", time.Minute, ""},
		{"31 days", `{"amount": 5e6, "window": "744h"}`, "5000000", 744 * time.Hour, ""},
		{"zero", `{"amount": 0, "window": "24h"}`, "", 0, "actions.journal_entry.cumulative_cap.amount"},
		{"negative", `{"amount": -1, "window": "24h"}`, "", 0, "actions.journal_entry.cumulative_cap.amount"},
		{"a string amount", `{"amount": "1000", "window": "24h"}`, "", 0, "actions.journal_entry.cumulative_cap.amount"},
		{"window too short", `{"amount": 1, "window": "59s"}`, "", 0, "actions.journal_entry.cumulative_cap.window"},
		{"window too long", `{"amount": 1, "window": "745h"}`, "", 0, "actions.journal_entry.cumulative_cap.window"},
		{"not a duration", `{"amount": 1, "window": "1d"}`, "", 0, "actions.journal_entry.cumulative_cap.window"},
		{"no window", `{"amount": 1}`, "", 0, "actions.journal_entry.cumulative_cap.window"},
		{"no amount", `{"window": "1h"}`, "", 0, "actions.journal_entry.cumulative_cap.amount"},
		{"unknown key", `{"amount": 1, "window": "1h", "windw": "2h"}`, "", 0, "actions.journal_entry.cumulative_cap.windw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(raw), key, key+`"cumulative_cap": `+tc.section+",", 1)
			m, err := ParseManifest([]byte(doc))
			if tc.problemAt != "" {
				var ve *ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != tc.problemAt {
					t.Fatalf("got %v, want one problem at %s", err, tc.problemAt)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, _ := m.Action("journal_entry")
			cc := a.CumulativeCap
			if cc == nil || cc.AmountText() != tc.amount || cc.Window != tc.window {
				t.Fatalf("cumulative_cap %+v, want %s over %s", cc, tc.amount, tc.window)
			}
			if want, _ := new(big.Rat).SetString(tc.amount); cc.Amount.Cmp(want) != 0 {
				t.Errorf("amount %s, want %s", cc.Amount.RatString(), tc.amount)
			}
		})
	}
}

func TestCumulativeCapNeedsAmountPaths(t *testing.T) {
	doc := `{"app_id": "a", "version": "1", "actions": {"pay": {"approval_policy": "AUTO_APPROVE",
		"match": [{"method": "POST", "path": "/pay"}], "cumulative_cap": {"amount": 10, "window": "1h"}}}}`
	_, err := ParseManifest([]byte(doc))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Path != "actions.pay.cumulative_cap" {
		t.Fatalf("got %v, want one problem at actions.pay.cumulative_cap", err)
	}
}
