package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/mailpittest"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// withMail gives the example people mail addresses and points notify: at
// smtp, with a Slack-format webhook to hook.
func withMail(smtp, hook string) func(*serveOptions) {
	return func(o *serveOptions) {
		b, err := os.ReadFile(o.Principals)
		if err != nil {
			panic(err)
		}
		var out strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			out.WriteString(line + "\n")
			if id, ok := strings.CutPrefix(line, "  - id: "); ok && strings.Contains(id, "@") {
				out.WriteString("    email: " + id + "\n")
			}
		}
		if err := os.WriteFile(o.Principals, []byte(out.String()), 0o644); err != nil {
			panic(err)
		}
		cfg := filepath.Join(filepath.Dir(o.Principals), "uapk-notify.yaml")
		doc := "notify:\n  email:\n    smtp: " + smtp + "\n    from: uapk-proxy@corp.example\n  webhooks:\n    - {url: " + hook + ", format: slack}\n"
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			panic(err)
		}
		o.Config = cfg
	}
}

type hookSink struct {
	mu     sync.Mutex
	bodies []string
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, string(b))
	h.mu.Unlock()
}

func (h *hookSink) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.bodies...)
}

// waitRecords polls the chain until pred holds for n records, bounded.
func (e *env) waitRecords(t *testing.T, n int, pred func(ledger.Record) bool) []ledger.Record {
	t.Helper()
	var got []ledger.Record
	for i := 0; i < 100; i++ {
		got = got[:0]
		for _, r := range e.records() {
			if pred(r) {
				got = append(got, r)
			}
		}
		if len(got) >= n {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d matching records after 5 s, want %d", len(got), n)
	return nil
}

// TestNotificationsReachTheApprovers: a held entry mails every holder of
// the needed role (not the requester), with a link to the desk and no
// body; the webhook gets it too; each delivery is a notification record;
// once approved, the requester is told.
func TestNotificationsReachTheApprovers(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	hook := &hookSink{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	e := newEnv(t, withMail(mp.SMTPAddr, hs.URL+"/services/T000/B000/SECRETPART"))
	r := e.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":250000,"memo":"BODYSECRET"}`,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example", "X-UAPK-Justification", "Q3 accrual")
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	id := r.header.Get("X-UAPK-Approval-Id")
	msgs := mp.WaitMessages(t, 2, 20*time.Second)
	to := map[string]bool{}
	for _, m := range msgs {
		for _, a := range m.To {
			to[a.Address] = true
		}
		if !strings.Contains(m.Text, e.srv.UIURL+"/ui/approvals/"+id) || !strings.Contains(m.HTML, "/ui/approvals/"+id) ||
			strings.Contains(m.Raw, "BODYSECRET") || !strings.Contains(m.Subject, "journal_entry") {
			t.Errorf("mail %q: text %q", m.Subject, m.Text)
		}
	}
	if !to["fm@corp.example"] || !to["fm2@corp.example"] || to["accountant@corp.example"] || to["cfo@corp.example"] {
		t.Errorf("mailed %v; want the finance managers only", to)
	}
	recs := e.waitRecords(t, 3, func(r ledger.Record) bool { return r.Kind == "notification" && r.Reason == "delivered" })
	for _, rec := range recs {
		if rec.ApprovalID != id || rec.Data["event"] != "approval.pending" {
			t.Errorf("notification record %+v", rec)
		}
	}
	raw, _ := json.Marshal(e.records())
	if strings.Contains(string(raw), "SECRETPART") {
		t.Error("a record holds the webhook's secret path")
	}
	for _, b := range hook.got() {
		if strings.Contains(b, "BODYSECRET") || !strings.Contains(b, id) {
			t.Errorf("webhook body %s", b)
		}
	}
	// Approved: the requester is told.
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
		t.Fatalf("fm: %d %v", code, m)
	}
	msgs = mp.WaitMessages(t, 3, 20*time.Second)
	last := msgs[len(msgs)-1]
	if len(last.To) != 1 || last.To[0].Address != "accountant@corp.example" || !strings.Contains(last.Subject, "approved") {
		t.Errorf("completion mail: to %v subject %q", last.To, last.Subject)
	}
}

// TestNotificationsNeverDelayRequests: with the mail server down the agent
// still gets its 202 at once, the failure is recorded, and the mail goes
// out when the server comes up.
func TestNotificationsNeverDelayRequests(t *testing.T) {
	addr := mailpittest.FreeAddr(t) // nothing listens yet
	hs := httptest.NewServer(&hookSink{})
	defer hs.Close()
	e := newEnv(t, withMail(addr, hs.URL))
	r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	e.waitRecords(t, 1, func(r ledger.Record) bool {
		return r.Kind == "notification" && r.Reason == "notification_failed" && strings.HasPrefix(r.Data["channel"].(string), "email:")
	})
	mp := mailpittest.Start(t, mailpittest.Options{SMTPAddr: addr})
	mp.WaitMessages(t, 2, 30*time.Second)
	e.waitRecords(t, 2, func(r ledger.Record) bool {
		return r.Kind == "notification" && r.Reason == "delivered" && strings.HasPrefix(r.Data["channel"].(string), "email:")
	})
}

// TestDeskOverTLSAtTheProxy: ui.tls_cert and ui.tls_key serve the admin
// address, desk included, over TLS; a ui.url no browser allows passkeys on
// stops serve before it listens.
func TestDeskOverTLSAtTheProxy(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "desk.crt"), filepath.Join(dir, "desk.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	port := strings.TrimPrefix(mailpittest.FreeAddr(t), "127.0.0.1:")
	e := newEnv(t, func(o *serveOptions) {
		o.AdminAddr = "127.0.0.1:" + port
		cfg := filepath.Join(dir, "ui.yaml")
		os.WriteFile(cfg, []byte("ui:\n  url: https://localhost:"+port+"\n  tls_cert: "+certFile+"\n  tls_key: "+keyFile+"\n"), 0o600)
		o.Config = cfg
	})
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, der))
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := c.Get("https://127.0.0.1:" + port + "/ui/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || e.srv.UIURL != "https://localhost:"+port {
		t.Fatalf("%d %s", resp.StatusCode, e.srv.UIURL)
	}
	// A ui.url on plain http to a host that is not localhost: refused.
	o := *e.opts
	o.AdminAddr, o.DataDir = "127.0.0.1:0", filepath.Join(dir, "data2")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("ui:\n  url: http://desk.corp.example\n"), 0o600)
	o.Config = bad
	if _, err := startServer(&o, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "ui.url") {
		t.Fatalf("plain-http ui.url: %v", err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
