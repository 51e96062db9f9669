package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aidanwoods.dev/go-paseto"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// withHold serves the example manifest with journal entries held on the
// agent's connection for up to hold.
func withHold(hold string) func(*serveOptions) {
	return func(o *serveOptions) {
		b, err := os.ReadFile(o.Manifest)
		if err != nil {
			panic(err)
		}
		p := filepath.Join(filepath.Dir(o.Principals), "manifest-hold.json")
		if err := os.WriteFile(p, bytes.Replace(b, []byte(`"hold": "0s"`), []byte(`"hold": "`+hold+`"`), 1), 0o644); err != nil {
			panic(err)
		}
		o.Manifest = p
	}
}

// decide signs a decision the way an approver's tool does and posts it.
func (e *env) decide(id, who, keyName, decision string, signedAt time.Time, mutate ...func(*approvals.Submission)) (int, map[string]any) {
	e.t.Helper()
	var a approvals.Approval
	if code := e.adminGet("/v1/approvals/"+id, &a); code != 200 {
		e.t.Fatalf("GET approval %s: %d", id, code)
	}
	key, err := keys.LoadPrivateFile(filepath.Join(e.keyDir, keyName+".key"))
	if err != nil {
		e.t.Fatal(err)
	}
	at := signedAt.UTC().Format(time.RFC3339)
	s := approvals.Submission{Approver: who, Decision: decision, Reason: "reviewed", SignedAt: at,
		Signature: approvals.Sign(key, id, a.Digest, decision, who, at)}
	for _, m := range mutate {
		m(&s)
	}
	return e.post("/v1/approvals/"+id+"/decisions", s)
}

func (e *env) post(path string, body any) (int, map[string]any) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", e.admin+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// capability is an approved request's capability token, read from the
// approvals service: no admin answer carries one (the ERP receives it on
// the forwarded request).
func (e *env) capability(id string) string {
	e.t.Helper()
	a, err := e.srv.Approvals().Get(id)
	if err != nil || a.Token == "" {
		e.t.Fatalf("capability of %s: %v (token %q)", id, err, a.Token)
	}
	return a.Token
}

func (e *env) approval(id string) approvals.Approval {
	e.t.Helper()
	var a approvals.Approval
	if code := e.adminGet("/v1/approvals/"+id, &a); code != 200 {
		e.t.Fatalf("GET approval %s: %d", id, code)
	}
	return a
}

func pendingID(t *testing.T, r reply) string {
	t.Helper()
	if r.status != 202 {
		t.Fatalf("want 202, got %d %s", r.status, r.body)
	}
	return r.json(t)["approval_id"].(string)
}

// kinds lists the kind/decision/reason of records after seq.
func (e *env) trail(after uint64) []string {
	var out []string
	for _, r := range e.records() {
		if r.Seq > after {
			out = append(out, string(r.Kind)+"/"+string(r.Decision)+"/"+string(r.Reason))
		}
	}
	return out
}

// The seed's quarter-end scenario: a $1.2M entry is held on the agent's
// connection, the CFO approves with the CLI, the controller through the
// API, and the held request reaches the ERP exactly once.
func TestQuarterEndEntryHeldThenDuallyApproved(t *testing.T) {
	e := newEnv(t, withHold("2m"))
	e.clock.Set(time.Now()) // the CLI signs with the wall clock
	start := e.srv.Ledger().Head().Seq

	type result struct {
		r   reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/journal-entries", strings.NewReader(adjust1200k))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-UAPK-Justification", "contracts meet ASC 606 criteria before quarter end")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{r: reply{resp.StatusCode, resp.Header, b}}
	}()

	var id string
	waitFor(t, func() bool {
		var list struct{ Approvals []approvals.Approval }
		e.adminGet("/v1/approvals?status=pending", &list)
		if len(list.Approvals) == 1 {
			id = list.Approvals[0].ID
		}
		return id != ""
	})
	if got := e.srv.Approvals().Held(); got != 1 {
		t.Fatalf("%d requests held, want 1", got)
	}
	var out bytes.Buffer
	if code := runCLI(t, &out, "approve", id, "--as", "cfo@corp.example", "--key", filepath.Join(e.keyDir, "cfo.key"),
		"--reason", "ASC 606 criteria met", "--admin", e.admin, "--admin-token", e.token); code != 0 {
		t.Fatalf("CLI approve exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "approval is now pending") || e.erp.Stats().Total != 0 {
		t.Fatalf("after one of two approvals: %s; ERP %+v", out.String(), e.erp.Stats())
	}
	if code, m := e.decide(id, "controller@corp.example", "controller", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("controller approval: %d %v", code, m)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("held request not released after the approval completed")
	}
	if res.err != nil || res.r.status != 201 {
		t.Fatalf("held request: %v %d %s", res.err, res.r.status, res.r.body)
	}
	if res.r.header.Get("X-UAPK-Decision") != "allow" || res.r.json(t)["status"] != "posted" {
		t.Errorf("held request answer %v %s", res.r.header, res.r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 || st.ByRoute["POST /api/v1/journal-entries"] != 1 {
		t.Fatalf("ERP stats %+v", st)
	}
	// The ERP got the capability token, signed by the gateway key it can fetch.
	tok := e.erp.Hits()[0].Capability
	var gk struct {
		PasetoPublicHex string `json:"paseto_public_hex"`
	}
	e.adminGet("/v1/keys/gateway", &gk)
	pk, err := paseto.NewV4AsymmetricPublicKeyFromHex(gk.PasetoPublicHex)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := paseto.NewParserWithoutExpiryCheck().ParseV4Public(pk, tok, nil)
	if err != nil {
		t.Fatalf("capability token the ERP received does not verify: %v", err)
	}
	if aid, _ := parsed.GetString("approval_id"); aid != id {
		t.Errorf("token approval_id %q", aid)
	}

	waitFor(t, func() bool { return len(e.trail(start)) >= 6 })
	want := []string{
		"request/pending/amount_over_cap",
		"approval/approve/signed", // CFO, via the CLI
		"approval/approve/signed", // controller, via the API
		"capability/issued/capability",
		"request/allow/approved",
		"forward/allow/forwarded",
	}
	if got := e.trail(start); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ledger trail\n got %v\nwant %v", got, want)
	}
	var rep verifier.Report
	if code := e.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
		t.Errorf("verify %d %+v", code, rep)
	}
	a := e.approval(id)
	if a.Status != "approved" || a.Consumed == 0 || len(a.Decisions) != 2 ||
		a.Decisions[0].Role != "cfo" || a.Decisions[1].Role != "controller" {
		t.Errorf("approval after %+v", a)
	}
}

func TestAccrualApprovedByOneFinanceManagerRunsOnce(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Justification", "AI detected revenue recognition timing difference")
	id := pendingID(t, r)
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approve: %d %v", code, m)
	}
	r = e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	if r.status != 201 || r.header.Get("X-UAPK-Decision") != "allow" {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	if r.status != 409 || r.json(t)["reason"] != "consumed" {
		t.Fatalf("second retry: %d %s", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 {
		t.Fatalf("ERP saw %d requests", st.Total)
	}
}

func TestFinancialReportNeedsTwoPeopleNotOneWithBothRoles(t *testing.T) {
	e := newEnv(t)
	id := pendingID(t, e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`))
	if code, m := e.decide(id, "both@corp.example", "both", "approve", e.clock.Now()); code != 200 || m["status"] != "pending" {
		t.Fatalf("first approval by the holder of both roles: %d %v", code, m)
	}
	if code, m := e.decide(id, "both@corp.example", "both", "approve", e.clock.Now()); code != 409 || m["reason"] != "duplicate_approver" {
		t.Fatalf("same person again: %d %v", code, m)
	}
	if a := e.approval(id); a.Status != "pending" {
		t.Fatalf("one person completed a dual approval: %+v", a)
	}
	// The controller completes it; the matching gives "both" the cfo slot.
	if code, m := e.decide(id, "controller@corp.example", "controller", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("controller: %d %v", code, m)
	}
	a := e.approval(id)
	if a.Decisions[0].Role != "cfo" || a.Decisions[1].Role != "controller" {
		t.Errorf("roles %+v", a.Decisions)
	}
	if r := e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
}

func TestRejectedEntryNeverReachesTheERP(t *testing.T) {
	e := newEnv(t)
	id := pendingID(t, e.do("POST", "/api/v1/journal-entries", accrual250k))
	if code, m := e.decide(id, "fm@corp.example", "fm", "reject", e.clock.Now()); code != 200 || m["status"] != "rejected" {
		t.Fatalf("reject: %d %v", code, m)
	}
	r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	if r.status != 403 || r.json(t)["reason"] != "rejected" {
		t.Fatalf("retry after rejection: %d %s", r.status, r.body)
	}
	if code, m := e.decide(id, "fm2@corp.example", "fm2", "approve", e.clock.Now()); code != 409 || m["reason"] != "approval_closed" {
		t.Fatalf("approval after rejection: %d %v", code, m)
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("ERP reached: %+v", st)
	}
}

func TestEveryRefusalReasonIsRecorded(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	newJE := func() string {
		return pendingID(t, e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "fm2@corp.example"))
	}
	cases := []struct {
		name, who, key, decision string
		at                       time.Time
		mutate                   func(*approvals.Submission)
		code                     int
		reason                   string
	}{
		{"unknown approver", "mallory@corp.example", "fm", "approve", now, nil, 403, "unknown_approver"},
		{"no key on file", "accountant@corp.example", "fm", "approve", now, nil, 403, "unknown_approver"},
		{"wrong role", "cfo@corp.example", "cfo", "approve", now, nil, 403, "wrong_role"},
		{"signed with another person's key", "fm@corp.example", "cfo", "approve", now, nil, 403, "bad_signature"},
		{"signature not base64", "fm@corp.example", "fm", "approve", now, func(s *approvals.Submission) { s.Signature = "%%%" }, 403, "bad_signature"},
		{"signature over another digest", "fm@corp.example", "fm", "approve", now, func(s *approvals.Submission) {
			s.Digest = strings.Repeat("ab", 32)
		}, 403, "digest_mismatch"},
		{"decision word changed after signing", "fm@corp.example", "fm", "approve", now, func(s *approvals.Submission) { s.Decision = "reject" }, 403, "bad_signature"},
		{"stale signed_at", "fm@corp.example", "fm", "approve", now.Add(-6 * time.Minute), nil, 403, "stale_signature"},
		{"signed_at from the future", "fm@corp.example", "fm", "approve", now.Add(6 * time.Minute), nil, 403, "stale_signature"},
		{"the on-behalf-of caller", "fm2@corp.example", "fm2", "approve", now, nil, 403, "self_approval"},
		{"the requesting app", "financial-ai-assistant", "app", "approve", now, nil, 403, "self_approval"},
		{"not a decision", "fm@corp.example", "fm", "maybe", now, nil, 400, "bad_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := newJE()
			before := e.srv.Ledger().Head().Seq
			code, m := e.decide(id, c.who, c.key, c.decision, c.at, func(s *approvals.Submission) {
				if c.mutate != nil {
					c.mutate(s)
				}
			})
			if code != c.code || m["reason"] != c.reason {
				t.Fatalf("got %d %v, want %d %s", code, m, c.code, c.reason)
			}
			if a := e.approval(id); a.Status != "pending" || len(a.Decisions) != 0 {
				t.Errorf("a refused decision changed the approval: %+v", a)
			}
			rec := e.record(before + 1)
			if rec.Kind != "approval" || rec.Decision != "refused" || string(rec.Reason) != c.reason || rec.ApprovalID != id {
				t.Errorf("refusal record %+v", rec)
			}
		})
	}
	t.Run("same person twice", func(t *testing.T) {
		id := pendingID(t, e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`))
		e.decide(id, "cfo@corp.example", "cfo", "approve", now)
		if code, m := e.decide(id, "cfo@corp.example", "cfo", "approve", now); code != 409 || m["reason"] != "duplicate_approver" {
			t.Fatalf("%d %v", code, m)
		}
	})
	t.Run("decision on a finished approval", func(t *testing.T) {
		id := newJE()
		e.decide(id, "fm@corp.example", "fm", "approve", now)
		if code, m := e.decide(id, "cfo@corp.example", "cfo", "approve", now); code != 409 || m["reason"] != "approval_closed" {
			t.Fatalf("%d %v", code, m)
		}
	})
	t.Run("decision on an expired approval", func(t *testing.T) {
		id := newJE()
		e.clock.Add(25 * time.Hour)
		defer e.clock.Set(now)
		if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 409 || m["reason"] != "approval_expired" {
			t.Fatalf("%d %v", code, m)
		}
		if n, err := e.srv.Approvals().ExpireDue(); err != nil || n == 0 {
			t.Fatalf("ExpireDue: %d %v", n, err)
		}
		if a := e.approval(id); a.Status != "expired" {
			t.Errorf("status %s", a.Status)
		}
		if tail := e.trail(e.srv.Ledger().Head().Seq - 1); !strings.HasPrefix(tail[0], "approval/expired/") {
			t.Errorf("no expiry record: %v", tail)
		}
	})
	t.Run("malformed body", func(t *testing.T) {
		id := newJE()
		code, m := e.post("/v1/approvals/"+id+"/decisions", map[string]any{"approver": "fm@corp.example", "colour": "red"})
		if code != 400 || m["error"] != "bad_request" {
			t.Fatalf("%d %v", code, m)
		}
		if code, _ := e.post("/v1/approvals/apr_nope/decisions", approvals.Submission{}); code != 404 {
			t.Fatalf("unknown approval: %d", code)
		}
	})
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("ERP reached: %+v", st)
	}
}

func TestCapabilityTokensAreBoundAndSingleUseAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	approve := func(body string) (string, string) {
		id := pendingID(t, e.do("POST", "/api/v1/journal-entries", body))
		if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
			t.Fatalf("approve: %d %v", code, m)
		}
		return id, e.capability(id)
	}
	_, tokA := approve(accrual250k)
	other := strings.Replace(accrual250k, "250000", "250001", 1)
	_, tokB := approve(other)

	check := func(name, body, token string, headers []string, status int, reason string) {
		t.Helper()
		r := e.do("POST", "/api/v1/journal-entries", body, append([]string{"X-UAPK-Capability", token}, headers...)...)
		if r.status != status || (reason != "" && r.json(t)["reason"] != reason) {
			t.Errorf("%s: %d %s, want %d %s", name, r.status, r.body, status, reason)
		}
	}
	check("forged", accrual250k, "v4.public.bm90IGEgdG9rZW4", nil, 409, "invalid_token")
	check("other digest", accrual250k, tokB, nil, 409, "digest_mismatch")
	check("other app", accrual250k, tokA, []string{"X-UAPK-App", "other-app"}, 403, "unknown_app")
	check("valid", accrual250k, tokA, nil, 201, "")
	check("replayed", accrual250k, tokA, nil, 409, "consumed")

	// A token signed by another key is forged even with the right claims.
	_, otherKey, _ := keys.Generate()
	forged := paseto.NewToken()
	forged.SetIssuer("uapk-proxy")
	forged.SetExpiration(e.clock.Now().Add(time.Hour))
	sk, _ := paseto.NewV4AsymmetricSecretKeyFromEd25519(otherKey)
	check("signed by another key", accrual250k, forged.V4Sign(sk, nil), nil, 409, "invalid_token")

	// Replay after a restart: the used-token set is in bbolt.
	e.stop()
	e.start()
	check("replayed after restart", accrual250k, tokA, nil, 409, "consumed")
	e.clock.Add(25 * time.Hour)
	check("expired", other, tokB, nil, 409, "expired")
	if st := e.erp.Stats(); st.Total != 1 {
		t.Fatalf("ERP saw %d requests, want 1", st.Total)
	}
}

func TestPendingApprovalSurvivesARestart(t *testing.T) {
	e := newEnv(t)
	id := pendingID(t, e.do("POST", "/api/v1/journal-entries", accrual250k))
	e.stop()
	e.start()
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approve after restart: %d %v", code, m)
	}
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
}

func TestHeldAgentThatHangsUpLeavesTheApprovalUsable(t *testing.T) {
	e := newEnv(t, withHold("2m"))
	client := &http.Client{Timeout: 500 * time.Millisecond}
	req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/journal-entries", strings.NewReader(accrual250k))
	req.Header.Set("Content-Type", "application/json") // as the retry below sends it: the approval binds it
	if _, err := client.Do(req); err == nil {
		t.Fatal("expected the client to give up while held")
	}
	var list struct{ Approvals []approvals.Approval }
	// On a loaded machine the client may give up before the proxy has even
	// recorded the request; it is recorded all the same.
	waitFor(t, func() bool { e.adminGet("/v1/approvals?status=pending", &list); return len(list.Approvals) > 0 })
	if len(list.Approvals) != 1 {
		t.Fatalf("pending %v", list.Approvals)
	}
	id := list.Approvals[0].ID
	if code, _ := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
		t.Fatal("approve failed")
	}
	waitFor(t, func() bool { return e.srv.Approvals().Held() == 0 })
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("executed for an agent that hung up: %+v", st)
	}
	if a := e.approval(id); a.Consumed != 0 {
		t.Fatalf("approval consumed: %+v", a)
	}
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
}

func TestOverrideSkipsApprovalButNeverTheDenylist(t *testing.T) {
	e := newEnv(t)
	code, m := e.post("/v1/overrides", map[string]string{"action": "financial_report", "duration": "4h",
		"justification": "Q4 10-K filing deadline - SEC required", "requested_by": "controller@corp.example"})
	if code != 201 {
		t.Fatalf("override request: %d %v", code, m)
	}
	id := m["id"].(string)
	if code, m := e.decide(id, "controller@corp.example", "controller", "approve", e.clock.Now()); code != 403 || m["reason"] != "self_approval" {
		t.Fatalf("requester approving own override: %d %v", code, m)
	}
	if code, m := e.decide(id, "cfo@corp.example", "cfo", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("cfo: %d %v", code, m)
	}
	var ov approvals.Approval
	e.adminGet("/v1/overrides/"+id, &ov)
	before := e.srv.Ledger().Head().Seq
	for i := 0; i < 2; i++ {
		r := e.do("POST", "/api/v1/reports/10-K", fmt.Sprintf(`{"period":"2026-Q4","draft":%d}`, i), "X-UAPK-Override", ov.Token)
		if r.status != 201 {
			t.Fatalf("report with override: %d %s", r.status, r.body)
		}
		if rec := e.record(seqHeader(t, r)); rec.Kind != "override" || rec.Reason != "override" || rec.ApprovalID != id {
			t.Errorf("override use record %+v", rec)
		}
	}
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Override", ov.Token); r.status != 409 || r.json(t)["reason"] != "action_mismatch" {
		t.Errorf("override of another action: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/api/v1/audit-log/AL-1", "", "X-UAPK-Override", ov.Token); r.status != 403 || r.json(t)["reason"] != "denylisted" {
		t.Errorf("override past the denylist: %d %s", r.status, r.body)
	}
	e.clock.Add(5 * time.Hour)
	if r := e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q4"}`, "X-UAPK-Override", ov.Token); r.status != 409 || r.json(t)["reason"] != "expired" {
		t.Errorf("expired override: %d %s", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 2 || st.ForbiddenReached != 0 {
		t.Fatalf("ERP %+v", st)
	}
	_ = before
	for _, bad := range []map[string]string{
		{"action": "log_delete", "duration": "1h", "justification": "x", "requested_by": "cfo@corp.example"},
		{"action": "financial_report", "duration": "9h", "justification": "x", "requested_by": "cfo@corp.example"},
		{"action": "nope", "duration": "1h", "justification": "x", "requested_by": "cfo@corp.example"},
		{"action": "financial_report", "duration": "soon", "justification": "", "requested_by": ""},
	} {
		if code, m := e.post("/v1/overrides", bad); code != 400 {
			t.Errorf("override %v accepted: %d %v", bad, code, m)
		}
	}
}

// TestApprovalSurvivesAnERPThatWasDown: an approved retry sent while the
// ERP is down gets 502 upstream_unavailable with delivered false, and the
// approval stays usable: once the ERP is back the same retry goes through,
// and the ERP sees the entry once.
func TestApprovalSurvivesAnERPThatWasDown(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hole.Addr().String()
	hole.Close() // nothing listens here until the ERP comes back
	e := newEnv(t, func(o *serveOptions) { o.Upstream = "http://" + addr })
	r := e.do("POST", "/api/v1/journal-entries", accrual250k)
	if r.status != 202 {
		t.Fatalf("held: %d %s", r.status, r.body)
	}
	id := r.header.Get("X-UAPK-Approval-Id")
	if code, _ := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
		t.Fatal("approve failed")
	}
	r = e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	if r.status != 502 || !strings.Contains(string(r.body), `"delivered":false`) || !strings.Contains(string(r.body), `"error":"upstream_unavailable"`) {
		t.Fatalf("retry with the ERP down: %d %s", r.status, r.body)
	}
	if a := e.approval(id); a.Consumed != 0 {
		t.Fatalf("an approval the ERP never got is used up: %+v", a)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("bring the ERP back on %s: %v", addr, err)
	}
	erp := &http.Server{Handler: e.erp}
	go erp.Serve(ln)
	defer erp.Close()
	r = e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	if r.status != 201 {
		t.Fatalf("retry with the ERP back: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 409 {
		t.Errorf("a third retry: %d %s, want 409 consumed", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 {
		t.Errorf("the ERP got %d requests, want 1", st.Total)
	}
}
