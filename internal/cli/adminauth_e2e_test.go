package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// withTokens serves with an --admin-tokens file holding one token per
// scope ("tok-read", ...) and "tok-all" with every scope; the env's own
// calls use tok-all.
func withTokens(e *env) func(*serveOptions) {
	return func(o *serveOptions) {
		doc := "tokens:\n"
		for _, s := range adminauth.Scopes {
			doc += "  - {name: " + string(s) + "-tool, sha256: " + adminauth.Hash("tok-"+string(s)) + ", scopes: [" + string(s) + "]}\n"
		}
		doc += "  - {name: all, sha256: " + adminauth.Hash("tok-all") + ", scopes: [read, decide, override, evidence]}\n"
		p := filepath.Join(filepath.Dir(o.Principals), "tokens.yaml")
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			panic(err)
		}
		o.AdminTokens = p
		o.refusalEvery = time.Hour // summed up at stop: one record, whatever the count
		e.token = "tok-all"
	}
}

type adminCall struct {
	method, path, body string
	scope              adminauth.Scope // "" : any recognised token
}

func (e *env) adminDo(c adminCall, token string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(c.method, e.admin+c.path, strings.NewReader(c.body))
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestAdminAPIWantsATokenWithTheScope: every admin endpoint but the public
// ones answers 401 without a token and 403 without its scope, with the
// reason; no answer to any token carries a capability token, and an
// override's token goes only to scope override. The refusals are counted
// in the metrics and summed up in one ledger record, not one each.
func TestAdminAPIWantsATokenWithTheScope(t *testing.T) {
	var e *env
	holder := &env{}
	e = newEnv(t, withTokens(holder))
	e.token = holder.token

	// An approved journal entry (a capability token issued) and an
	// approved override (an override token issued).
	r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 202 {
		t.Fatalf("accrual: %d %s", r.status, r.body)
	}
	entry := r.header.Get("X-UAPK-Approval-Id")
	if code, m := e.decide(entry, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("fm: %d %v", code, m)
	}
	ov := requestOverride(t, e)
	if code, m := e.decide(ov, "cfo@corp.example", "cfo", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("cfo: %d %v", code, m)
	}
	head := e.srv.Ledger().Head().Seq

	sub, _ := json.Marshal(map[string]string{"approver": "fm@corp.example", "decision": "approve", "reason": "x",
		"signed_at": e.clock.Now().Format(time.RFC3339), "signature": "AAAA"})
	protected := []adminCall{
		{"GET", "/v1/ledger/head", "", adminauth.Read},
		{"GET", "/v1/ledger/verify", "", adminauth.Read},
		{"GET", "/v1/ledger/records?from=1", "", adminauth.Read},
		{"GET", "/v1/approvals", "", adminauth.Read},
		{"GET", "/v1/approvals?status=approved", "", adminauth.Read},
		{"GET", "/v1/approvals/" + entry, "", adminauth.Read},
		{"GET", "/v1/approvals/" + ov, "", adminauth.Read},
		{"GET", "/v1/overrides/" + ov, "", adminauth.Read},
		{"POST", "/v1/approvals/" + entry + "/decisions", string(sub), adminauth.Decide},
		{"POST", "/v1/overrides", `{"action":"journal_entry","duration":"1h","justification":"j","requested_by":"accountant@corp.example"}`, adminauth.Override},
		{"POST", "/v1/evidence", `{"from":"2026-01-01","to":"2027-12-31","framework":"SOX"}`, adminauth.Evidence},
		{"GET", "/v1/no-such-endpoint", "", ""},
	}
	refusals := 0
	for _, c := range protected {
		for _, tok := range []string{"", "not-a-token", "Bearer-less"} {
			code, body := e.adminDo(c, tok)
			want := `"reason": "bad_token"`
			if tok == "" {
				want = `"reason": "missing_token"`
			}
			if code != 401 || !strings.Contains(string(body), `"error": "unauthenticated"`) || !strings.Contains(string(body), want) {
				t.Errorf("%s %s with %q: %d %s, want 401 %s", c.method, c.path, tok, code, body, want)
			}
			refusals++
		}
		for _, s := range adminauth.Scopes {
			if c.scope == "" || s == c.scope || (c.path == "/v1/overrides/"+ov && s == adminauth.Override) {
				continue
			}
			code, body := e.adminDo(c, "tok-"+string(s))
			if code != 403 || !strings.Contains(string(body), `"reason": "missing_scope"`) || !strings.Contains(string(body), string(c.scope)) {
				t.Errorf("%s %s with scope %s: %d %s, want 403 naming scope %s", c.method, c.path, s, code, body, c.scope)
			}
			refusals++
		}
	}
	if got := e.srv.Ledger().Head().Seq; got != head {
		t.Fatalf("refused admin calls wrote %d records", got-head)
	}

	// The public endpoints need no token.
	for _, p := range []string{"/livez", "/readyz", "/metrics", "/v1/keys/gateway"} {
		if code, body := e.adminDo(adminCall{"GET", p, "", ""}, ""); code != 200 {
			t.Errorf("GET %s without a token: %d %s", p, code, body)
		}
	}
	if code, _ := e.adminDo(adminCall{"GET", "/ca.pem", "", ""}, ""); code != 404 {
		t.Errorf("GET /ca.pem without a CA: %d, want 404 (not 401)", code)
	}

	// No answer to any token, however scoped, carries a bearer token,
	// except an override's to scope override.
	for _, c := range protected {
		if c.method != "GET" {
			continue
		}
		for _, tok := range []string{"tok-read", "tok-all", "tok-override"} {
			code, body := e.adminDo(c, tok)
			if code == 403 {
				refusals++ // tok-override reads only overrides
			}
			if code/100 != 2 {
				continue
			}
			has := bytes.Contains(body, []byte("v4.public."))
			wantToken := c.path == "/v1/overrides/"+ov && tok != "tok-read"
			if has != wantToken {
				t.Errorf("GET %s to %s: carries a token %v, want %v", c.path, tok, has, wantToken)
			}
		}
	}
	// What decide and override scopes may do, they do.
	if code, body := e.adminDo(protected[9], "tok-override"); code != 201 || bytes.Contains(body, []byte("v4.public.")) {
		t.Errorf("override request with scope override: %d %s", code, body)
	}
	if code, body := e.adminDo(protected[10], "tok-evidence"); code != 200 || !bytes.HasPrefix(body, []byte("PK")) {
		t.Errorf("evidence with scope evidence: %d %.80q", code, body)
	}

	// The refusals are counted in the metrics...
	_, metrics := e.adminDo(adminCall{"GET", "/metrics", "", ""}, "")
	var counted float64
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, "uapk_admin_refused_total{") {
			var n float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n); err == nil {
				counted += n
			}
		}
	}
	if int(counted) != refusals {
		t.Errorf("uapk_admin_refused_total sums to %v, want %d", counted, refusals)
	}
	// ...and summed up in one record when the period ends (here: at stop).
	dataDir := e.opts.DataDir
	e.stop()
	l, err := ledger.Open(filepath.Join(dataDir, "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var summaries []ledger.Record
	l.Range(head+1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var rec ledger.Record
		json.Unmarshal(raw, &rec)
		if rec.Reason == "admin_refused" {
			summaries = append(summaries, rec)
		}
		return nil
	})
	if len(summaries) != 1 {
		t.Fatalf("%d summary records, want 1", len(summaries))
	}
	d := summaries[0].Data
	if d["door"] != "admin" || int(d["refused"].(float64)) != refusals || summaries[0].Decision != "deny" ||
		int(d["missing_token"].(float64))+int(d["bad_token"].(float64))+int(d["missing_scope"].(float64)) != refusals {
		t.Errorf("summary %+v, want %d refusals", summaries[0], refusals)
	}
}

// TestCLIFindsTheAdminToken: the approver's commands find the token serve
// generated under the data directory, or take it by flag or environment;
// without one they say how to give it, and a wrong one is the server's 401.
func TestCLIFindsTheAdminToken(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/journal-entries", accrual250k)
	id := r.header.Get("X-UAPK-Approval-Id")
	var out bytes.Buffer
	if code := runCLI(t, &out, "pending", "--admin", e.admin, "--data-dir", e.opts.DataDir); code != 0 || !strings.Contains(out.String(), id) {
		t.Fatalf("pending --data-dir: exit %d: %s", code, out.String())
	}
	out.Reset()
	t.Setenv("UAPK_ADMIN_TOKEN", e.token)
	if code := runCLI(t, &out, "show", id, "--admin", e.admin, "--data-dir", t.TempDir()); code != 0 || !strings.Contains(out.String(), id) {
		t.Fatalf("show with UAPK_ADMIN_TOKEN: exit %d: %s", code, out.String())
	}
	t.Setenv("UAPK_ADMIN_TOKEN", "")
	out.Reset()
	if code := runCLI(t, &out, "pending", "--admin", e.admin, "--data-dir", t.TempDir()); code != 2 ||
		!strings.Contains(out.String(), "no admin token") || !strings.Contains(out.String(), "--admin-token") {
		t.Fatalf("no token: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := runCLI(t, &out, "pending", "--admin", e.admin, "--admin-token", "wrong"); code != 1 ||
		!strings.Contains(out.String(), "401") || !strings.Contains(out.String(), "bad_token") {
		t.Fatalf("wrong token: exit %d: %s", code, out.String())
	}
}

// TestAdminTokensRevokedWithoutRestart: a token taken out of the
// --admin-tokens file stops working within a second or so, no restart.
func TestAdminTokensRevokedWithoutRestart(t *testing.T) {
	holder := &env{}
	e := newEnv(t, withTokens(holder))
	e.token = holder.token
	call := adminCall{"GET", "/v1/ledger/head", "", adminauth.Read}
	if code, body := e.adminDo(call, "tok-read"); code != 200 {
		t.Fatalf("before: %d %s", code, body)
	}
	doc := "tokens:\n  - {name: all, sha256: " + adminauth.Hash("tok-all") + ", scopes: [read, decide, override, evidence]}\n"
	tmp := e.opts.AdminTokens + ".new"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.opts.AdminTokens); err != nil {
		t.Fatal(err)
	}
	code := 0
	for i := 0; i < 50; i++ { // the file is looked at once a second
		if code, _ = e.adminDo(call, "tok-read"); code == 401 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 401 {
		t.Fatalf("revoked token still answered %d", code)
	}
	if code, _ := e.adminDo(call, "tok-all"); code != 200 {
		t.Fatalf("the token kept: %d", code)
	}
}

// TestApprovalsArePaged: GET /v1/approvals answers pages (limit, cursor),
// and the CLI's pending lists every page.
func TestApprovalsArePaged(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := 0; i < 3; i++ {
		r := e.do("POST", "/api/v1/journal-entries", fmt.Sprintf(`{"account":"4000-Revenue","credit":%d}`, 250000+i))
		ids = append(ids, r.header.Get("X-UAPK-Approval-Id"))
	}
	var p1 struct {
		Approvals []struct{ ID string }
		Total     int
		Next      string `json:"next_cursor"`
	}
	if code := e.adminGet("/v1/approvals?status=pending&limit=2", &p1); code != 200 || len(p1.Approvals) != 2 || p1.Total != 3 || p1.Next == "" {
		t.Fatalf("page 1: %d %+v", code, p1)
	}
	var p2 struct {
		Approvals []struct{ ID string }
		Next      string `json:"next_cursor"`
	}
	if code := e.adminGet("/v1/approvals?status=pending&limit=2&cursor="+p1.Next, &p2); code != 200 || len(p2.Approvals) != 1 || p2.Next != "" {
		t.Fatalf("page 2: %d %+v", code, p2)
	}
	got := map[string]bool{p1.Approvals[0].ID: true, p1.Approvals[1].ID: true, p2.Approvals[0].ID: true}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("%s on no page", id)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=apr_aaaaaaaaaaaaaaaaaaaaaaaaaa"} {
		if code := e.adminGet("/v1/approvals?status=pending&"+q, nil); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
	var out bytes.Buffer
	if code := runCLI(t, &out, "pending", "--admin", e.admin, "--admin-token", e.token); code != 0 || strings.Count(out.String(), "apr_") != 3 {
		t.Errorf("pending: %d %s", code, out.String())
	}
}

// TestCheckConfigAndTokens: check validates a config file's every section
// and a tokens file as serve would, each problem on its line.
func TestCheckConfigAndTokens(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("ui:\n  url: http://desk.corp.example\nnotify:\n  email: {smtp: nohost, from: x}\nidentity:\n  jwks: http://idp/jwks\nbogus: 1\nmax_body: lots\nlog_level: loud\nupstream_timeout: soon\nadmin_tokens: /nonexistent\n"), 0o600)
	var out bytes.Buffer
	code := runCLI(t, &out, "check", "../../examples/manifests/sox-financial.json", "--config", bad)
	for _, want := range []string{`unknown key "bogus"`, "ui.url", "notify.email.smtp", "notify.email.from", "identity.jwks", "identity.issuer",
		"max_body", "log_level", "upstream_timeout", "admin_tokens"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check --config lacks %q:\n%s", want, out.String())
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("ui:\n  url: https://desk.corp.example\nnotify:\n  webhooks:\n    - {url: \"https://hooks.example/x\", format: slack}\nmax_body: 4MiB\n"), 0o600)
	tokens := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(tokens, []byte("tokens:\n  - {name: a, sha256: "+adminauth.Hash("x")+", scopes: [read]}\n"), 0o600)
	out.Reset()
	if code := runCLI(t, &out, "check", "../../examples/manifests/sox-financial.json", "--config", good, "--admin-tokens", tokens); code != 0 {
		t.Errorf("good config: exit %d\n%s", code, out.String())
	}
}
