package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/hub"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/mailpittest"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
)

// hubToken is the admin token every hub of a test's fleet accepts.
const hubToken = "tok-hub-fleet"

// fleet is three proxies over one PostgreSQL and two hubs behind a
// round-robin load balancer.
type fleet struct {
	dsn     string
	proxies []*env // proxy-a, proxy-b, proxy-c
	lb      *env   // the load balancer in front of the hubs, as an admin API
	tokens  string // the hubs' --admin-tokens file
}

func newFleet(t *testing.T, tweak ...func(*serveOptions)) *fleet {
	t.Helper()
	pg := pgtest.Start(t)
	f := &fleet{dsn: pg.NewDB(t)}
	a := newEnv(t, append([]func(*serveOptions){withHold("2m"), withFleet(f.dsn, "proxy-a")}, tweak...)...)
	f.proxies = []*env{a}
	for _, name := range []string{"proxy-b", "proxy-c"} {
		e := newEnv(t, withFleet(f.dsn, name), func(o *serveOptions) {
			// The same people with the same keys, the same ERP; A alone
			// holds journal entries on the agent's connection.
			o.Principals, o.Upstream = a.opts.Principals, a.opts.Upstream
		})
		e.keyDir, e.erp = a.keyDir, a.erp
		f.proxies = append(f.proxies, e)
	}
	f.tokens = writeHubTokens(t)
	var backends []*url.URL
	for i := 0; i < 2; i++ {
		h := f.startHub(t, 8*time.Second)
		u, _ := url.Parse("http://" + h.AdminAddr.String())
		backends = append(backends, u)
	}
	var next atomic.Uint64
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(backends[next.Add(1)%uint64(len(backends))])
	}})
	t.Cleanup(lb.Close)
	f.lb = &env{t: t, admin: lb.URL, token: hubToken, keyDir: a.keyDir, clock: a.clock}
	return f
}

// writeHubTokens writes an admin tokens file accepting hubToken with
// every scope.
func writeHubTokens(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub-tokens.yaml")
	doc := "tokens:\n  - {name: fleet, sha256: " + adminauth.Hash(hubToken) + ", scopes: [read, decide, override, evidence]}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startHub runs `hub` over the fleet's database until the test ends.
func (f *fleet) startHub(t *testing.T, wait time.Duration) *hub.Hub {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(cfg, []byte("approvals:\n  postgres: "+f.dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &hubOptions{Config: cfg, Principals: f.proxies[0].opts.Principals, AdminAddr: "127.0.0.1:0",
		AdminTokens: f.tokens, LogLevel: "info", Grace: 5 * time.Second, Wait: wait, now: f.proxies[0].clock.Now}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *hub.Hub, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- runHub(ctx, o, logs, func(h *hub.Hub) { started <- h }) }()
	var h *hub.Hub
	select {
	case h = <-started:
	case err := <-done:
		t.Fatalf("hub: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	return h
}

// pendingID waits until the hub lists exactly one pending approval and
// returns its id.
func (f *fleet) pendingID(t *testing.T, not ...string) string {
	t.Helper()
	for i := 0; i < 300; i++ {
		var list struct{ Approvals []struct{ ID string } }
		f.lb.adminGet("/v1/approvals?status=pending", &list)
		for _, a := range list.Approvals {
			if !contains(not, a.ID) {
				return a.ID
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the hub never listed the held request's approval")
	return ""
}

// waitStatus polls e's admin API, for up to 10 s, until approval id has
// status want, and returns the status it last read.
func waitStatus(e *env, id, want string) string {
	var got approvals.Approval
	for i := 0; i < 100; i++ {
		if e.adminGet("/v1/approvals/"+id, &got); got.Status == want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got.Status
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// approvalRecords counts the approval records for id in e's ledger, and
// how many of them are refusals.
func approvalRecords(t *testing.T, e *env, id string) (n, refused int) {
	t.Helper()
	var recs []struct {
		Kind       string `json:"kind"`
		ApprovalID string `json:"approval_id"`
		Decision   string `json:"decision"`
	}
	if code := e.adminGet("/v1/ledger/records?from=1", &recs); code != 200 {
		t.Fatalf("records: %d", code)
	}
	for _, r := range recs {
		if r.Kind == "approval" && r.ApprovalID == id {
			n++
			if r.Decision == "refuse" || r.Decision == "refused" {
				refused++
			}
		}
	}
	return n, refused
}

// TestFleetHub: two hubs behind a load balancer over three proxies. A
// decision posted to a hub is decided by the proxy holding the request,
// against its principals, in its ledger, and releases the request within
// a second; the ERP sees it once and a retry elsewhere gets 409 consumed.
// A forged signature posted to a hub is refused and recorded by that
// proxy. Two approvers deciding through different hubs complete a dual
// approval. With the holder gone another proxy takes the decision; with
// every proxy gone the hub answers 202 queued, and the decision is taken
// when a proxy comes back.
func TestFleetHub(t *testing.T) {
	f := newFleet(t)
	a, b, c := f.proxies[0], f.proxies[1], f.proxies[2]

	// Held at A, approved through the hubs.
	done := make(chan reply, 1)
	go func() {
		done <- a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}()
	id := f.pendingID(t)
	// A forged signature first: refused by A, and recorded there.
	if code, m := f.lb.decide(id, "fm@corp.example", "cfo", "approve", f.lb.clock.Now()); code != 403 || m["reason"] != "bad_signature" {
		t.Fatalf("a decision signed with another's key, through the hub: %d %v", code, m)
	}
	if n, _ := approvalRecords(t, a, id); n != 1 {
		t.Fatalf("A's ledger has %d approval records for the refused decision, want 1", n)
	}
	start := time.Now()
	code, m := f.lb.decide(id, "fm@corp.example", "fm", "approve", f.lb.clock.Now())
	if code != 200 || m["status"] != "approved" {
		t.Fatalf("approval through the hub: %d %v", code, m)
	}
	select {
	case r := <-done:
		if r.status != 201 {
			t.Fatalf("held at A: %d %s", r.status, r.body)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("released %v after the decision was posted to the hub, want within 1 s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request held at A was not released within 5 s of the decision at the hub")
	}
	if n := a.erp.Stats().Total; n != 1 {
		t.Fatalf("the ERP saw %d requests", n)
	}
	if n, _ := approvalRecords(t, a, id); n != 2 {
		t.Errorf("A's ledger has %d approval records for %s, want the refusal and the decision", n, id)
	}
	for _, e := range []*env{b, c} {
		if n, _ := approvalRecords(t, e, id); n != 0 {
			t.Errorf("%s recorded %d decisions on an approval A holds", e.opts.Config, n)
		}
	}
	if r := b.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 409 || r.json(t)["reason"] != "consumed" {
		t.Fatalf("retry at B: %d %s", r.status, r.body)
	}
	// The hub keeps no ledger, and says where to look.
	var noLedger map[string]any
	if code := f.lb.adminGet("/v1/ledger/head", &noLedger); code != 404 || noLedger["error"] != "no_ledger" {
		t.Errorf("GET /v1/ledger/head at the hub: %d %v", code, noLedger)
	}

	// Dual approval above the cap, held at B: the CFO and the controller
	// decide through different hubs (the balancer alternates).
	big := `{"account":"4000-Revenue","credit":1200000}`
	r := b.do("POST", "/api/v1/journal-entries", big, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id2 := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id2 == "" {
		t.Fatalf("entry above the cap: %d %s", r.status, r.body)
	}
	if code, m := f.lb.decide(id2, "cfo@corp.example", "cfo", "approve", f.lb.clock.Now()); code != 200 || m["status"] != "pending" {
		t.Fatalf("CFO through a hub: %d %v", code, m)
	}
	if code, m := f.lb.decide(id2, "controller@corp.example", "controller", "approve", f.lb.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("controller through the other hub: %d %v", code, m)
	}
	// 50 retries of it at once, spread over the three proxies: one ERP call.
	before := a.erp.Stats().Total
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		e := f.proxies[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("POST", "/api/v1/journal-entries", big, "X-UAPK-Approval-Id", id2)
			mu.Lock()
			codes[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got := a.erp.Stats().Total - before; got != 1 || codes[201] != 1 || codes[409] != 49 {
		t.Fatalf("50 retries over three proxies: the ERP saw %d, answers %v", got, codes)
	}
	if n, _ := approvalRecords(t, b, id2); n != 2 {
		t.Errorf("B, holding %s, recorded %d decisions, want 2", id2, n)
	}

	// The holder is gone: after the grace another proxy takes the decision.
	r = c.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":300000}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id3 := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id3 == "" {
		t.Fatalf("entry at C: %d %s", r.status, r.body)
	}
	c.stop()
	c.srv = nil
	if code, m := f.lb.decide(id3, "fm@corp.example", "fm", "approve", f.lb.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("decision on C's approval with C gone: %d %v", code, m)
	}
	na, _ := approvalRecords(t, a, id3)
	nb, _ := approvalRecords(t, b, id3)
	if na+nb != 1 {
		t.Fatalf("with C gone, A recorded %d and B %d decisions on %s, want one in all", na, nb, id3)
	}
	if r := a.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":300000}`, "X-UAPK-Approval-Id", id3); r.status != 201 {
		t.Fatalf("retry of C's approval at A: %d %s", r.status, r.body)
	}

	// Every proxy gone: a hub that waits half a second answers 202 queued,
	// and a proxy coming back decides it.
	r = b.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":310000}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id4 := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id4 == "" {
		t.Fatalf("entry at B: %d %s", r.status, r.body)
	}
	a.stop()
	a.srv = nil
	b.stop()
	b.srv = nil
	quick := f.startHub(t, 500*time.Millisecond)
	qe := &env{t: t, admin: "http://" + quick.AdminAddr.String(), token: hubToken, keyDir: a.keyDir, clock: a.clock}
	code, m = qe.decide(id4, "fm@corp.example", "fm", "approve", qe.clock.Now())
	if code != 202 || m["status"] != "queued" {
		t.Fatalf("a decision with no proxy up: %d %v", code, m)
	}
	b.start()
	if got := waitStatus(qe, id4, approvals.StatusApproved); got != approvals.StatusApproved {
		t.Fatalf("the queued decision was not taken when B came back: %s", got)
	}
	// Every chain still verifies.
	for _, e := range []*env{b} {
		var rep struct{ OK bool }
		if code := e.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
			t.Errorf("chain: %d %v", code, rep)
		}
	}
}

// TestHubConfig: the hub refuses what it cannot serve, naming each problem.
func TestHubConfig(t *testing.T) {
	dir := t.TempDir()
	noPG := filepath.Join(dir, "nopg.yaml")
	os.WriteFile(noPG, []byte("ui:\n  url: http://localhost:8090\n"), 0o600)
	proxyCfg := filepath.Join(dir, "proxy.yaml")
	os.WriteFile(proxyCfg, []byte("approvals:\n  postgres: postgres://u@127.0.0.1:1/db\nnotify:\n  email: {smtp: 'localhost:25', from: a@b.c}\narchive:\n  segment_records: 5\nmanifest: x.json\n"), 0o600)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no config", nil, []string{"--config is required"}},
		{"no postgres", []string{"--config", noPG}, []string{"approvals.postgres is required"}},
		{"a proxy's config", []string{"--config", proxyCfg}, []string{`unknown key "manifest"`, "archive: the hub keeps no ledger", "notify: the hub sends no notifications"}},
		{"bad wait", []string{"--config", noPG, "--wait", "0s"}, []string{"--wait must be positive"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := runCLI(t, &out, append([]string{"hub", "--admin-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, tc.args...)...)
			if code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("missing %q in:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestApproveQueued: the CLI says a decision a hub queued is queued, not
// that the approval's status is "queued".
func TestApproveQueued(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if code := runCLI(t, &out, "keygen", "--out", filepath.Join(dir, "fm")); code != 0 {
		t.Fatalf("keygen: %s", out.String())
	}
	const id = "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa"
	var posted atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET" && r.URL.Path == "/v1/approvals/"+id:
			w.Write([]byte(`{"id":"` + id + `","kind":"request","status":"pending","digest":"` + strings.Repeat("ab", 32) + `","action":"journal_entry","app":"finance-agent"}`))
		case r.Method == "POST" && r.URL.Path == "/v1/approvals/"+id+"/decisions":
			posted.Store(true)
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"status":"queued","message":"no proxy of the fleet has taken it yet"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	out.Reset()
	code := runCLI(t, &out, "approve", id, "--as", "fm@corp.example", "--key", filepath.Join(dir, "fm.key"),
		"--admin", srv.URL, "--admin-token", "tok")
	if code != 0 || !posted.Load() || !strings.Contains(out.String(), "queued: no proxy of the fleet has taken it yet") ||
		strings.Contains(out.String(), "approval is now") {
		t.Fatalf("approve at a hub that queued it: %d\n%s", code, out.String())
	}
}

// withFleetToo adds the approvals: section to the config file an earlier
// option wrote (withMail's), for a proxy named name in the fleet.
func withFleetToo(dsn, name string) func(*serveOptions) {
	return func(o *serveOptions) {
		f, err := os.OpenFile(o.Config, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		if _, err := f.WriteString("approvals:\n  postgres: " + dsn + "\n  instance: " + name + "\n"); err != nil {
			panic(err)
		}
	}
}

// TestFleetNotifiesOnce: two proxies and a hub, all three told to mail
// through one real mailpit. A request held at B and approved through the
// hub is mailed once to each finance manager and once to the requester,
// not once per proxy; the notification records are all in B's ledger.
func TestFleetNotifiesOnce(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	hook := httptest.NewServer(&hookSink{})
	defer hook.Close()
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a := newEnv(t, withMail(mp.SMTPAddr, hook.URL), withFleetToo(dsn, "proxy-a"))
	b := newEnv(t, withMail(mp.SMTPAddr, hook.URL), withFleetToo(dsn, "proxy-b"), func(o *serveOptions) {
		o.Principals, o.Upstream = a.opts.Principals, a.opts.Upstream
	})
	b.keyDir, b.erp = a.keyDir, a.erp
	f := &fleet{dsn: dsn, proxies: []*env{a, b}, tokens: writeHubTokens(t)}
	h := f.startHub(t, 8*time.Second)
	hubEnv := &env{t: t, admin: "http://" + h.AdminAddr.String(), token: hubToken, keyDir: a.keyDir, clock: a.clock}

	r := b.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id == "" {
		t.Fatalf("held at B: %d %s", r.status, r.body)
	}
	mp.WaitMessages(t, 2, 20*time.Second)
	if code, m := hubEnv.decide(id, "fm@corp.example", "fm", "approve", hubEnv.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approval through the hub: %d %v", code, m)
	}
	mp.WaitMessages(t, 3, 20*time.Second)
	time.Sleep(1500 * time.Millisecond) // a second proxy's copy would be on its way by now
	msgs, err := mp.Messages()
	if err != nil {
		t.Fatal(err)
	}
	to := map[string]int{}
	for _, m := range msgs {
		for _, rc := range m.To {
			to[rc.Address]++
		}
	}
	want := map[string]int{"fm@corp.example": 1, "fm2@corp.example": 1, "accountant@corp.example": 1}
	if len(msgs) != 3 || len(to) != len(want) || to["fm@corp.example"] != 1 || to["fm2@corp.example"] != 1 || to["accountant@corp.example"] != 1 {
		t.Fatalf("mailed %v in %d messages; want each of %v once", to, len(msgs), want)
	}
	count := func(e *env) (n int) {
		for _, rec := range e.records() {
			if rec.Kind == "notification" && rec.ApprovalID == id {
				n++
			}
		}
		return n
	}
	if na, nb := count(a), count(b); na != 0 || nb == 0 {
		t.Errorf("notification records: A %d, B %d; want all at B, which made the changes", na, nb)
	}
}

// TestHubPostgresDown: with the database gone the hub is not ready and
// takes no decision (503, nothing queued); once it is back, both return.
func TestHubPostgresDown(t *testing.T) {
	pg := pgtest.Start(t)
	f := &fleet{dsn: pg.NewDB(t), tokens: writeHubTokens(t)}
	a := newEnv(t, withFleet(f.dsn, "proxy-a"))
	f.proxies = []*env{a}
	h := f.startHub(t, 2*time.Second)
	he := &env{t: t, admin: "http://" + h.AdminAddr.String(), token: hubToken, keyDir: a.keyDir, clock: a.clock}
	r := a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id == "" {
		t.Fatalf("held: %d %s", r.status, r.body)
	}
	var a0 approvals.Approval
	if code := he.adminGet("/v1/approvals/"+id, &a0); code != 200 {
		t.Fatalf("GET at the hub: %d", code)
	}
	ready := func() (int, map[string]any) {
		var m map[string]any
		code := he.adminGet("/readyz", &m)
		return code, m
	}
	if code, m := ready(); code != 200 {
		t.Fatalf("hub /readyz with PostgreSQL up: %d %v", code, m)
	}
	pg.Kill()
	if code, m := ready(); code != 503 || m["checks"].(map[string]any)["postgres"] == "ok" {
		t.Fatalf("hub /readyz with PostgreSQL down: %d %v", code, m)
	}
	key, err := keys.LoadPrivateFile(filepath.Join(a.keyDir, "fm.key"))
	if err != nil {
		t.Fatal(err)
	}
	at := a.clock.Now().UTC().Format(time.RFC3339)
	sub := approvals.Submission{Approver: "fm@corp.example", Decision: "approve", Reason: "ok", SignedAt: at,
		Signature: approvals.Sign(key, id, a0.Digest, "approve", "fm@corp.example", at)}
	if code, m := he.post("/v1/approvals/"+id+"/decisions", sub); code/100 == 2 {
		t.Fatalf("a decision at the hub with PostgreSQL down: %d %v", code, m)
	}
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	var code int
	var m map[string]any
	for i := 0; i < 50; i++ {
		if code, m = he.post("/v1/approvals/"+id+"/decisions", sub); code == 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 || m["status"] != "approved" {
		t.Fatalf("the decision once PostgreSQL is back: %d %v", code, m)
	}
	if code, m := ready(); code != 200 {
		t.Fatalf("hub /readyz after PostgreSQL returned: %d %v", code, m)
	}
}

// TestHubOverrideProvesRequester: a hub without identity: settings queues
// an override request, and the proxy that takes it proves the requester
// with its own: no token is 401, someone else's 403, the requester's own
// creates the override.
func TestHubOverrideProvesRequester(t *testing.T) {
	p := newIDP(t)
	pg := pgtest.Start(t)
	f := &fleet{dsn: pg.NewDB(t), tokens: writeHubTokens(t)}
	a := newEnv(t, withIdentity(p), withFleetToo(f.dsn, "proxy-a"))
	f.proxies = []*env{a}
	h := f.startHub(t, 8*time.Second)
	dir := t.TempDir()
	write := func(name, tok string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(tok+"\n"), 0o600)
		return path
	}
	args := []string{"override", "request", "--action", "journal_entry", "--duration", "4h", "--justification", "close",
		"--requested-by", "accountant@corp.example", "--admin", "http://" + h.AdminAddr.String(), "--admin-token", hubToken}
	var out bytes.Buffer
	if code := runCLI(t, &out, args...); code != 1 || !strings.Contains(out.String(), "401") || !strings.Contains(out.String(), "unauthenticated_caller") {
		t.Fatalf("through the hub without a token: exit %d %s", code, out.String())
	}
	out.Reset()
	other := write("fm.jwt", p.token(t, "rsa-1", "fm@corp.example", a.clock.Now()))
	if code := runCLI(t, &out, append(args, "--identity-token", other)...); code != 1 || !strings.Contains(out.String(), "requested_by_mismatch") {
		t.Fatalf("through the hub with someone else's token: exit %d %s", code, out.String())
	}
	out.Reset()
	own := write("accountant.jwt", p.token(t, "ed-1", "accountant@corp.example", a.clock.Now()))
	if code := runCLI(t, &out, append(args, "--identity-token", own)...); code != 0 || !strings.Contains(out.String(), "requested") {
		t.Fatalf("through the hub with the requester's own token: exit %d %s", code, out.String())
	}
	var list struct{ Approvals []approvals.Approval }
	a.adminGet("/v1/approvals?status=pending", &list)
	if len(list.Approvals) != 1 || list.Approvals[0].Kind != approvals.KindOverride {
		t.Fatalf("pending at A: %+v", list.Approvals)
	}
}

// TestHubDecisionSurvivesAFailedTake: the holder cannot record the
// decision for a while (its approval row locked in the database beyond
// the write deadline). The hub answers 202 queued, only a token with read
// scope sees the approval in that answer, and once the row is free the
// decision is taken again and counts: it is never answered "unavailable"
// and dropped.
func TestHubDecisionSurvivesAFailedTake(t *testing.T) {
	pg := pgtest.Start(t)
	f := &fleet{dsn: pg.NewDB(t)}
	f.tokens = filepath.Join(t.TempDir(), "tokens.yaml")
	doc := "tokens:\n  - {name: fleet, sha256: " + adminauth.Hash(hubToken) + ", scopes: [read, decide, override, evidence]}\n" +
		"  - {name: decider, sha256: " + adminauth.Hash("tok-decide-only") + ", scopes: [decide]}\n"
	if err := os.WriteFile(f.tokens, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newEnv(t, withFleet(f.dsn, "proxy-a"))
	f.proxies = []*env{a}
	h := f.startHub(t, 2*time.Second)
	he := &env{t: t, admin: "http://" + h.AdminAddr.String(), token: hubToken, keyDir: a.keyDir, clock: a.clock}
	r := a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id == "" {
		t.Fatalf("held: %d %s", r.status, r.body)
	}
	// Someone holds the approval's row (a long transaction, a stuck
	// migration): the proxy's write times out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM approvals WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	decider := &env{t: t, admin: he.admin, token: "tok-decide-only", keyDir: a.keyDir, clock: a.clock}
	var a0 approvals.Approval
	he.adminGet("/v1/approvals/"+id, &a0)
	key, _ := keys.LoadPrivateFile(filepath.Join(a.keyDir, "fm.key"))
	at := a.clock.Now().UTC().Format(time.RFC3339)
	sub := approvals.Submission{Approver: "fm@corp.example", Decision: "approve", Reason: "ok", SignedAt: at,
		Signature: approvals.Sign(key, id, a0.Digest, "approve", "fm@corp.example", at)}
	code, m := decider.post("/v1/approvals/"+id+"/decisions", sub)
	if code != 202 || m["status"] != "queued" {
		t.Fatalf("with the row locked: %d %v", code, m)
	}
	if _, shown := m["approval"]; shown {
		t.Errorf("a decide-only token was shown the approval in the queued answer: %v", m)
	}
	time.Sleep(4 * time.Second) // past the proxy's 5 s write deadline, counted from the take
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := waitStatus(he, id, approvals.StatusApproved); got != approvals.StatusApproved {
		t.Fatalf("the queued decision was lost after a failed take: %s\n%s", got, a.logs.String())
	}
	if !strings.Contains(a.logs.String(), "given back") {
		t.Error("the failed take was not logged")
	}
}
