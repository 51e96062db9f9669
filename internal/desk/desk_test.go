package desk_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

type fixture struct {
	t        testing.TB
	srv      *httptest.Server
	rp       passkey.RP
	svc      *approvals.Service
	l        *approvalstest.Ledger
	cfo, ctl *passkeytest.Authenticator
}

type headLedger struct{ l *approvalstest.Ledger }

func (h headLedger) Head() ledger.Head { return ledger.Head{Seq: uint64(len(h.l.Records()))} }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, cfo: passkeytest.New("ES256"), ctl: passkeytest.New("EdDSA"), l: &approvalstest.Ledger{}}
	type cred struct {
		ID  string `json:"credential_id"`
		Key string `json:"public_key"`
	}
	file := map[string]any{"principals": []any{
		map[string]any{"id": "cfo@corp.example", "roles": []string{"cfo"}, "webauthn": []cred{{f.cfo.CredentialID(), f.cfo.PublicKeyPEM()}}},
		map[string]any{"id": "controller@corp.example", "roles": []string{"controller"}, "webauthn": []cred{{f.ctl.CredentialID(), f.ctl.PublicKeyPEM()}}},
		map[string]any{"id": "accountant@corp.example", "roles": []string{"staff_accountant"}},
	}}
	data, _ := json.Marshal(file)
	ps, err := rules.ParsePrincipals(data, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := rules.LoadManifest("../../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, ps)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	f.srv = httptest.NewUnstartedServer(nil)
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	f.rp = passkey.RP{ID: "127.0.0.1", Origin: f.srv.URL} // tests only: browsers would want localhost
	f.svc, err = approvals.New(approvals.Config{Store: approvalstest.NewStore(f.l), Ledger: f.l, Tokens: iss, RP: &f.rp,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := desk.New(desk.Config{Approvals: f.svc, Principals: eng.Principals, RP: f.rp, Ledger: headLedger{f.l}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Config.Handler = d
	return f
}

// held makes a pending dual approval of the seed's $1.2M entry, with a body
// that tries to pass markup and hidden text to the approver.
func (f *fixture) held(body string) *approvals.Approval {
	f.t.Helper()
	a := f.svc.NewPending(approvals.Pending{App: "financial-ai-assistant", Method: "POST", URL: "http://erp/api/v1/journal-entries",
		Body: []byte(body), OnBehalfOf: "accountant@corp.example", Digest: strings.Repeat("ab", 32), Justification: "ASC 606 <b>criteria</b>",
		Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Reason: record.AmountOverCap, Amount: "1200000",
			Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}, ApprovalTTL: 24 * time.Hour}})
	if _, err := f.svc.Hold(a, ledger.Entry{Kind: record.KindRequest, Decision: record.Pending, ApprovalID: a.ID}); err != nil {
		f.t.Fatal(err)
	}
	return a
}

// browser is a cookie-keeping client that posts like the desk's pages.
type browser struct {
	f    *fixture
	c    *http.Client
	csrf string
}

func (f *fixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) post(path string, body any, headers ...string) (int, map[string]any) {
	b.f.t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", b.f.srv.URL+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", b.f.rp.Origin)
	req.Header.Set("X-CSRF-Token", b.csrf)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func (b *browser) get(path string) (int, string, http.Header) {
	b.f.t.Helper()
	resp, err := b.c.Get(b.f.srv.URL + path)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if m := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindStringSubmatch(string(raw)); m != nil {
		b.csrf = m[1]
	}
	return resp.StatusCode, string(raw), resp.Header
}

func (b *browser) signin(who string, au *passkeytest.Authenticator) {
	b.f.t.Helper()
	code, begin := b.post("/ui/signin/begin", map[string]string{"principal": who})
	if code != 200 {
		b.f.t.Fatalf("begin: %d %v", code, begin)
	}
	ch, _ := jsonB64(begin["challenge"].(string))
	if code, m := b.post("/ui/signin/finish", au.Assert(b.f.rp, ch)); code != 200 {
		b.f.t.Fatalf("finish: %d %v", code, m)
	}
	b.get("/ui/")
}

// decide runs the page's two steps: the challenge, then the assertion.
func (b *browser) decide(id, decision, reason string, au *passkeytest.Authenticator) (int, map[string]any) {
	b.f.t.Helper()
	code, begin := b.post("/ui/approvals/"+id+"/challenge", map[string]string{"decision": decision})
	if code != 200 {
		return code, begin
	}
	ch, _ := jsonB64(begin["challenge"].(string))
	return b.post("/ui/approvals/"+id+"/decide", map[string]any{"reason": reason, "webauthn": au.Assert(b.f.rp, ch)})
}

// TestDeskDualApproval: the CFO and the controller sign in with passkeys
// and approve the seed's entry; the controller sees the CFO's approval
// first. The body is shown escaped, with hidden characters made visible.
func TestDeskDualApproval(t *testing.T) {
	f := newFixture(t)
	a := f.held(`{"account":"4000-Revenue","amount":1200000,"currency":"USD","memo":"<script>alert(1)</script>` + "\u202e" + `gpj.exe","supporting_docs":["contract_q3.pdf"]}`)
	cfo := f.browser()
	cfo.signin("cfo@corp.example", f.cfo)
	code, page, h := cfo.get("/ui/")
	if code != 200 || !strings.Contains(page, a.ID) || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("queue: %d %v\n%s", code, h, page)
	}
	_, page, _ = cfo.get("/ui/approvals/" + a.ID)
	for _, want := range []string{"1,200,000 USD", "contract_q3.pdf", "&lt;script&gt;", `\u202E`, "ASC 606 &lt;b&gt;criteria&lt;/b&gt;", `id="approve"`} {
		if !strings.Contains(page, want) {
			t.Errorf("approval page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>alert") || strings.Contains(page, "\u202e") {
		t.Error("approval page shows the body's markup or hidden characters raw")
	}
	if code, m := cfo.decide(a.ID, approvals.Approve, "ASC 606 criteria met", f.cfo); code != 200 || m["status"] != "pending" {
		t.Fatalf("cfo: %d %v", code, m)
	}
	ctl := f.browser()
	ctl.signin("controller@corp.example", f.ctl)
	_, page, _ = ctl.get("/ui/approvals/" + a.ID)
	if !strings.Contains(page, "cfo@corp.example</strong> as cfo: approve") || !strings.Contains(page, "passkey") {
		t.Errorf("the controller does not see the CFO's approval:\n%s", page)
	}
	if code, m := ctl.decide(a.ID, approvals.Approve, "agreed", f.ctl); code != 200 || m["status"] != "approved" {
		t.Fatalf("controller: %d %v", code, m)
	}
	got, _ := f.svc.Get(a.ID)
	if got.Status != approvals.StatusApproved || got.Decisions[0].WebAuthn == nil || got.Decisions[1].WebAuthn == nil {
		t.Fatalf("approval %+v", got)
	}
	// The CFO's queue no longer lists it; the history does.
	_, page, _ = cfo.get("/ui/history?status=approved")
	if !strings.Contains(page, a.ID) {
		t.Error("history lacks the approved entry")
	}
}

// TestDeskRefusals: without a session nothing but the sign-in pages; a
// post without the session's CSRF token, from another origin, or with a
// challenge that is another's, used or made up is refused and decides
// nothing; another person's passkey does not sign one in.
func TestDeskRefusals(t *testing.T) {
	f := newFixture(t)
	a := f.held(`{"amount":1200000}`)
	anon := f.browser()
	if code, _, h := anon.get("/ui/"); code != http.StatusSeeOther || h.Get("Location") != "/ui/signin" {
		t.Errorf("no session: %d %v", code, h)
	}
	if code, m := anon.post("/ui/approvals/"+a.ID+"/challenge", map[string]string{"decision": "approve"}); code != 401 {
		t.Errorf("no session, post: %d %v", code, m)
	}
	// The controller's passkey answering the CFO's sign-in.
	_, begin := anon.post("/ui/signin/begin", map[string]string{"principal": "cfo@corp.example"})
	ch, _ := jsonB64(begin["challenge"].(string))
	if code, m := anon.post("/ui/signin/finish", f.ctl.Assert(f.rp, ch)); code != 403 || m["error"] != "unknown_approver" {
		t.Errorf("another's passkey: %d %v", code, m)
	}
	// A challenge answered twice.
	_, begin = anon.post("/ui/signin/begin", map[string]string{"principal": "cfo@corp.example"})
	ch, _ = jsonB64(begin["challenge"].(string))
	as := f.cfo.Assert(f.rp, ch)
	if code, _ := anon.post("/ui/signin/finish", as); code != 200 {
		t.Fatalf("sign-in: %d", code)
	}
	if code, m := f.browser().post("/ui/signin/finish", as); code != 403 || m["error"] != "bad_challenge" {
		t.Errorf("replayed sign-in: %d %v", code, m)
	}
	if code, m := anon.post("/ui/signin/begin", map[string]string{"principal": "accountant@corp.example"}); code != 403 {
		t.Errorf("a principal without passkeys: %d %v", code, m)
	}

	cfo := f.browser()
	cfo.signin("cfo@corp.example", f.cfo)
	good := cfo.csrf
	cfo.csrf = "forged"
	if code, m := cfo.post("/ui/approvals/"+a.ID+"/challenge", map[string]string{"decision": "approve"}); code != 403 || m["error"] != "bad_csrf" {
		t.Errorf("no CSRF token: %d %v", code, m)
	}
	cfo.csrf = good
	if code, m := cfo.post("/ui/approvals/"+a.ID+"/challenge", map[string]string{"decision": "approve"}, "Origin", "https://evil.example"); code != 403 || m["error"] != "bad_origin" {
		t.Errorf("another origin: %d %v", code, m)
	}
	// An assertion over a challenge the desk never gave.
	made := f.cfo.Assert(f.rp, passkey.Challenge([]byte("uapk-approval-v1\n"+a.ID)))
	if code, m := cfo.post("/ui/approvals/"+a.ID+"/decide", map[string]any{"reason": "x", "webauthn": made}); code != 403 || m["error"] != "bad_challenge" {
		t.Errorf("made-up challenge: %d %v", code, m)
	}
	// A rejection needs a reason.
	if code, m := cfo.decide(a.ID, approvals.Reject, " ", f.cfo); code != 400 {
		t.Errorf("rejection without a reason: %d %v", code, m)
	}
	got, _ := f.svc.Get(a.ID)
	if len(got.Decisions) != 0 {
		t.Fatalf("refused posts decided: %+v", got.Decisions)
	}
	// Signed out, the session is gone.
	cfo.post("/ui/signout", map[string]string{})
	if code, _, _ := cfo.get("/ui/"); code != http.StatusSeeOther {
		t.Errorf("after sign-out: %d", code)
	}
}

// TestDeskEnrollShowsTheEntry: enrolment returns the principals-file entry
// for the new credential and refuses keys no decision could be checked
// with.
func TestDeskEnrollShowsTheEntry(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	au := passkeytest.New("ES256")
	der := pemDER(t, au.PublicKeyPEM())
	code, m := b.post("/ui/enroll/entry", map[string]string{"principal": "cfo@corp.example", "credential_id": au.CredentialID(), "public_key": passkey.Encode(der)})
	entry, _ := m["entry"].(string)
	if code != 200 || !strings.Contains(entry, "credential_id: "+au.CredentialID()) || !strings.Contains(entry, "BEGIN PUBLIC KEY") {
		t.Fatalf("%d %v", code, m)
	}
	// The entry parses as a principals file once the role is filled in.
	doc := "principals:\n" + strings.Replace(entry, "[ROLE]", "[cfo]", 1)
	if _, err := rules.ParsePrincipals([]byte(doc), t.TempDir()); err != nil {
		t.Errorf("the entry does not load: %v\n%s", err, doc)
	}
	if code, _ := b.post("/ui/enroll/entry", map[string]string{"principal": "CFO@corp.example", "credential_id": au.CredentialID(), "public_key": passkey.Encode(der)}); code != 400 {
		t.Errorf("a non-canonical id: %d", code)
	}
	if code, _ := b.post("/ui/enroll/entry", map[string]string{"principal": "cfo@corp.example", "credential_id": au.CredentialID(), "public_key": "AAAA"}); code != 400 {
		t.Errorf("a key that is not one: %d", code)
	}
}

func jsonB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func pemDER(t *testing.T, s string) []byte {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		t.Fatal("no PEM")
	}
	return blk.Bytes
}

func TestGrouped(t *testing.T) {
	for in, want := range map[string]string{"1200000": "1,200,000", "1200000.50": "1,200,000.50", "999": "999", "-1000": "-1,000",
		"": "", "1e6": "1e6", "12,5": "12,5", "1000000.": "1,000,000."} {
		if got := desk.Grouped(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestDeskSignInCannotBeCrowdedOut: a caller asking for sign-in challenges
// without end, for every principal, neither grows the desk nor keeps the
// CFO from signing in.
func TestDeskSignInCannotBeCrowdedOut(t *testing.T) {
	f := newFixture(t)
	flood := f.browser()
	for i := 0; i < 500; i++ {
		for _, who := range []string{"cfo@corp.example", "controller@corp.example"} {
			if code, m := flood.post("/ui/signin/begin", map[string]string{"principal": who}); code != 200 {
				t.Fatalf("begin %d: %d %v", i, code, m)
			}
		}
	}
	if n := desk.Outstanding(f.srv.Config.Handler.(*desk.Desk)); n > 16 {
		t.Fatalf("%d challenges outstanding after the flood, want at most 16", n)
	}
	f.browser().signin("cfo@corp.example", f.cfo)
}

// TestDeskDecisionChallengesAreTheSessions: a decision challenge is the
// statement's hash, which the agent can compute; another caller, signed in
// or not, cannot spend it, so the approver's rejection still lands.
func TestDeskDecisionChallengesAreTheSessions(t *testing.T) {
	f := newFixture(t)
	a := f.held(`{"amount":1200000}`)
	cfo := f.browser()
	cfo.signin("cfo@corp.example", f.cfo)
	code, begin := cfo.post("/ui/approvals/"+a.ID+"/challenge", map[string]string{"decision": "reject"})
	if code != 200 {
		t.Fatalf("challenge: %d %v", code, begin)
	}
	ch := begin["challenge"].(string)
	spoof := passkey.Assertion{ClientDataJSON: passkey.Encode([]byte(`{"challenge":"` + ch + `"}`))}
	agent := f.browser()
	agent.post("/ui/signin/finish", spoof)
	ctl := f.browser()
	ctl.signin("controller@corp.example", f.ctl)
	ctl.post("/ui/approvals/"+a.ID+"/decide", map[string]any{"reason": "x", "webauthn": spoof})
	raw, _ := jsonB64(ch)
	code, m := cfo.post("/ui/approvals/"+a.ID+"/decide", map[string]any{"reason": "wrong period", "webauthn": f.cfo.Assert(f.rp, raw)})
	if code != 200 || m["status"] != "rejected" {
		t.Fatalf("the CFO's rejection after others tried her challenge: %d %v", code, m)
	}
}
