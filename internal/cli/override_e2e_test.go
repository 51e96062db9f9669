package cli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// requestOverride runs `uapk-proxy override request` for journal entries
// with extra flags and returns the new override's id.
func requestOverride(t *testing.T, e *env, extra ...string) string {
	t.Helper()
	var out bytes.Buffer
	args := append([]string{"override", "request", "--action", "journal_entry", "--duration", "4h",
		"--justification", "quarter-end close; ERP approval queue down", "--requested-by", "accountant@corp.example", "--admin", e.admin, "--admin-token", e.token}, extra...)
	if code := runCLI(t, &out, args...); code != 0 {
		t.Fatalf("override request %v: exit %d: %s", extra, code, out.String())
	}
	id := regexp.MustCompile(`apr_[a-z2-7]{26}`).FindString(out.String())
	if id == "" {
		t.Fatalf("no override id in %q", out.String())
	}
	return id
}

// TestOverrideBoundsThroughTheProxy: the attack and both bounds through a
// running proxy, the CLI and the admin API. A CFO-approved override that
// names no bounds no longer lets 999,999,999 and 888,888,888 through: they
// are held for the escalation (202) and the ERP never sees them. One with
// --max-uses 2 lets two entries through, across a restart, and holds the
// third; --max-amount above the cap needs the controller too.
func TestOverrideBoundsThroughTheProxy(t *testing.T) {
	e := newEnv(t)
	id := requestOverride(t, e)
	if code, m := e.decide(id, "cfo@corp.example", "cfo", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("cfo: %d %v", code, m)
	}
	var ov approvals.Approval
	e.adminGet("/v1/overrides/"+id, &ov)
	for _, amount := range []string{"999999999", "888888888"} {
		r := e.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","amount":`+amount+`}`, "X-UAPK-Override", ov.Token)
		if r.status != 202 || r.json(t)["status"] != "PENDING_APPROVAL" {
			t.Fatalf("%s under an unbounded override: %d %s", amount, r.status, r.body)
		}
		rec := e.record(seqHeader(t, r))
		if rec.Kind != "request" || rec.Reason != "amount_over_cap" || rec.Data["override_id"] != id ||
			rec.Data["override_not_applied"] != "override_over_amount" || rec.Data["override_max_amount"] != "1000000" {
			t.Errorf("held record %+v", rec)
		}
	}
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Override", ov.Token); r.status != 201 {
		t.Fatalf("250,000 under the override: %d %s", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 {
		t.Fatalf("the ERP saw %d requests, want the one within the cap", st.Total)
	}

	// --max-uses 2: two uses, a restart, and the third is held.
	id = requestOverride(t, e, "--max-uses", "2")
	e.decide(id, "cfo@corp.example", "cfo", "approve", e.clock.Now())
	e.adminGet("/v1/overrides/"+id, &ov)
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Override", ov.Token); r.status != 201 {
		t.Fatalf("first use: %d %s", r.status, r.body)
	}
	e.stop()
	e.start()
	if r := e.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","amount":1000000}`, "X-UAPK-Override", ov.Token); r.status != 201 {
		t.Fatalf("second use, after a restart: %d %s", r.status, r.body)
	}
	r := e.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","amount":1}`, "X-UAPK-Override", ov.Token)
	if r.status != 202 || e.record(seqHeader(t, r)).Data["override_not_applied"] != "override_exhausted" {
		t.Fatalf("third use: %d %s", r.status, r.body)
	}
	var out bytes.Buffer
	if code := runCLI(t, &out, "override", "show", id, "--admin", e.admin, "--admin-token", e.token); code != 0 ||
		!strings.Contains(out.String(), "2 (2 used)") || !strings.Contains(out.String(), "amount_cap bounds each request") {
		t.Errorf("override show: exit %d:\n%s", code, out.String())
	}

	// --max-amount above the cap: the cfo alone does not approve it.
	out.Reset()
	id = requestOverride(t, e, "--max-amount", "5000000.00")
	runCLI(t, &out, "show", id, "--admin", e.admin, "--admin-token", e.token)
	if !strings.Contains(out.String(), "5000000 per request") || !strings.Contains(out.String(), "cfo + controller") {
		t.Errorf("show: %s", out.String())
	}
	if _, m := e.decide(id, "cfo@corp.example", "cfo", "approve", e.clock.Now()); m["status"] != "pending" {
		t.Fatalf("after the cfo: %v", m)
	}
	if _, m := e.decide(id, "controller@corp.example", "controller", "approve", e.clock.Now()); m["status"] != "approved" {
		t.Fatalf("after the controller: %v", m)
	}
	e.adminGet("/v1/overrides/"+id, &ov)
	if r := e.do("POST", "/api/v1/journal-entries", adjust1200k, "X-UAPK-Override", ov.Token); r.status != 201 {
		t.Fatalf("1,200,000 under a 5,000,000 override: %d %s", r.status, r.body)
	}

	// Bad bounds are bad requests, every problem named.
	for _, bad := range []map[string]any{
		{"max_amount": "-1"}, {"max_amount": "1,000"}, {"max_uses": 0}, {"max_amount": true}, {"max_uses": 1.5},
	} {
		body := map[string]any{"action": "journal_entry", "duration": "1h", "justification": "x", "requested_by": "accountant@corp.example"}
		for k, v := range bad {
			body[k] = v
		}
		if code, m := e.post("/v1/overrides", body); code != 400 || m["error"] != "bad_request" {
			t.Errorf("override with %v: %d %v", bad, code, m)
		}
	}
}
