package rules

import (
	"errors"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	// Monday 2026-03-09 10:00 EDT: inside business hours.
	monday = time.Date(2026, 3, 9, 14, 0, 0, 0, time.UTC)
	// Saturday 2026-03-07 10:00 EST.
	saturday = time.Date(2026, 3, 7, 15, 0, 0, 0, time.UTC)
)

func loadEngine(t testing.TB, manifest string) *Engine {
	t.Helper()
	p, err := LoadPrincipals("testdata/principals/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(mustLoad(t, manifest), p)
}

func TestClassify(t *testing.T) {
	e := loadEngine(t, "testdata/classify.json")
	tests := []struct {
		name                       string
		method, scheme, host, path string
		query                      string
		want                       string // action, "" unclassified
		ambiguous                  bool
		agent                      bool // the agent chose the host (forward door)
		unknown                    bool // ErrUnknownHost
	}{
		{name: "first match wins over a later **", method: "POST", path: "/api/v1/journal-entries/42/approve", want: "je_approve"},
		{name: "** matches zero segments", method: "POST", path: "/api/v1/journal-entries", want: "je_write"},
		{name: "** matches many segments", method: "POST", path: "/api/v1/journal-entries/42/lines/3", want: "je_write"},
		{name: "manifest method is case-insensitive", method: "PUT", path: "/api/v1/journal-entries/42", want: "je_write"},
		{name: "* is exactly one segment", method: "PUT", path: "/api/v1/journal-entries/42/x", want: ""},
		{name: "* does not match zero segments", method: "PUT", path: "/api/v1/journal-entries", want: ""},
		{name: "* before **", method: "GET", path: "/api/v1/journal-entries/42", want: "je_read_one"},
		{name: "** after * fails", method: "GET", path: "/api/v1/journal-entries/42/lines", want: "je_read_any"},
		{name: "** with nothing after", method: "GET", path: "/api/v1/journal-entries", want: "je_read_any"},
		{name: "query is ignored", method: "GET", path: "/api/v1/journal-entries/42", query: "expand=lines&x=/..", want: "je_read_one"},
		{name: "request method case-insensitive", method: "get", path: "/api/v1/journal-entries/42", want: "je_read_one"},
		{name: "path case-insensitive", method: "GET", path: "/API/V1/Journal-Entries/42", want: "je_read_one"},
		{name: "unreserved escapes decoded", method: "GET", path: "/api/v1/%6Aournal-entries/42", want: "je_read_one"},
		{name: "other escapes kept", method: "GET", path: "/api/v1/journal-entries/a%20b", want: "je_read_one"},
		{name: "trailing slash dropped", method: "GET", path: "/api/v1/journal-entries/42/", want: "je_read_one"},
		{name: "trailing slash on the base", method: "GET", path: "/api/v1/journal-entries/", want: "je_read_any"},
		{name: "method not listed", method: "PATCH", path: "/api/v1/journal-entries/42", want: ""},
		{name: "encoded slash", method: "GET", path: "/api/v1/journal-entries/a%2Fb", ambiguous: true},
		{name: "encoded backslash", method: "GET", path: "/api/v1/journal-entries/a%5cb", ambiguous: true},
		{name: "dot dot", method: "GET", path: "/api/v1/journal-entries/../x", ambiguous: true},
		{name: "encoded dot dot", method: "GET", path: "/api/v1/journal-entries/%2e%2E/x", ambiguous: true},
		{name: "dot", method: "GET", path: "/api/./v1/journal-entries/1", ambiguous: true},
		{name: "empty segment", method: "GET", path: "/api/v1//journal-entries/1", ambiguous: true},
		{name: "double trailing slash", method: "GET", path: "/api/v1/journal-entries//", ambiguous: true},
		{name: "path parameter", method: "GET", path: "/api/v1/journal-entries;x=1/1", ambiguous: true},
		{name: "backslash", method: "GET", path: `/api\v1`, ambiguous: true},
		{name: "bad escape", method: "GET", path: "/a%zz", ambiguous: true},
		{name: "short escape", method: "GET", path: "/a%4", ambiguous: true},
		{name: "NUL", method: "GET", path: "/a%00", ambiguous: true},
		{name: "raw space", method: "GET", path: "/a b", ambiguous: true},
		{name: "empty", method: "GET", path: "", ambiguous: true},
		{name: "asterisk form", method: "OPTIONS", path: "*", ambiguous: true},
		{name: "root", method: "OPTIONS", path: "/", want: "root"},
		{name: "/** matches root", method: "DELETE", path: "/", want: "any_delete"},
		{name: "/** matches deep", method: "DELETE", path: "/x/y/z", want: "any_delete"},
		{name: "glob inside a segment", method: "GET", path: "/files/report-2026.csv", want: "seg_glob"},
		{name: "glob inside a segment, no match", method: "GET", path: "/files/summary.csv", want: ""},
		{name: "host without port matches any port", host: "erp.example.com:8080", path: "/hosted/x", want: "erp_host"},
		{name: "host case and trailing dot", host: "ERP.Example.COM.", path: "/hosted/x", want: "erp_host"},
		{name: "other host", host: "erp.example.org", path: "/hosted/x", want: ""},
		{name: "no host", path: "/hosted/x", want: ""},
		{name: "host with port, same port", host: "erp.example.com:8443", path: "/ported/a", want: "erp_port"},
		{name: "host with port, default port", scheme: "https", host: "erp.example.com", path: "/ported/a", want: ""},
		{name: "host with port, other port", host: "erp.example.com:443", path: "/ported/a", want: ""},
		{name: "https default port 443", scheme: "https", host: "erp.example.com", path: "/tls", want: "tls_port"},
		{name: "http default port 80", scheme: "http", host: "erp.example.com", path: "/tls", want: ""},
		{name: "explicit 443 over http", scheme: "http", host: "erp.example.com:443", path: "/tls", want: "tls_port"},
		{name: "wildcard label", host: "eu.erp.example.com", path: "/wild", want: "wild_host"},
		{name: "wildcard needs a label", host: "erp.example.com", path: "/wild", want: ""},
		{name: "wildcard is one label", host: "a.b.erp.example.com", path: "/wild", want: ""},
		{name: "IPv6 literal", host: "[::1]:9000", path: "/ip", want: "ip_host"},
		{name: "IPv4 with port", host: "10.0.0.5:8080", path: "/ip", want: "ip_host"},
		{name: "IPv4 other port", host: "10.0.0.5:8081", path: "/ip", want: ""},
		// The manifest has no erp_hosts: on the forward door, only its rules
		// with a host classify, and only the hosts they name are known.
		{name: "forward: a rule's host", agent: true, host: "erp.example.com", path: "/hosted/x", want: "erp_host"},
		{name: "forward: rules without a host do not apply", agent: true, method: "POST", host: "erp.example.com", path: "/api/v1/journal-entries", want: ""},
		{name: "forward: a wildcard rule names a host", agent: true, host: "eu.erp.example.com", path: "/api/v1/journal-entries/1", want: ""},
		{name: "forward: an IP a rule names", agent: true, host: "[0:0::1]:9000", path: "/ip", want: "ip_host"},
		{name: "forward: a host no rule names", agent: true, host: "erp.example.org", path: "/hosted/x", unknown: true},
		{name: "forward: a rule's host on another port", agent: true, scheme: "http", host: "erp.example.com", path: "/tls", want: ""},
		{name: "forward: a port no rule names for that IP", agent: true, host: "10.0.0.5:8081", path: "/ip", unknown: true},
		{name: "forward: no host", agent: true, path: "/hosted/x", unknown: true},
		{name: "forward: unknown host before the path", agent: true, host: "evil.example", path: "/a/../b", unknown: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r := &Request{Method: method, Scheme: tt.scheme, Host: tt.host, Path: tt.path, RawQuery: tt.query, AgentChosenHost: tt.agent}
			a, err := e.Classify(r)
			if tt.unknown {
				if !errors.Is(err, ErrUnknownHost) {
					t.Fatalf("Classify: %v, %v; want ErrUnknownHost", a, err)
				}
				return
			}
			if tt.ambiguous {
				if !errors.Is(err, ErrAmbiguousPath) {
					t.Fatalf("Classify: %v, %v; want ErrAmbiguousPath", a, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if a != nil {
				got = a.Name
			}
			if got != tt.want {
				t.Errorf("classified as %q, want %q", got, tt.want)
			}
		})
	}
}

func req(method, path, body string) *Request {
	return &Request{Method: method, Scheme: "https", Host: "erp.example.com", Path: path, Body: []byte(body), Time: monday}
}

func TestDecide(t *testing.T) {
	sox := loadEngine(t, "testdata/sox-financial.json")
	dec := loadEngine(t, "testdata/decide.yaml")
	require := func(roles ...string) Requirement {
		return Requirement{Policy: RequireApproval, Slots: [][]string{roles}}
	}
	dual := Requirement{Policy: DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
	with := func(r *Request, f func(*Request)) *Request { f(r); return r }

	// fwd is the forward door: the agent names the host.
	fwd := func(host string, r *Request) *Request { r.Host, r.AgentChosenHost = host, true; return r }
	unknownHost := Decision{Outcome: Deny, Reason: ReasonUnknownHost}

	tests := []struct {
		name string
		e    *Engine
		r    *Request
		want Decision // Detail is only checked to be non-empty; Hold/ApprovalTTL default 0/24h for classified requests
	}{
		// 1. the host, when the agent chose it
		{"attack: a journal entry to a host the agent chose", sox, fwd("ledger-sink.example", req("POST", "/api/v1/journal-entries", `{"amount": 250000}`)),
			unknownHost},
		{"the same journal entry to a host in erp_hosts", sox, fwd("127.0.0.1:9090", req("POST", "/api/v1/journal-entries", `{"amount": 250000}`)),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "journal_entry", Requirement: require("finance_manager"), Amount: "250000"}},
		{"erp_hosts port is the request's", sox, fwd("127.0.0.1:9091", req("GET", "/api/v1/accounts/1010/balance", "")),
			unknownHost},
		{"erp_hosts with the scheme's default port", sox, fwd("erp.internal.example.com", req("GET", "/api/v1/accounts/1010/balance", "")),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "ledger_read"}},
		{"unknown host whatever default_policy says", dec, fwd("evil.example", req("GET", "/nothing/here", "")),
			unknownHost},
		{"unknown host before the path is judged", dec, fwd("evil.example", req("POST", "/recon/../purge", "")),
			unknownHost},
		{"no host at all", dec, fwd("", req("POST", "/je", `{"amount": 5}`)),
			unknownHost},
		{"a rule's host with another port is unknown", dec, fwd("gl.example.com", req("GET", "/gl/2026/03", "")),
			unknownHost},
		{"a host a rule names: its rule applies", dec, fwd("GL.example.com:8443", req("GET", "/gl/2026/03", "")),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "gl_read"}},
		{"a host only a rule names: rules without a host do not apply", dec, fwd("gl.example.com:8443", req("POST", "/frozen", "")),
			Decision{Outcome: Allow, Reason: ReasonRecordAndAllow}},
		{"an erp_hosts host: rules with a host for another do not apply", dec, fwd("erp.example.com", req("GET", "/gl/2026/03", "")),
			Decision{Outcome: Allow, Reason: ReasonRecordAndAllow}},
		{"an erp_hosts host is decided as on the sidecar", dec, fwd("erp.example.com", req("POST", "/frozen", "")),
			Decision{Outcome: Deny, Reason: ReasonPolicyDeny, Action: "frozen"}},
		{"sidecar: rules without a host apply to its upstream whatever the Host", dec, with(req("POST", "/frozen", ""), func(r *Request) { r.Host = "evil.example" }),
			Decision{Outcome: Deny, Reason: ReasonPolicyDeny, Action: "frozen"}},
		// 2. classification
		{"unclassified, default DENY", sox, req("GET", "/api/v2/anything", ""),
			Decision{Outcome: Deny, Reason: ReasonUnclassified}},
		{"unclassified, RECORD_AND_ALLOW", dec, req("GET", "/nothing/here", ""),
			Decision{Outcome: Allow, Reason: ReasonRecordAndAllow}},
		{"ambiguous path is denied even with RECORD_AND_ALLOW", dec, req("POST", "/recon/../purge", ""),
			Decision{Outcome: Deny, Reason: ReasonUnclassified}},
		{"escalation header ignored when unclassified", dec, with(req("GET", "/nothing", ""), func(r *Request) { r.Escalation = "cfo" }),
			Decision{Outcome: Allow, Reason: ReasonRecordAndAllow}},
		// 3. denylist, before everything but the host
		{"denylisted", dec, req("POST", "/purge", ""),
			Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "purge"}},
		{"denylisted outside hours is still denylisted", dec, with(req("POST", "/purge", ""), func(r *Request) { r.Time = saturday }),
			Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "purge"}},
		{"denylisted DENY action", sox, req("DELETE", "/api/v1/records/2026/7", ""),
			Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "record_destroy"}},
		{"denylisted audit log edit", sox, req("PATCH", "/api/v1/audit-log/991", `{"note":"x"}`),
			Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "audit_modify"}},
		// 4. approval_policy DENY
		{"policy deny", dec, req("POST", "/frozen", ""),
			Decision{Outcome: Deny, Reason: ReasonPolicyDeny, Action: "frozen"}},
		// 5. business hours
		{"outside business hours", dec, with(req("POST", "/reports/q1", ""), func(r *Request) { r.Time = saturday }),
			Decision{Outcome: Deny, Reason: ReasonOutsideBusinessHours, Action: "report"}},
		{"no request time", dec, with(req("POST", "/reports/q1", ""), func(r *Request) { r.Time = time.Time{} }),
			Decision{Outcome: Deny, Reason: ReasonOutsideBusinessHours, Action: "report"}},
		{"inside business hours: dual approval", dec, req("POST", "/reports/q1", ""),
			Decision{Outcome: Pending, Reason: ReasonDualApproval, Action: "report", Requirement: dual}},
		// 6. roles_allowed
		{"no caller", dec, req("GET", "/recon/1", ""),
			Decision{Outcome: Deny, Reason: ReasonRoleNotAllowed, Action: "recon"}},
		{"unknown caller", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.OnBehalfOf = "mallory@corp.example" }),
			Decision{Outcome: Deny, Reason: ReasonRoleNotAllowed, Action: "recon"}},
		{"caller lacks role", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.OnBehalfOf = "cfo@corp.example" }),
			Decision{Outcome: Deny, Reason: ReasonRoleNotAllowed, Action: "recon"}},
		{"caller holds role", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.OnBehalfOf = "staff@corp.example" }),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "recon"}},
		{"caller holds the second role", dec, with(req("GET", "/recon", ""), func(r *Request) { r.OnBehalfOf = "fm@corp.example" }),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "recon"}},
		// A caller id not in canonical form is nobody's, not fm's in another case.
		{"caller id in upper case is not a principal", dec, with(req("GET", "/recon", ""), func(r *Request) { r.OnBehalfOf = "FM@Corp.Example" }),
			Decision{Outcome: Deny, Reason: ReasonRoleNotAllowed, Action: "recon"}},
		{"role check before escalation check", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.Escalation = "CFO" }),
			Decision{Outcome: Deny, Reason: ReasonRoleNotAllowed, Action: "recon"}},
		// 7. escalation header syntax
		{"bad escalation upper case", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.OnBehalfOf = "staff@corp.example"; r.Escalation = "CFO" }),
			Decision{Outcome: Deny, Reason: ReasonBadEscalation, Action: "recon"}},
		{"bad escalation space", dec, with(req("POST", "/je", `{"amount":1}`), func(r *Request) { r.Escalation = "cfo controller" }),
			Decision{Outcome: Deny, Reason: ReasonBadEscalation, Action: "journal_entry", Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"bad escalation too long", dec, with(req("POST", "/multi", ""), func(r *Request) { r.Escalation = strings.Repeat("a", 65) }),
			Decision{Outcome: Deny, Reason: ReasonBadEscalation, Action: "multi"}},
		// 8. one canonical body
		{"ambiguous JSON body", dec, with(req("POST", "/je", `{"amount":1,"AMOUNT":2000000}`), func(r *Request) { r.ContentType = "application/json" }),
			Decision{Outcome: Deny, Reason: ReasonAmbiguousBody, Action: "journal_entry", Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"ambiguous JSON body, RECORD_AND_ALLOW", dec, with(req("PUT", "/nothing", `{"a":1,"a":2}`), func(r *Request) { r.ContentType = "application/json" }),
			Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{"ambiguous JSON body, escalation header changes nothing", dec, with(req("POST", "/multi", `[1,]`), func(r *Request) {
			r.ContentType = "application/merge-patch+json"
			r.Escalation = "cfo"
		}), Decision{Outcome: Deny, Reason: ReasonAmbiguousBody, Action: "multi"}},
		// 9. amount
		{"amount under cap", dec, req("POST", "/je", `{"amount": 5}`),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "journal_entry", Requirement: require("finance_manager"), Amount: "5", Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount exactly at cap is not over", dec, req("POST", "/je", `{"amount": 1000000.00}`),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "journal_entry", Requirement: require("finance_manager"), Amount: "1000000", Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount over cap escalates", dec, req("POST", "/je", `{"amount": "1200000.00"}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Requirement: dual, Amount: "1200000", Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount over cap by a hair", dec, req("POST", "/je", `{"amount": 1000000.0000000000000000001}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Requirement: dual, Amount: "1000000.0000000000000000001", Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"negative amount over cap", dec, req("POST", "/je", `{"credit": -1000001}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Requirement: dual, Amount: "1000001", Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"largest line over cap", dec, req("POST", "/je", `{"lines":[{"debit":10},{"credit":"2000000"},{"amount":3}]}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Requirement: dual, Amount: "2000000", Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount unreadable: not JSON", dec, req("POST", "/je", `amount=2000000`),
			Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry", Requirement: dual, Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount unreadable: absent", dec, req("POST", "/je", `{"memo":"x"}`),
			Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry", Requirement: dual, Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"amount unreadable: duplicate key", dec, req("POST", "/je", `{"amount": 5, "amount": 2000000}`),
			Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry", Requirement: dual, Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"auto-approve under cap", dec, req("POST", "/pay", `{"amount": 250.50}`),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "payment", Amount: "250.5"}},
		{"auto-approve over cap: default escalation to cfo", dec, req("POST", "/pay", `{"amount": 250.51}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "payment", Requirement: require("cfo"), Amount: "250.51", Escalated: true}},
		{"auto-approve unreadable: default escalation to cfo", dec, req("POST", "/pay", `{"amount": "250 USD"}`),
			Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "payment", Requirement: require("cfo"), Escalated: true}},
		{"cap without paths is always unreadable", dec, req("POST", "/capped", `{"amount": 1}`),
			Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "capped_no_paths", Requirement: require("cfo"), Escalated: true}},
		{"amount recorded without cap", dec, req("POST", "/refund", `{"amount": 12.30}`),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "refund", Amount: "12.3"}},
		{"unreadable amount without cap is fine", dec, req("POST", "/refund", `<xml/>`),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "refund"}},
		{"sox journal entry over cap", sox, req("POST", "/api/v1/journal-entries", `{"lines":[{"debit":1200000},{"credit":1200000}]}`),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Requirement: dual, Amount: "1200000", Escalated: true}},
		// 10. base policy
		{"require approval, two roles, one slot", dec, req("POST", "/multi", ""),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "multi", Requirement: require("cfo", "controller")}},
		{"auto approve", sox, req("GET", "/api/v1/accounts/1000/balance", ""),
			Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "ledger_read"}},
		// 11. escalation header
		{"escalation makes auto-approve pending", dec, with(req("GET", "/recon/1", ""), func(r *Request) { r.OnBehalfOf = "staff@corp.example"; r.Escalation = "auditor" }),
			Decision{Outcome: Pending, Reason: ReasonEscalationRequested, Action: "recon", Requirement: require("auditor"), Escalated: true}},
		{"escalation adds a slot", dec, with(req("POST", "/je", `{"amount": 5}`), func(r *Request) { r.Escalation = "cfo" }),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "journal_entry",
				Requirement: Requirement{Policy: RequireApproval, Slots: [][]string{{"finance_manager"}, {"cfo"}}},
				Amount:      "5", Escalated: true, Hold: 30 * time.Second, ApprovalTTL: 2 * time.Hour}},
		{"escalation to a role already alone in a slot adds nothing", dec, with(req("POST", "/reports/q1", ""), func(r *Request) { r.Escalation = "controller" }),
			Decision{Outcome: Pending, Reason: ReasonDualApproval, Action: "report", Requirement: dual}},
		{"escalation to a role shared in a slot adds a slot", dec, with(req("POST", "/multi", ""), func(r *Request) { r.Escalation = "cfo" }),
			Decision{Outcome: Pending, Reason: ReasonApprovalRequired, Action: "multi",
				Requirement: Requirement{Policy: RequireApproval, Slots: [][]string{{"cfo", "controller"}, {"cfo"}}}, Escalated: true}},
		{"escalation over cap", dec, with(req("POST", "/pay", `{"amount": 1000}`), func(r *Request) { r.Escalation = "treasurer" }),
			Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "payment",
				Requirement: Requirement{Policy: RequireApproval, Slots: [][]string{{"cfo"}, {"treasurer"}}}, Amount: "1000", Escalated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.e.Decide(tt.r)
			if got.Detail == "" {
				t.Error("empty Detail")
			}
			want := tt.want
			if want.Action != "" && want.ApprovalTTL == 0 {
				want.ApprovalTTL = DefaultApprovalTTL
			}
			got.Detail = ""
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// Every reason code is produced by some case of TestDecide.
func TestDecideCoversEveryReason(t *testing.T) {
	b, err := os.ReadFile("engine_test.go")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, r := range []string{"ReasonAutoApprove", "ReasonRecordAndAllow", "ReasonDenylisted", "ReasonUnclassified",
		"ReasonPolicyDeny", "ReasonOutsideBusinessHours", "ReasonRoleNotAllowed", "ReasonBadEscalation",
		"ReasonApprovalRequired", "ReasonDualApproval", "ReasonAmountOverCap", "ReasonAmountUnreadable",
		"ReasonEscalationRequested", "ReasonAmbiguousBody", "ReasonUnknownHost"} {
		if !strings.Contains(src, "Reason: "+r+",") && !strings.Contains(src, "Reason: "+r+"}") {
			t.Errorf("no decision case for %s", r)
		}
	}
}

func TestDecideDetails(t *testing.T) {
	dec := loadEngine(t, "testdata/decide.yaml")
	tests := []struct {
		name string
		r    *Request
		want string
	}{
		{"no caller", req("GET", "/recon/1", ""), "action recon is only for callers with role staff_accountant, senior_accountant; no X-UAPK-On-Behalf-Of caller was named"},
		{"unknown caller", &Request{Method: "GET", Path: "/recon/1", OnBehalfOf: "eve@x"}, `action recon is only for callers with role staff_accountant, senior_accountant; caller "eve@x" is not a known principal`},
		{"lacking role", &Request{Method: "GET", Path: "/recon/1", OnBehalfOf: "cfo@corp.example"}, "action recon is only for callers with role staff_accountant, senior_accountant; caller cfo@corp.example holds none of them"},
		{"caller id not canonical", &Request{Method: "GET", Path: "/recon/1", OnBehalfOf: "CFO@corp.example"}, `action recon is only for callers with role staff_accountant, senior_accountant; caller "CFO@corp.example" is not a known principal`},
		{"outside hours", &Request{Method: "POST", Path: "/reports/x", Time: saturday}, "action report runs only 09:00-17:00 EST, Monday to Friday; the request came at Sat 2026-03-07 10:00 EST"},
		{"over cap", req("POST", "/je", `{"amount": 1000001}`), "amount 1000001 exceeds amount_cap 1000000 of action journal_entry; escalated to approvals by cfo and controller"},
		{"unreadable", req("POST", "/pay", `{"amount": true}`), "action payment has amount_cap 250.5 but the amount cannot be read: the value at amount is a boolean, not a number; needs approval by cfo"},
		{"escalation", &Request{Method: "POST", Path: "/multi", Escalation: "auditor"}, "action multi needs approval by cfo or controller; X-UAPK-Escalation adds an approval by auditor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dec.Decide(tt.r).Detail; got != tt.want {
				t.Errorf("Detail\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// Decisions are values: changing one must not change the manifest or the
// next decision.
func TestDecisionDoesNotAliasManifest(t *testing.T) {
	dec := loadEngine(t, "testdata/decide.yaml")
	d := dec.Decide(req("POST", "/multi", ""))
	d.Requirement.Slots[0][0] = "nobody"
	d.Requirement.Slots = append(d.Requirement.Slots, []string{"x"})
	if again := dec.Decide(req("POST", "/multi", "")); !reflect.DeepEqual(again.Requirement.Slots, [][]string{{"cfo", "controller"}}) {
		t.Errorf("manifest changed through a decision: %v", again.Requirement.Slots)
	}
}

func TestDecideWithoutPrincipals(t *testing.T) {
	e := NewEngine(mustLoad(t, "testdata/decide.yaml"), nil)
	r := req("GET", "/recon/1", "")
	r.OnBehalfOf = "staff@corp.example"
	if d := e.Decide(r); d.Outcome != Deny || d.Reason != ReasonRoleNotAllowed {
		t.Errorf("got %v %s", d.Outcome, d.Reason)
	}
	if d := e.Decide(nil); d.Outcome != Deny {
		t.Errorf("nil request: %v", d.Outcome)
	}
}

func TestAutoApproveDoesNotAllocate(t *testing.T) {
	e := loadEngine(t, "testdata/sox-financial.json")
	r := req("GET", "/api/v1/reconciliations/2026-03/gl-1000", "")
	r.OnBehalfOf = "staff@corp.example"
	if d := e.Decide(r); d.Outcome != Allow {
		t.Fatalf("%+v", d)
	}
	if n := testing.AllocsPerRun(100, func() { e.Decide(r) }); n != 0 {
		t.Errorf("Decide allocates %v times for an auto-approved request", n)
	}
	r.Scheme, r.Host, r.AgentChosenHost = "http", "127.0.0.1:9090", true
	if d := e.Decide(r); d.Outcome != Allow {
		t.Fatalf("forward door: %+v", d)
	}
	if n := testing.AllocsPerRun(100, func() { e.Decide(r) }); n != 0 {
		t.Errorf("Decide allocates %v times for an auto-approved request to an erp_hosts host", n)
	}
}

func TestReadAmount(t *testing.T) {
	paths := []string{"amount", "debit", "credit", "lines.#.amount", "lines.#.debit", "lines.#.credit"}
	tests := []struct {
		name, body string
		want       string // "" when unreadable
	}{
		{"integer", `{"amount": 1200000}`, "1200000"},
		{"decimal", `{"amount": 1200000.50}`, "1200000.5"},
		{"quoted", `{"amount": "1200000.00"}`, "1200000"},
		{"quoted with spaces and plus", `{"amount": " +1200000 "}`, "1200000"},
		{"quoted leading dot", `{"amount": ".5"}`, "0.5"},
		{"negative", `{"amount": -5.25}`, "5.25"},
		{"negative has largest magnitude", `{"debit": 100, "credit": -250}`, "250"},
		{"tie", `{"debit": -7, "credit": 7}`, "7"},
		{"exponent", `{"amount": 1.2e6}`, "1200000"},
		{"small exponent", `{"amount": 12e-4}`, "0.0012"},
		{"zero", `{"amount": 0}`, "0"},
		{"negative zero", `{"amount": -0.0}`, "0"},
		{"null ignored", `{"amount": null, "debit": 5}`, "5"},
		{"nested lines, summed", `{"lines":[{"amount":1},{"amount":"700"},{"debit":3},{"credit":-699.99}]}`, "701"},
		{"lines and top level", `{"amount": 10, "lines":[{"amount": 9}]}`, "10"},
		{"array at a path", `{"amount": [[1, [2]], 3]}`, "6"},
		{"empty lines", `{"lines": [], "amount": 4}`, "4"},
		{"missing", `{"memo": "x"}`, ""},
		{"lines is an object", `{"lines": {"amount": 5}}`, ""},
		{"top-level array", `[{"amount": 5}]`, ""},
		{"not JSON", `amount=5`, ""},
		{"empty body", ``, ""},
		{"truncated JSON", `{"amount": 5`, ""},
		{"trailing garbage", `{"amount": 5} x`, ""},
		{"thousands separators", `{"amount": "1,200,000"}`, ""},
		{"currency sign", `{"amount": "$5"}`, ""},
		{"hex string", `{"amount": "0x10"}`, ""},
		{"infinity", `{"amount": "Infinity"}`, ""},
		{"NaN", `{"amount": "NaN"}`, ""},
		{"boolean", `{"amount": true}`, ""},
		{"object", `{"amount": {"value": 5}}`, ""},
		{"one bad value spoils the rest", `{"amount": 5, "debit": "five"}`, ""},
		{"bad value in a line", `{"lines": [{"amount": 5}, {"amount": "?"}]}`, ""},
		{"huge exponent", `{"amount": 1e999999}`, ""},
		{"too many digits", `{"amount": ` + strings.Repeat("9", 1001) + `}`, ""},
		{"duplicate key", `{"amount": 5, "amount": 2000000}`, ""},
		{"duplicate key differing in case", `{"amount": 5, "Amount": 2000000}`, ""},
		{"duplicate key by escape", `{"amount": 5, "\u0061mount": 2000000}`, ""},
		{"duplicate key by Kelvin sign", `{"memo": {"kind": 1, "\u212aind": 2}, "amount": 5}`, ""},
		{"duplicate key deep in a line", `{"lines": [{"amount": 1, "AMOUNT": 9}]}`, ""},
		{"distinct keys", `{"amount": 5, "amounts": 6, "x": {"amount": 7}}`, "5"},
		{"deep nesting", `{"amount": 5, "x": ` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, ""},
		{"brackets in strings do not count", `{"amount": 5, "memo": "` + strings.Repeat("[", 200) + `"}`, "5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := readAmount([]byte(tt.body), compilePaths(t, paths...))
			if tt.want == "" {
				if why == "" {
					t.Errorf("read %s, want unreadable", got)
				}
				return
			}
			if why != "" {
				t.Fatalf("unreadable: %s", why)
			}
			if got.String() != tt.want {
				t.Errorf("amount %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDecimal(t *testing.T) {
	tests := []struct {
		in    string
		loose bool
		want  string // "" when rejected
	}{
		{"0", false, "0"},
		{"-0", false, "0"},
		{"1200000", false, "1200000"},
		{"1200000.00", false, "1200000"},
		{"0.050", false, "0.05"},
		{"-5.25", false, "-5.25"},
		{"1e3", false, "1000"},
		{"1E+3", false, "1000"},
		{"125e-5", false, "0.00125"},
		{"01", false, ""},
		{"+1", false, ""},
		{".5", false, ""},
		{"5.", false, ""},
		{"1e", false, ""},
		{"", false, ""},
		{"-", false, ""},
		{"+1", true, "1"},
		{" 7 ", true, "7"},
		{".5", true, "0.5"},
		{"5.", true, "5"},
		{"007", true, "7"},
		{".", true, ""},
		{"1 000", true, ""},
		{"1e1001", false, ""},
		{"1e1000", false, "1" + strings.Repeat("0", 1000)},
		{"1e-1001", false, ""},
	}
	for _, tt := range tests {
		d, ok := parseDecimal(tt.in, tt.loose)
		got := ""
		if ok {
			got = d.String()
		}
		if got != tt.want {
			t.Errorf("parseDecimal(%q, %v) = %q, want %q", tt.in, tt.loose, got, tt.want)
		}
	}
	// cmpAbs agrees with big.Rat on |a| vs |b|.
	nums := []string{"0", "1", "-1", "0.1", "0.09", "10", "9.99", "1000000", "1000000.0000001", "-1000000", "999999.999", "1e6", "12", "120", "123", "1.23e2", "0.00125"}
	for _, a := range nums {
		for _, b := range nums {
			da, _ := parseDecimal(a, false)
			db, _ := parseDecimal(b, false)
			ra, _ := new(big.Rat).SetString(a)
			rb, _ := new(big.Rat).SetString(b)
			if got, want := da.cmpAbs(db), new(big.Rat).Abs(ra).Cmp(new(big.Rat).Abs(rb)); got != want {
				t.Errorf("cmpAbs(%s, %s) = %d, want %d", a, b, got, want)
			}
			if da.Rat().Cmp(ra) != 0 {
				t.Errorf("Rat(%s) = %v", a, da.Rat())
			}
		}
	}
}

func compilePaths(t testing.TB, paths ...string) []amountPath {
	t.Helper()
	out := make([]amountPath, len(paths))
	for i, p := range paths {
		ap, err := compileAmountPath(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[i] = ap
	}
	return out
}
