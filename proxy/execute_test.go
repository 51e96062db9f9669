package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// executeTemplates adds execute templates to the example manifest's
// actions, found by their descriptions (the file's action order is its
// match order, so it is edited as text).
var executeTemplates = map[string]string{
	`"description": "Create or modify journal entries",`:          `{"method": "POST", "path": "/api/v1/journal-entries"}`,
	`"description": "Reconcile GL accounts",`:                     `{"method": "POST", "path": "/api/v1/reconciliations"}`,
	`"description": "Read journal entries and account balances",`: `{"method": "GET", "path": "/api/v1/accounts/{account}/balance"}`,
	`"description": "Change an audit log entry (never allowed)",`: `{"method": "PUT", "path": "/api/v1/audit-log/{id}"}`,
}

func executeManifestBytes(t *testing.T, hold string) []byte {
	t.Helper()
	b, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	for desc, x := range executeTemplates {
		if !bytes.Contains(b, []byte(desc)) {
			t.Fatalf("the example manifest lost %s", desc)
		}
		b = bytes.Replace(b, []byte(desc), []byte(desc+` "execute": `+x+`,`), 1)
	}
	if hold != "" {
		b = bytes.Replace(b, []byte(`"hold": "0s"`), []byte(`"hold": "`+hold+`"`), 1)
	}
	return b
}

type execEnv struct {
	t   *testing.T
	erp *erpmock.Server
	l   *fakeLedger
	url string
}

func newExecEnv(t *testing.T, manifest []byte) *execEnv {
	t.Helper()
	m, err := rules.ParseManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	e := &execEnv{t: t, erp: erpmock.New(), l: &fakeLedger{}}
	erp := httptest.NewServer(e.erp)
	t.Cleanup(erp.Close)
	g, err := newGate(t, e.l, rules.NewEngine(m, p))
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + serveSidecar(t, g, erp.URL).Addr().String()
	return e
}

type execReply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *execEnv) send(method, path, body string, headers ...string) execReply {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := execReply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	json.Unmarshal(raw, &r.body)
	return r
}

func (e *execEnv) execute(body string, headers ...string) execReply {
	e.t.Helper()
	return e.send("POST", ExecutePath, body, headers...)
}

func TestExecuteAutoApprovedReturnsTheERPsAnswer(t *testing.T) {
	e := newExecEnv(t, executeManifestBytes(t, ""))
	r := e.execute(`{"action":"account_reconciliation","parameters":{"account":"1010","period":"2026-Q3","statement_balance":"48210.55"},"justification":"month end"}`,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 200 || r.body["status"] != "EXECUTED" || r.body["reason"] != "auto_approve" || r.body["approval_id"] != "" ||
		r.header.Get("X-Uapk-Decision") != "allow" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	res, _ := r.body["result"].(map[string]any)
	body, _ := res["body"].(map[string]any)
	if res["status"] != float64(200) || body["account"] != "1010" || !strings.HasPrefix(body["id"].(string), "REC-") {
		t.Fatalf("result %v", res)
	}
	hits := e.erp.Hits()
	if len(hits) != 1 || hits[0].Method != "POST" || hits[0].Path != "/api/v1/reconciliations" || len(hits[0].LeakedUAPK) != 0 {
		t.Fatalf("ERP hits %+v", hits)
	}
	// The record says it came through execute, with the justification;
	// the digest is the one of the equivalent plain call.
	req := e.l.entries[0]
	if req.Data["via"] != "execute" || req.Data["justification"] != "month end" || req.Data["method"] != "POST" ||
		!strings.HasSuffix(req.Data["url"].(string), "/api/v1/reconciliations") {
		t.Fatalf("record %+v", req.Data)
	}
	plain := e.send("POST", "/api/v1/reconciliations", `{"account":"1010","period":"2026-Q3","statement_balance":"48210.55"}`,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if plain.status != 200 {
		t.Fatalf("plain call: %d %s", plain.status, plain.raw)
	}
	var plainRec = e.l.entries[len(e.l.entries)-2] // request, then forward record
	if plainRec.Digest != req.Digest || plainRec.Data["body_sha256"] != req.Data["body_sha256"] {
		t.Errorf("digest %s, the plain call's %s", req.Digest, plainRec.Digest)
	}
	if _, ok := plainRec.Data["via"]; ok {
		t.Error("a plain call's record says via")
	}
	// A GET with a path placeholder and no body; then an ERP's 400 is still
	// an executed call, its status in result.
	r = e.execute(`{"action":"ledger_read","parameters":{"account":"1000"}}`)
	if res, _ := r.body["result"].(map[string]any); r.status != 200 || r.body["status"] != "EXECUTED" || res["status"] != float64(200) {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if h := e.erp.Hits(); h[len(h)-1].Path != "/api/v1/accounts/1000/balance" || h[len(h)-1].BodySize != 0 {
		t.Errorf("hit %+v", h[len(h)-1])
	}
	r = e.execute(`{"action":"account_reconciliation","parameters":{"account":"10 10"}}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if res, _ := r.body["result"].(map[string]any); r.status != 200 || r.body["status"] != "EXECUTED" || res["status"] != float64(400) ||
		res["body"].(map[string]any)["error"] != "invalid_field" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
}

func TestExecutePendingAndDenied(t *testing.T) {
	e := newExecEnv(t, executeManifestBytes(t, ""))
	r := e.execute(`{"action":"journal_entry","parameters":{"account":"4000-Revenue","amount":1200000},"escalation_level":"cfo"}`)
	if r.status != 202 || r.body["status"] != "PENDING_APPROVAL" || r.body["reason"] != "amount_over_cap" ||
		!strings.HasPrefix(r.body["approval_id"].(string), "apr_") || r.body["result"] != nil {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	// (Held records go to the approvals' ledger: internal/cli's tests read them.)
	// The retry with the approval id before it is approved: 409, DENIED.
	r = e.execute(`{"action":"journal_entry","parameters":{"amount":1200000,"account":"4000-Revenue"},"escalation_level":"cfo"}`,
		"X-UAPK-Approval-Id", r.body["approval_id"].(string))
	if r.status != 409 || r.body["status"] != "DENIED" || r.body["reason"] != "not_approved" || r.body["error"] != "approval_not_usable" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	r = e.execute(`{"action":"audit_modify","parameters":{"id":"42","memo":"x"}}`)
	if r.status != 403 || r.body["status"] != "DENIED" || r.body["reason"] != "denylisted" || r.body["action"] != "audit_modify" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	r = e.execute(`{"action":"account_reconciliation","parameters":{"account":"1010"}}`) // no caller
	if r.status != 403 || r.body["reason"] != "role_not_allowed" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Errorf("the ERP got %d requests", st.Total)
	}
}

func TestExecuteRefusesWhatCannotBeBuilt(t *testing.T) {
	e := newExecEnv(t, executeManifestBytes(t, ""))
	for _, tc := range []struct{ body, msg string }{
		{`{"action":"ledger_read","parameters":{"account":"../../journal-entries"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":".."}}`, "dot segment"},
		{`{"action":"ledger_read","parameters":{"account":"1000/balance/../../../payroll/export"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"1000%2F..%2F..%2Fpayroll"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"1000?_method=DELETE"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"1000#x"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"1000;x"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"10\u00a000"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"\uff0e\uff0e"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":"a\\b"}}`, "not allowed"},
		{`{"action":"ledger_read","parameters":{"account":""}}`, "empty"},
		{`{"action":"ledger_read","parameters":{"account":null}}`, "string or a number"},
		{`{"action":"ledger_read","parameters":{}}`, `"account" is missing`},
		{`{"action":"ledger_read"}`, `"account" is missing`},
		{`{"action":"ledger_read","parameters":{"account":"1000"},"approval_id":"apr_x"}`, `unknown field "approval_id"`},
		{`{"Action":"ledger_read","parameters":{"account":"1000"}}`, `unknown field "Action"`},
		{`{"action":"ledger_read","action":"journal_entry","parameters":{"account":"1000"}}`, "not one unambiguous JSON"},
		{`{"action":"journal_entry","parameters":{"amount":5,"AMOUNT":5000000}}`, "not one unambiguous JSON"},
		{`{"action":"ledger_read","parameters":["1000"]}`, "parameters must be an object"},
		{`{"action":42}`, "action must be a string"},
		{`{"parameters":{}}`, "action is required"},
		{`[]`, "must be a JSON object"},
		{``, "must be a JSON object"},
		{`{"action":"nope"}`, `no action "nope"`},
		{`{"action":"financial_report","parameters":{}}`, "has no execute template"},
		{`{"action":"ledger_read","parameters":{"account":"1000"},"justification":"a"}`, "justification and the X-UAPK-Justification header differ"},
	} {
		r := e.execute(tc.body, "X-UAPK-Justification", "b")
		if r.status != 400 || r.body["error"] != "bad_request" || !strings.Contains(r.body["message"].(string), tc.msg) {
			t.Errorf("%s: %d %s (want ...%s...)", tc.body, r.status, r.raw, tc.msg)
		}
	}
	if r := e.send("GET", ExecutePath, ""); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d %s", r.status, r.raw)
	}
	if r := e.send("POST", ExecutePath+"?action=ledger_read", `{"action":"ledger_read","parameters":{"account":"1000"}}`); r.status != 400 {
		t.Errorf("query: %d %s", r.status, r.raw)
	}
	if st := e.erp.Stats(); st.Total != 0 || len(e.l.entries) != 0 {
		t.Errorf("the ERP got %d requests, %d records", st.Total, len(e.l.entries))
	}
}

// A template whose filled path another action's rule takes: the
// parameters cannot reach that action.
func TestExecuteCannotReachAnotherAction(t *testing.T) {
	e := newExecEnv(t, []byte(`{"app_id": "financial-ai-assistant", "actions": {
  "locked_edit": {"approval_policy": "AUTO_APPROVE", "match": [{"method": "PUT", "path": "/api/v1/journal-entries/LOCKED-*"}]},
  "journal_edit": {"approval_policy": "REQUIRE_APPROVAL", "roles_required": ["finance_manager"],
    "match": [{"method": "PUT", "path": "/api/v1/journal-entries/*"}],
    "execute": {"method": "PUT", "path": "/api/v1/journal-entries/{id}"}}
}}`))
	r := e.execute(`{"action":"journal_edit","parameters":{"id":"LOCKED-1","memo":"x"}}`)
	if r.status != 403 || r.body["status"] != "DENIED" || r.body["reason"] != "execute_mismatch" || r.body["action"] != "journal_edit" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	rec := e.l.entries[len(e.l.entries)-1]
	if rec.Reason != "execute_mismatch" || rec.Decision != "deny" || rec.Data["via"] != "execute" ||
		!strings.Contains(rec.Data["detail"].(string), "locked_edit") {
		t.Errorf("record %+v", rec)
	}
	r = e.execute(`{"action":"journal_edit","parameters":{"id":"JE-1","memo":"x"}}`)
	if r.status != 202 || r.body["reason"] != "approval_required" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Errorf("the ERP got %d requests", st.Total)
	}
}

// hold: the execute call waits like a plain one, then answers
// PENDING_APPROVAL with the approval id.
func TestExecuteHonoursHold(t *testing.T) {
	e := newExecEnv(t, executeManifestBytes(t, "1s"))
	start := time.Now()
	r := e.execute(`{"action":"journal_entry","parameters":{"account":"4000-Revenue","amount":5000}}`)
	if took := time.Since(start); took < time.Second {
		t.Errorf("answered after %s, before the hold ran out", took)
	}
	if r.status != 202 || r.body["status"] != "PENDING_APPROVAL" || r.body["approval_id"] == "" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
}
