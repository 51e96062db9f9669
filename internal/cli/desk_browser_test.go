package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.yaml.in/yaml/v3"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/chromiumtest"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// TestDeskSeedScenarioInTheBrowser is the seed's story on the desk, in a
// real Chromium with a virtual passkey for each person: the CFO and the
// controller enroll, their passkeys go into the principals file, the agent
// posts a $1.2M entry that is held on its connection, the CFO signs in and
// approves, the controller sees the CFO's approval and approves, and the
// held request reaches the ERP once. UAPK_SCREENSHOTS=DIR saves the queue
// and the approval page at phone and desktop widths into DIR.
func TestDeskSeedScenarioInTheBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// ui.url defaults to http://localhost:ADMINPORT, the passkeys' relying
	// party, so the admin port stays the same across the restart.
	port := freePort(t)
	e := newEnv(t, withHold("2m"), func(o *serveOptions) { o.AdminAddr = "127.0.0.1:" + port })
	// The desk and the approvals service run on the gate's clock: stand it at
	// the wall clock, so that signed_at and the expiry read true.
	e.clock.Set(time.Now())
	ui := "http://localhost:" + port
	if e.srv.UIURL != ui {
		t.Fatalf("ui.url %q, want %q", e.srv.UIURL, ui)
	}
	browser := chromiumtest.Start(t, ctx)
	cfo, controller := chromiumtest.NewPerson(t, browser), chromiumtest.NewPerson(t, browser)
	// run bounds each step, so that a page that never gets where the test
	// waits fails with what the desk said (#status) and the console.
	run := func(p *chromiumtest.Person, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(p.Ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			qctx, cancel := context.WithTimeout(p.Ctx, 2*time.Second)
			defer cancel()
			status, _ := chromedp.Run(qctx, chromedp.Evaluate[string](`(document.getElementById("status") || {}).textContent || ""`))
			t.Fatalf("%v\nstatus: %q\nconsole: %q", err, status, p.Console())
		}
	}
	text := func(p *chromiumtest.Person, sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(p.Ctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v\nconsole: %q", sel, err, p.Console())
		}
		return s
	}

	// (a) Each enrolls a passkey; the desk shows the principals file entry.
	entries := map[string]enrolled{}
	for _, who := range []struct {
		p  *chromiumtest.Person
		id string
	}{{cfo, "cfo@corp.example"}, {controller, "controller@corp.example"}} {
		run(who.p, chromedp.Navigate(ui+"/ui/enroll"),
			chromedp.SendKeys(chromedp.ID("enroll-principal"), who.id),
			chromedp.Click(chromedp.ID("enroll")),
			chromedp.WaitVisible(chromedp.ID("entry")))
		entry := text(who.p, "#entry")
		if !strings.Contains(entry, "- id: "+who.id) || !strings.Contains(entry, "-----BEGIN PUBLIC KEY-----") {
			t.Fatalf("%s's entry:\n%s", who.id, entry)
		}
		entries[who.id] = parseEntry(t, entry, who.id)
	}
	// Nothing counts until the principals file names it.
	run(cfo, chromedp.Navigate(ui+"/ui/signin"),
		chromedp.SendKeys(chromedp.ID("principal"), "cfo@corp.example"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.CSS("#status.warn")))
	if s := text(cfo, "#status"); !strings.Contains(s, "unknown_approver") {
		t.Fatalf("sign-in before the principals file names the passkey: %q", s)
	}

	// (b) The passkeys go into the principals file; the proxy restarts on
	// the same port and data directory.
	e.stop()
	addPasskeys(t, e.opts.Principals, entries)
	e.start()

	// (c) The agent posts the seed's $1.2M entry; it is held.
	type result struct {
		r   reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.sidecar+"/api/v1/journal-entries", strings.NewReader(adjust1200k))
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

	// (d) The CFO signs in, finds the entry in the queue, reads it and
	// approves.
	signIn := func(p *chromiumtest.Person, who string) {
		t.Helper()
		run(p, chromedp.Navigate(ui+"/ui/signin"),
			chromedp.SendKeys(chromedp.ID("principal"), who),
			chromedp.Click(chromedp.ID("signin")),
			chromedp.WaitVisible(chromedp.ID("mine-count")))
		if got := text(p, "#me"); got != who {
			t.Fatalf("signed in as %q, want %s", got, who)
		}
	}
	link := `ul.queue a[href="/ui/approvals/` + id + `"]`
	signIn(cfo, "cfo@corp.example")
	if n := text(cfo, "#mine-count"); n != "1" {
		t.Errorf("CFO's queue counts %s", n)
	}
	if row := text(cfo, link); !strings.Contains(row, "journal_entry") || !strings.Contains(row, "1,200,000") ||
		!strings.Contains(row, "ASC 606") {
		t.Errorf("CFO's queue row: %q", row)
	}
	screenshots(t, cfo, "queue")
	run(cfo, chromedp.Click(chromedp.CSS(link)), chromedp.WaitVisible(chromedp.ID("approve")))
	if body := text(cfo, "#body"); !strings.Contains(body, `"amount": 1200000`) ||
		!strings.Contains(body, "ASC 606 revenue recognition adjustment") {
		t.Errorf("approval body shown:\n%s", body)
	}
	if amount := text(cfo, "#amount"); !strings.Contains(amount, "1,200,000") {
		t.Errorf("amount shown %q", amount)
	}
	if s := text(cfo, "#still-needed"); s != "cfo + controller" {
		t.Errorf("still needed before any decision: %q", s)
	}
	run(cfo, chromedp.SendKeys(chromedp.ID("reason"), "ASC 606 criteria met"),
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.CSS("ul#decisions li")))
	if d := text(cfo, "#decisions"); !strings.Contains(d, "cfo@corp.example") || !strings.Contains(d, "approve") ||
		!strings.Contains(d, "passkey") || !strings.Contains(d, "ASC 606 criteria met") {
		t.Errorf("CFO's decision shown as %q", d)
	}
	if s := text(cfo, "#still-needed"); s != "controller" {
		t.Errorf("still needed after the CFO: %q", s)
	}
	if s := text(cfo, "#approval-status"); s != approvals.StatusPending {
		t.Errorf("status after the CFO: %q", s)
	}
	if gone, _ := chromedp.Run(cfo.Ctx, chromedp.Evaluate[bool](`document.getElementById("approve") === null`)); !gone {
		t.Error("the CFO is offered to approve again")
	}
	if st := e.erp.Stats(); st.Total != 0 {
		t.Fatalf("the ERP was reached after one of two approvals: %+v", st)
	}

	// (e) The controller signs in, sees that the CFO has already approved,
	// and approves.
	signIn(controller, "controller@corp.example")
	run(controller, chromedp.Click(chromedp.CSS(link)), chromedp.WaitVisible(chromedp.ID("approve")))
	if d := text(controller, "#decisions"); !strings.Contains(d, "cfo@corp.example") || !strings.Contains(d, "passkey") {
		t.Errorf("the controller does not see the CFO's approval: %q", d)
	}
	screenshots(t, controller, "approval")
	run(controller, chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.CSS("ul#decisions li:nth-child(2)")))
	if s := text(controller, "#approval-status"); s != approvals.StatusApproved {
		t.Errorf("status after both: %q", s)
	}
	if d := text(controller, "#decisions"); !strings.Contains(d, "controller@corp.example") {
		t.Errorf("decisions after both: %q", d)
	}

	// (f) The held request goes through, once.
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("held request not released after the approval completed")
	}
	if res.err != nil || res.r.status != 201 {
		t.Fatalf("held request: %v %d %s", res.err, res.r.status, res.r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 || st.ByRoute["POST /api/v1/journal-entries"] != 1 {
		t.Fatalf("ERP stats %+v", st)
	}

	// (g) The chain verifies and the approval records keep the assertions.
	var rep verifier.Report
	if code := e.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
		t.Errorf("verify %d %+v", code, rep)
	}
	signed := 0
	for _, r := range e.records() {
		if r.Kind != record.KindApproval || r.Reason != record.Signed || r.ApprovalID != id {
			continue
		}
		signed++
		w, _ := r.Data["webauthn"].(map[string]any)
		if w["rp_id"] != "localhost" || w["origin"] != ui || w["authenticator_data"] == "" || w["client_data_json"] == "" {
			t.Errorf("approval record %d: %v", r.Seq, r.Data)
		}
	}
	if signed != 2 {
		t.Errorf("%d signed approval records, want 2", signed)
	}
	if a := e.approval(id); len(a.Decisions) != 2 || a.Decisions[0].WebAuthn == nil || a.Decisions[1].WebAuthn == nil {
		t.Errorf("approval %+v", a)
	}

	// Every answer under /ui/ carried the policy, and no page broke it or
	// threw.
	for _, p := range []*chromiumtest.Person{cfo, controller} {
		n := 0
		for _, r := range p.Responses() {
			if !strings.HasPrefix(r.URL, ui+"/ui/") {
				continue
			}
			n++
			if r.Headers["content-security-policy"] != desk.CSP {
				t.Errorf("%s: Content-Security-Policy %q", r.URL, r.Headers["content-security-policy"])
			}
		}
		if n < 10 {
			t.Errorf("only %d answers under /ui/ seen", n)
		}
		if v := p.CSPViolations(); len(v) > 0 {
			t.Errorf("CSP violations: %q", v)
		}
		for _, l := range p.Console() {
			if strings.HasPrefix(l, "exception:") {
				t.Errorf("uncaught in the page: %s", l)
			}
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// enrolled is a passkey as the enrolment page's entry names it.
type enrolled struct {
	CredentialID string `yaml:"credential_id"`
	PublicKey    string `yaml:"public_key"`
}

// parseEntry reads the entry the enrolment page shows: YAML for one item
// of the principals list.
func parseEntry(t *testing.T, entry, id string) enrolled {
	t.Helper()
	var items []struct {
		ID       string     `yaml:"id"`
		WebAuthn []enrolled `yaml:"webauthn"`
	}
	if err := yaml.Unmarshal([]byte(entry), &items); err != nil {
		t.Fatalf("entry is not YAML: %v\n%s", err, entry)
	}
	if len(items) != 1 || items[0].ID != id || len(items[0].WebAuthn) != 1 || items[0].WebAuthn[0].CredentialID == "" {
		t.Fatalf("entry names %+v\n%s", items, entry)
	}
	return items[0].WebAuthn[0]
}

// addPasskeys adds each principal's enrolled passkey to the principals file.
func addPasskeys(t *testing.T, path string, keys map[string]enrolled) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Principals []map[string]any `yaml:"principals"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	added := 0
	for _, p := range f.Principals {
		if k, ok := keys[p["id"].(string)]; ok {
			p["webauthn"] = []enrolled{k}
			added++
		}
	}
	if added != len(keys) {
		t.Fatalf("%d of %d principals found in %s", added, len(keys), path)
	}
	if b, err = yaml.Marshal(f); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// screenshots saves the page p shows as NAME-phone.png and
// NAME-desktop.png in $UAPK_SCREENSHOTS, if set; either way the page is
// left at the desktop width.
func screenshots(t *testing.T, p *chromiumtest.Person, name string) {
	t.Helper()
	dir := os.Getenv("UAPK_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		suffix        string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile}},
		{"desktop", 1280, 900, nil},
	} {
		if err := chromedp.Do(p.Ctx, chromedp.EmulateViewport(v.width, v.height, v.opts...)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(p.Ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s-%s: %v", name, v.suffix, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+v.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
