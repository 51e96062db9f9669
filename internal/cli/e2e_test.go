package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/server"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// clock is a settable time for the gate; tests stand it on a weekday at
// 11:00 New York time unless they move it.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// Tuesday 2026-11-17 16:00Z is 11:00 EST.
var businessHours = time.Date(2026, 11, 17, 16, 0, 0, 0, time.UTC)

type env struct {
	t       testing.TB
	erp     *erpmock.Server
	srv     *server.Server
	clock   *clock
	opts    *serveOptions
	logs    *syncBuffer
	sidecar string // base URL of the sidecar door
	admin   string // base URL of the admin API
	token   string // the admin token serve wrote to DATA/admin.token
	keyDir  string // approvers' key pairs: NAME.key / NAME.pub
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writePrincipals makes key pairs for the example people in dir and a
// principals file naming them.
func writePrincipals(t testing.TB, dir string) string {
	t.Helper()
	return writePeople(t, dir, "principals.yaml", []person{
		{"cfo@corp.example", "[cfo]", "cfo"},
		{"controller@corp.example", "[controller]", "controller"},
		{"fm@corp.example", "[finance_manager]", "fm"},
		{"both@corp.example", "[cfo, controller]", "both"},
		{"accountant@corp.example", "[staff_accountant]", ""},
		{"fm2@corp.example", "[finance_manager]", "fm2"},
		{"financial-ai-assistant", "[finance_manager]", "app"}, // the agent's own app id must never count
	})
}

// person is one entry of a test's principals file: key names the key pair
// made for it in the file's directory (KEY.key, KEY.pub), "" for none.
type person struct{ id, roles, key string }

// writePeople writes the principals file name in dir, with a fresh key
// pair for each person who has a key.
func writePeople(t testing.TB, dir, name string, people []person) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("principals:\n")
	for _, p := range people {
		fmt.Fprintf(&b, "  - id: %s\n    roles: %s\n", p.id, p.roles)
		if p.key != "" {
			pub, priv, err := keys.Generate()
			if err != nil {
				t.Fatal(err)
			}
			if err := keys.WritePair(filepath.Join(dir, p.key), pub, priv); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "    public_key: %s.pub\n", p.key)
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func newEnv(t testing.TB, tweak ...func(*serveOptions)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, erp: erpmock.New(), clock: &clock{}, logs: &syncBuffer{}, keyDir: dir}
	e.clock.Set(businessHours)
	erpSrv := httptest.NewServer(e.erp)
	t.Cleanup(erpSrv.Close)
	e.opts = &serveOptions{
		Manifest:    "../../examples/manifests/sox-financial.json",
		Principals:  writePrincipals(t, dir),
		Upstream:    erpSrv.URL,
		SidecarAddr: "127.0.0.1:0",
		AdminAddr:   "127.0.0.1:0",
		DataDir:     filepath.Join(dir, "data"),
		MaxBody:     "10MiB",
		LogLevel:    "info",
		now:         e.clock.Now,
	}
	for _, f := range tweak {
		f(e.opts)
	}
	e.start()
	return e
}

func (e *env) start() {
	e.t.Helper()
	srv, err := startServer(e.opts, e.logs)
	if err != nil {
		e.t.Fatalf("start: %v", err)
	}
	e.srv = srv
	e.sidecar = "http://" + srv.SidecarAddr.String()
	e.admin = "http://" + srv.AdminAddr.String()
	if e.opts.AdminTokens == "" {
		tok, err := adminauth.ReadTokenFile(filepath.Join(e.opts.DataDir, adminauth.FileName))
		if err != nil {
			e.t.Fatalf("admin token: %v", err)
		}
		e.token = tok
	}
	e.t.Cleanup(func() { e.stop() })
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	if err := e.srv.Close(); err != nil {
		e.t.Errorf("close: %v", err)
	}
	e.srv = nil
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
	return m
}

func (e *env) do(method, path, body string, headers ...string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.sidecar+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func (e *env) adminGet(path string, into any) int {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			e.t.Fatalf("GET %s: %q: %v", path, b, err)
		}
	}
	return resp.StatusCode
}

// records returns the whole chain through the admin API.
func (e *env) records() []ledger.Record {
	e.t.Helper()
	var recs []ledger.Record
	if code := e.adminGet("/v1/ledger/records?from=1", &recs); code != 200 {
		e.t.Fatalf("records: %d", code)
	}
	return recs
}

func (e *env) record(seq uint64) ledger.Record {
	e.t.Helper()
	for _, r := range e.records() {
		if r.Seq == seq {
			return r
		}
	}
	e.t.Fatalf("no record %d", seq)
	return ledger.Record{}
}

func seqHeader(t *testing.T, r reply) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(r.header.Get("X-UAPK-Record"), 10, 64)
	if err != nil {
		t.Fatalf("X-UAPK-Record %q: %v", r.header.Get("X-UAPK-Record"), err)
	}
	return n
}

const (
	reconciliation = `{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`
	accrual250k    = `{"account":"4000-Revenue","debit":0,"credit":250000,"description":"Q3 product sales accrual","supporting_docs":["sales_report_q3.pdf"]}`
	adjust1200k    = `{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}`
)

func TestAllowedRequestIsForwardedOnceWithoutProxyHeaders(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/reconciliations", reconciliation,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example",
		"X-UAPK-Justification", "month-end close",
		"X-UAPK-Something-Else", "must not leak",
		"Connection", "X-Internal-Hop",
		"X-Internal-Hop", "secret",
		"Proxy-Authorization", "Basic Zm9vOmJhcg==")
	if r.status != 200 {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if got := r.header.Get("X-UAPK-Decision"); got != "allow" {
		t.Errorf("X-UAPK-Decision %q", got)
	}
	if got := r.header.Get("X-UAPK-Action"); got != "account_reconciliation" {
		t.Errorf("X-UAPK-Action %q", got)
	}
	if m := r.json(t); m["status"] != "reconciled" {
		t.Errorf("ERP body not relayed: %s", r.body)
	}
	st := e.erp.Stats()
	if st.Total != 1 || st.LeakedUAPKHeaders != 0 || st.LeakedHopByHop != 0 {
		t.Fatalf("ERP stats %+v", st)
	}
	hit := e.erp.Hits()[0]
	for _, h := range hit.Headers {
		if strings.EqualFold(h, "X-Internal-Hop") {
			t.Errorf("header named in Connection reached the ERP")
		}
	}
	seq := seqHeader(t, r)
	rec := e.record(seq)
	if rec.Kind != "request" || rec.Decision != "allow" || rec.Reason != "auto_approve" || rec.Action != "account_reconciliation" {
		t.Errorf("request record %+v", rec)
	}
	if rec.Digest != hit.BodySHA256 && rec.Digest == "" {
		t.Errorf("no digest")
	}
	// The forward outcome follows the request record.
	waitFor(t, func() bool { return len(e.records()) >= int(seq)+1 })
	fwd := e.record(seq + 1)
	if fwd.Kind != "forward" || fwd.Data["status"] != float64(200) || fwd.Data["request_record"] != float64(seq) {
		t.Errorf("forward record %+v", fwd)
	}
}

func TestDeniedRequestsNeverReachTheERP(t *testing.T) {
	e := newEnv(t)
	saturday := time.Date(2026, 11, 21, 16, 0, 0, 0, time.UTC)
	cases := []struct {
		name, method, path, body string
		headers                  []string
		at                       time.Time
		reason, action           string
	}{
		{"denylisted audit_modify", "PUT", "/api/v1/audit-log/AL-1", `{"note":"x"}`, nil, businessHours, "denylisted", "audit_modify"},
		{"denylisted log_delete", "DELETE", "/api/v1/audit-log/2026/11", "", nil, businessHours, "denylisted", "log_delete"},
		{"denylisted record_destroy", "DELETE", "/api/v1/records/JE-1", "", nil, businessHours, "denylisted", "record_destroy"},
		{"unclassified", "GET", "/api/v1/payroll/export", "", nil, businessHours, "unclassified", ""},
		{"role not allowed: no caller", "POST", "/api/v1/reconciliations", reconciliation, nil, businessHours, "role_not_allowed", "account_reconciliation"},
		{"role not allowed: wrong role", "POST", "/api/v1/reconciliations", reconciliation, []string{"X-UAPK-On-Behalf-Of", "fm@corp.example"}, businessHours, "role_not_allowed", "account_reconciliation"},
		{"role not allowed: unknown caller", "POST", "/api/v1/reconciliations", reconciliation, []string{"X-UAPK-On-Behalf-Of", "mallory@evil.example"}, businessHours, "role_not_allowed", "account_reconciliation"},
		{"outside business hours", "POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`, nil, saturday, "outside_business_hours", "financial_report"},
		{"unknown app", "POST", "/api/v1/reconciliations", reconciliation, []string{"X-UAPK-App", "other-app", "X-UAPK-On-Behalf-Of", "accountant@corp.example"}, businessHours, "unknown_app", ""},
		{"bad escalation", "POST", "/api/v1/journal-entries", accrual250k, []string{"X-UAPK-Escalation", "CFO; DROP"}, businessHours, "bad_escalation", "journal_entry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.clock.Set(c.at)
			r := e.do(c.method, c.path, c.body, c.headers...)
			if r.status != 403 {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
			if got := r.header.Get("X-UAPK-Decision"); got != "deny" {
				t.Errorf("X-UAPK-Decision %q", got)
			}
			seq := seqHeader(t, r)
			want := fmt.Sprintf(`{"error":"denied","reason":%q,"action":%q,"record":%d}`, c.reason, c.action, seq)
			if got := string(r.body); got != want {
				t.Errorf("body\n got %s\nwant %s", got, want)
			}
			rec := e.record(seq)
			if rec.Kind != "request" || rec.Decision != "deny" || string(rec.Reason) != c.reason || rec.Action != c.action {
				t.Errorf("record %+v", rec)
			}
		})
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("denied requests reached the ERP: %+v", st)
	}
}

func TestPendingApprovalIsHeldAndShown(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, body, reason string
		roles              []string
	}{
		{"the seed's $250k accrual needs a finance manager", accrual250k, "approval_required", []string{"finance_manager"}},
		{"$1.2M escalates to cfo and controller", adjust1200k, "amount_over_cap", []string{"cfo", "controller"}},
		{"unreadable amount is held, never auto-run", `{"account":"4000-Revenue","amount":"about a million"}`, "amount_unreadable", []string{"cfo", "controller"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/api/v1/journal-entries", c.body, "X-UAPK-Justification", "quarter-end accrual")
			if r.status != 202 {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
			m := r.json(t)
			id, _ := m["approval_id"].(string)
			if m["status"] != "PENDING_APPROVAL" || id == "" || m["action"] != "journal_entry" ||
				fmt.Sprint(m["required_roles"]) != fmt.Sprint(toAnySlice(c.roles)) {
				t.Fatalf("body %s", r.body)
			}
			if r.header.Get("X-UAPK-Approval-Id") != id || r.header.Get("X-UAPK-Decision") != "pending" {
				t.Errorf("headers %v", r.header)
			}
			exp, err := time.Parse(time.RFC3339, m["expires_at"].(string))
			if err != nil || !exp.Equal(e.clock.Now().Add(24*time.Hour).Truncate(time.Second)) {
				t.Errorf("expires_at %v (%v)", m["expires_at"], err)
			}
			var ap map[string]any
			if code := e.adminGet("/v1/approvals/"+id, &ap); code != 200 {
				t.Fatalf("GET approval: %d", code)
			}
			if ap["status"] != "pending" || ap["body"] != c.body || ap["justification"] != "quarter-end accrual" ||
				ap["method"] != "POST" || !strings.HasSuffix(ap["url"].(string), "/api/v1/journal-entries") {
				t.Errorf("approval %v", ap)
			}
			rec := e.record(seqHeader(t, r))
			if rec.Decision != "pending" || string(rec.Reason) != c.reason || rec.ApprovalID != id || rec.Digest != ap["digest"] {
				t.Errorf("record %+v", rec)
			}
		})
	}
	var list struct{ Approvals []map[string]any }
	e.adminGet("/v1/approvals?status=pending", &list)
	if len(list.Approvals) != len(cases) {
		t.Errorf("%d pending approvals listed, want %d", len(list.Approvals), len(cases))
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("held requests reached the ERP: %+v", st)
	}
}

func toAnySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func TestRetryOfAnUnusableApprovalGets409(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/journal-entries", accrual250k)
	id := r.json(t)["approval_id"].(string)
	cases := []struct {
		name, body, id, reason string
		advance                time.Duration
	}{
		{"still pending", accrual250k, id, "not_approved", 0},
		{"another body", strings.Replace(accrual250k, "250000", "950000", 1), id, "digest_mismatch", 0},
		{"unknown id", accrual250k, "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa", "not_approved", 0},
		{"malformed id", accrual250k, "../../etc/passwd", "not_approved", 0},
		{"expired", accrual250k, id, "expired", 25 * time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.clock.Add(c.advance)
			r := e.do("POST", "/api/v1/journal-entries", c.body, "X-UAPK-Approval-Id", c.id)
			if r.status != 409 {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
			m := r.json(t)
			if m["reason"] != c.reason || m["error"] != "approval_not_usable" {
				t.Errorf("body %s", r.body)
			}
			rec := e.record(seqHeader(t, r))
			if rec.Decision != "deny" || string(rec.Reason) != c.reason {
				t.Errorf("record %+v", rec)
			}
		})
	}
	var ap map[string]any
	e.adminGet("/v1/approvals/"+id, &ap)
	if ap["status"] != "expired" {
		t.Errorf("approval status %v after its ttl", ap["status"])
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("ERP reached: %+v", st)
	}
}

func TestBodyOverTheLimitGets413AndIsRecorded(t *testing.T) {
	e := newEnv(t, func(o *serveOptions) { o.MaxBody = "1KiB" })
	big := `{"account":"1010-Cash","memo":"` + strings.Repeat("x", 2048) + `"}`
	r := e.do("POST", "/api/v1/reconciliations", big, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 413 {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if m := r.json(t); m["reason"] != "body_too_large" {
		t.Errorf("body %s", r.body)
	}
	rec := e.record(seqHeader(t, r))
	if rec.Decision != "deny" || rec.Reason != "body_too_large" {
		t.Errorf("record %+v", rec)
	}
	// A body at the limit still goes through.
	ok := `{"account":"1010-Cash","memo":"` + strings.Repeat("x", 1024-len(`{"account":"1010-Cash","memo":""}`)) + `"}`
	if r := e.do("POST", "/api/v1/reconciliations", ok, "X-UAPK-On-Behalf-Of", "accountant@corp.example"); r.status != 200 {
		t.Fatalf("body of exactly the limit: %d %s", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 {
		t.Fatalf("ERP stats %+v", st)
	}
}

func TestLedgerFailureGets503AndForwardsNothing(t *testing.T) {
	e := newEnv(t)
	if code := e.adminGet("/readyz", nil); code != 200 {
		t.Fatalf("readyz %d before the failure", code)
	}
	// The ledger goes away underneath the running proxy.
	if err := e.srv.Ledger().Close(); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 503 {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	if string(r.body) != `{"error":"ledger_unavailable"}` {
		t.Errorf("body %s", r.body)
	}
	r = e.do("POST", "/api/v1/journal-entries", accrual250k)
	if r.status != 503 {
		t.Fatalf("pending path: status %d", r.status)
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("ERP reached without a record: %+v", st)
	}
	var ready map[string]any
	if code := e.adminGet("/readyz", &ready); code != 503 {
		t.Errorf("readyz %d with a closed ledger: %v", code, ready)
	}
}

func TestChainHoldsOneDecisionPerRequestInOrderAndVerifies(t *testing.T) {
	e := newEnv(t)
	calls := []struct{ method, path, body, decision string }{
		{"POST", "/api/v1/reconciliations", reconciliation, "allow"},
		{"POST", "/api/v1/journal-entries", accrual250k, "pending"},
		{"POST", "/api/v1/journal-entries", adjust1200k, "pending"},
		{"PUT", "/api/v1/audit-log/AL-1", `{}`, "deny"},
		{"GET", "/api/v1/payroll/export", "", "deny"},
		{"GET", "/api/v1/accounts/1010-Cash/balance", "", "allow"},
	}
	var seqs []uint64
	for _, c := range calls {
		r := e.do(c.method, c.path, c.body, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
		seqs = append(seqs, seqHeader(t, r))
	}
	waitFor(t, func() bool { return e.srv.Ledger().Head().Seq >= seqs[len(seqs)-1]+1 })
	var requests []ledger.Record
	for _, rec := range e.records() {
		if rec.Kind == "request" {
			requests = append(requests, rec)
		}
	}
	if len(requests) != len(calls) {
		t.Fatalf("%d request records for %d calls", len(requests), len(calls))
	}
	for i, rec := range requests {
		if rec.Seq != seqs[i] || string(rec.Decision) != calls[i].decision {
			t.Errorf("call %d: record seq %d decision %s, want seq %d decision %s", i, rec.Seq, rec.Decision, seqs[i], calls[i].decision)
		}
	}
	var rep verifier.Report
	if code := e.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
		t.Fatalf("live verify %d %+v", code, rep)
	}
	if _, err := exec.LookPath("python3"); err == nil {
		out, err := exec.Command("python3", "../../examples/verify-chain/verify_chain.py", "--url", e.admin, "--header", "Authorization: Bearer "+e.token).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "ok:") {
			t.Errorf("independent verifier: %v: %s", err, out)
		}
	}
	// Offline, after a clean stop.
	e.stop()
	var stdout bytes.Buffer
	code := runCLI(t, &stdout, "verify", "--data-dir", e.opts.DataDir)
	if code != 0 || !strings.HasPrefix(stdout.String(), "ok: ") {
		t.Fatalf("verify exit %d: %s", code, stdout.String())
	}
}

func TestConcurrentRequestsShareCommitsAndKeepTheChain(t *testing.T) {
	e := newEnv(t)
	const n = 200
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/reconciliations", strings.NewReader(reconciliation))
			req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				bad.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed", bad.Load())
	}
	if st := e.erp.Stats(); st.Total != n {
		t.Fatalf("ERP saw %d, want %d", st.Total, n)
	}
	waitFor(t, func() bool { return e.srv.Ledger().Head().Seq >= 1+2*n })
	rep, err := verifier.Verify(context.Background(), e.srv.Ledger())
	if err != nil || !rep.OK {
		t.Fatalf("verify %+v %v", rep, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Header values that are not UTF-8 (or are huge) get an ordinary decision,
// never a 503: the ledger only takes valid UTF-8, so the gate cleans them.
func TestBadHeaderBytesAreRecordedNotRefused(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/reconciliations", reconciliation,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example",
		"X-UAPK-Justification", "bad \xff\xfe bytes "+strings.Repeat("j", 3000))
	if r.status != 200 {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	rec := e.record(seqHeader(t, r))
	j, _ := rec.Data["justification"].(string)
	if !strings.HasPrefix(j, "bad \uFFFD") || len(j) < 3000 {
		t.Errorf("justification recorded as %q...", j[:20])
	}
	r = e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-App", "financial-ai-assistant\xff",
		"X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 403 || r.json(t)["reason"] != "unknown_app" {
		t.Fatalf("app with a bad byte: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", "apr_\xff")
	if r.status != 409 || r.json(t)["reason"] != "not_approved" {
		t.Fatalf("approval id with a bad byte: %d %s", r.status, r.body)
	}
	if code, m := e.post("/v1/overrides", map[string]string{"action": "financial_report", "duration": "1h",
		"justification": "deadline \xff", "requested_by": "controller@corp.example"}); code != 201 {
		t.Fatalf("override with a bad byte in its justification: %d %v", code, m)
	}
}

// TestAmbiguousTargetsNeverReachTheERP: the path tricks an attack used (a
// double-encoded ..;, an encoded slash, dot and empty segments, ';', '\',
// an encoded unreserved letter, raw bytes that are not UTF-8) are refused
// 400 ambiguous_path and recorded; none reaches the ERP. Sent on a raw
// socket, so no client library tidies the target first.
func TestAmbiguousTargetsNeverReachTheERP(t *testing.T) {
	e := newEnv(t)
	e.clock.Set(businessHours)
	for _, tc := range []struct{ name, method, target string }{
		{"double-encoded ..; to the payroll export", "GET", "/api/v1/accounts/..%253B/..%253B/payroll/export"},
		{"encoded slash", "DELETE", "/api/v1/records%2fJE-1"},
		{"dot segments", "DELETE", "/api/v1/reconciliations/../records/JE-1"},
		{"empty segment", "DELETE", "/api/v1//records/JE-1"},
		{"path parameter", "GET", "/api/v1/accounts/1010;jsessionid=x/balance"},
		{"backslash", "GET", `/api/v1/accounts\1010\balance`},
		{"encoded unreserved letter", "GET", "/api/v1/%61ccounts/1010/balance"},
		{"malformed percent", "GET", "/api/v1/accounts/10%G0/balance"},
		{"0xff in the query", "DELETE", "/api/v1/records/JE-1?x=\xff"},
		{"a fragment the door would cut", "POST", "/api/v1/journal-entries#x"},
		{"a brace in the path", "GET", "/api/v1/accounts/{1010}/balance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.erp.Stats().Total
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.sidecar, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", tc.method, tc.target)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), `"reason":"ambiguous_path"`) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			seq, err := strconv.ParseUint(resp.Header.Get("X-UAPK-Record"), 10, 64)
			if err != nil {
				t.Fatalf("no record header: %v", resp.Header)
			}
			if r := e.record(seq); r.Reason != "ambiguous_path" || r.Decision != "deny" {
				t.Errorf("record %+v", r)
			}
			if got := e.erp.Stats().Total; got != before {
				t.Errorf("the ERP got %d requests", got-before)
			}
		})
	}
}

// TestPythonAgentReadsItsTooLargeAnswer: Python's http.client sends the
// whole body before it reads; the sidecar drains what is left of a body
// over --max-body so that such an agent reads its 413 instead of a reset.
func TestPythonAgentReadsItsTooLargeAnswer(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test: %v", err)
	}
	e := newEnv(t, func(o *serveOptions) { o.MaxBody = "64KiB" })
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(e.sidecar, "http://"))
	script := `import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)
c.request("POST", "/api/v1/journal-entries", body=b"x" * int(sys.argv[3]), headers={"Content-Type": "application/json"})
r = c.getresponse()
print(r.status, r.read().decode())`
	for _, size := range []string{"1048576", "4194304"} { // 16 and 64 times the limit
		out, err := exec.Command(py, "-c", script, host, port, size).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "413 ") || !strings.Contains(string(out), `"reason":"body_too_large"`) {
			t.Errorf("%s bytes: %v\n%s", size, err, out)
		}
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Errorf("the ERP got %d requests", st.Total)
	}
}
