package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// hit is one request as the test ERP received it.
type hit struct {
	method, uri, host, proto string
	header                   http.Header
	body                     string
}

// testERP answers every request with a small JSON body and some headers a
// proxy must not relay.
type testERP struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
}

func (e *testERP) handler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.hits = append(e.hits, hit{r.Method, r.RequestURI, r.Host, r.Proto, r.Header.Clone(), string(b)})
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-UAPK-Spoofed", "from the ERP")
	w.Header().Set("Keep-Alive", "timeout=5")
	w.Header().Set("Connection", "X-Erp-Hop")
	w.Header().Set("X-Erp-Hop", "hop")
	w.Header().Set("X-Erp", "kept")
	w.Write([]byte(`{"status":"reconciled"}`))
}

func (e *testERP) Hits() []hit {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]hit(nil), e.hits...)
}

func newTestERP(t *testing.T, tlsOn bool) *testERP {
	e := &testERP{}
	e.Server = httptest.NewUnstartedServer(http.HandlerFunc(e.handler))
	e.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are what some tests are about
	if tlsOn {
		e.StartTLS()
	} else {
		e.Start()
	}
	t.Cleanup(e.Close)
	return e
}

func (l *fakeLedger) all() []ledger.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ledger.Entry(nil), l.entries...)
}

// fwdGate is a gate over the example manifest, changed by tweak (JSON text
// replacements), with a fake ledger. The test ERPs listen on loopback ports
// chosen at random, so the example's erp_hosts entry for the demo's ERP
// (127.0.0.1:9090) becomes 127.0.0.1:*, unless a tweak replaced it.
func fwdGate(t *testing.T, l gate.Ledger, tweak ...string) *gate.Gate {
	t.Helper()
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for i := 0; i+1 < len(tweak); i += 2 {
		if !strings.Contains(doc, tweak[i]) {
			t.Fatalf("manifest lacks %q", tweak[i])
		}
		doc = strings.Replace(doc, tweak[i], tweak[i+1], 1)
	}
	doc = strings.Replace(doc, `"127.0.0.1:9090"]`, `"127.0.0.1:*"]`, 1)
	m, err := rules.ParseManifest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGate(t, l, rules.NewEngine(m, p))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// startForward serves a forward door on loopback until the test ends.
func startForward(t *testing.T, cfg ForwardConfig) (*Forward, string) {
	t.Helper()
	if cfg.Logger.GetLevel() == zerolog.TraceLevel {
		cfg.Logger = zerolog.Nop()
	}
	f, err := NewForward(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f, ln.Addr().String()
}

// proxyClient is a Go client using the door as its proxy; roots, if set,
// are the CAs it trusts.
func proxyClient(t *testing.T, addr string, roots *x509.CertPool, user string) *http.Client {
	u := &url.URL{Scheme: "http", Host: addr}
	if user != "" {
		u.User = url.UserPassword(user, "ignored")
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: false}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

type fwdReply struct {
	status int
	header http.Header
	body   string
}

func send(t *testing.T, c *http.Client, method, u, body string, headers ...string) fwdReply {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fwdReply{resp.StatusCode, resp.Header, string(b)}
}

func requestEntries(l *fakeLedger) []ledger.Entry {
	var out []ledger.Entry
	for _, e := range l.all() {
		if e.Kind == record.KindRequest {
			out = append(out, e)
		}
	}
	return out
}

func waitForEntries(t *testing.T, l *fakeLedger, n int) []ledger.Entry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		all := l.all()
		if len(all) >= n {
			return all
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ledger entries, want %d: %+v", len(all), n, all)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const reconciliationBody = `{"account":"1010-Cash","period":"2026-Q3"}`

func TestForwardPlainHTTP(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl)
	_, addr := startForward(t, ForwardConfig{Gate: g, MaxBody: 1024})
	c := proxyClient(t, addr, nil, "")
	base := erp.URL

	t.Run("allowed: forwarded once, recorded, headers stripped both ways", func(t *testing.T) {
		r := send(t, c, "POST", base+"/api/v1/reconciliations", reconciliationBody,
			"X-UAPK-On-Behalf-Of", "accountant@corp.example", "X-UAPK-Justification", "month-end",
			"x-uapk-lowercase", "1", "Connection", "X-Hop", "X-Hop", "secret", "Te", "trailers",
			"Proxy-Connection", "keep-alive", "X-Kept", "yes")
		if r.status != 200 || r.body != `{"status":"reconciled"}` {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r.header.Get("X-UAPK-Decision") != "allow" || r.header.Get("X-UAPK-Action") != "account_reconciliation" ||
			r.header.Get("X-UAPK-Record") != "1" {
			t.Errorf("verdict headers %v", r.header)
		}
		if r.header.Get("X-UAPK-Spoofed") != "" || r.header.Get("Keep-Alive") != "" || r.header.Get("X-Erp-Hop") != "" ||
			r.header.Get("X-Erp") != "kept" {
			t.Errorf("ERP response headers not stripped: %v", r.header)
		}
		hits := erp.Hits()
		if len(hits) != 1 {
			t.Fatalf("%d hits", len(hits))
		}
		h := hits[0]
		if h.uri != "/api/v1/reconciliations" || h.body != reconciliationBody || h.header.Get("X-Kept") != "yes" {
			t.Errorf("ERP got %+v", h)
		}
		for name := range h.header {
			l := strings.ToLower(name)
			if strings.HasPrefix(l, "x-uapk-") || l == "x-hop" || l == "te" || l == "proxy-connection" ||
				l == "proxy-authorization" || l == "connection" {
				t.Errorf("%s reached the ERP", name)
			}
		}
		if ua, ok := h.header["User-Agent"]; !ok || ua[0] != "Go-http-client/1.1" {
			t.Errorf("the client's User-Agent was not relayed as it was: %v", ua)
		}
		all := waitForEntries(t, fl, 2)
		req, fwd := all[0], all[1]
		wantURL := base + "/api/v1/reconciliations"
		if req.Kind != "request" || req.Decision != "allow" || req.Data["door"] != "forward" || req.Data["url"] != wantURL ||
			req.Digest != gate.Digest("POST", wantURL, []byte(reconciliationBody)) || req.Data["justification"] != "month-end" {
			t.Errorf("request entry %+v", req)
		}
		if fwd.Kind != "forward" || fwd.Reason != "forwarded" || fwd.Data["status"] != 200 ||
			fwd.Data["response_sha256"] != sha256Hex([]byte(`{"status":"reconciled"}`)) || fwd.Data["response_size"] != int64(23) ||
			fwd.Data["request_record"] != uint64(1) {
			t.Errorf("forward entry %+v", fwd)
		}
	})

	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		reason, action           string
	}{
		{"denylisted", "PUT", "/api/v1/audit-log/AL-1", `{}`, nil, 403, "denylisted", "audit_modify"},
		{"unclassified", "GET", "/api/v1/payroll/export", "", nil, 403, "unclassified", ""},
		{"dot segments cannot dodge the denylist", "DELETE", "/api/v1/reconciliations/../records/JE-1", "", nil, 400, "ambiguous_path", ""},
		{"unknown app", "GET", "/api/v1/accounts/1010/balance", "", []string{"X-UAPK-App", "other"}, 403, "unknown_app", ""},
		{"body over the limit", "POST", "/api/v1/reconciliations", strings.Repeat("x", 1025), nil, 413, "body_too_large", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(erp.Hits())
			r := send(t, c, tc.method, base+tc.path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(r.body), &m); err != nil || m["reason"] != tc.reason || m["action"] != tc.action {
				t.Errorf("body %s", r.body)
			}
			if r.header.Get("X-UAPK-Decision") != "deny" || r.header.Get("X-UAPK-Record") == "" {
				t.Errorf("headers %v", r.header)
			}
			if len(erp.Hits()) != before {
				t.Errorf("a refused request reached the ERP")
			}
			reqs := requestEntries(fl)
			last := reqs[len(reqs)-1]
			if last.Decision != "deny" || string(last.Reason) != tc.reason {
				t.Errorf("entry %+v", last)
			}
		})
	}

	t.Run("pending", func(t *testing.T) {
		r := send(t, c, "POST", base+"/api/v1/journal-entries", `{"account":"4000","credit":250000}`)
		var m map[string]any
		json.Unmarshal([]byte(r.body), &m)
		if r.status != 202 || m["status"] != "PENDING_APPROVAL" || r.header.Get("X-UAPK-Approval-Id") != m["approval_id"] {
			t.Fatalf("%d %v %s", r.status, r.header, r.body)
		}
	})

	t.Run("not a proxy request", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/api/v1/reconciliations")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "not_a_proxy_request") {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})
}

// rawProxy sends one request as written to the door and reads the answer.
func rawProxy(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// The same ERP URL gets the same digest through either door: the URL
// recorded is built the same way from what the agent wrote.
func TestForwardURLAndDigestMatchTheSidecar(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"default_policy": "DENY"`, `"default_policy": "RECORD_AND_ALLOW"`)
	_, addr := startForward(t, ForwardConfig{Gate: g})
	sc, err := NewSidecar(SidecarConfig{Gate: g, Upstream: erp.URL, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sc.Serve(sln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	host := strings.TrimPrefix(erp.URL, "http://")
	targets := []string{
		"/api/v1/accounts/1010-Cash/balance?as_of=2026-09-30",
		"/api/v1/reconciliations/./x/../y",
		"/api/v1//accounts/%31010/balance",
		"/api/v1/accounts/a%20b/c%2Fd?q=%20x&y",
		"/api/v1/accounts/%E2%82%AC",
		"/api/v1/accounts/a%20b/c?q=%20x&y=%2F&z",
		"/API/v1/Odd-Case/~tilde",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			n := len(requestEntries(fl))
			before := len(erp.Hits())
			fresp, fbody := rawProxy(t, addr, "GET http://"+host+target+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
			sresp, sbody := rawProxy(t, sln.Addr().String(), "GET "+target+" HTTP/1.1\r\nHost: "+sln.Addr().String()+"\r\nConnection: close\r\n\r\n")
			if fresp.StatusCode != sresp.StatusCode {
				t.Fatalf("forward %d %s, sidecar %d %s", fresp.StatusCode, fbody, sresp.StatusCode, sbody)
			}
			reqs := requestEntries(fl)[n:]
			if len(reqs) != 2 || reqs[0].Data["door"] != "forward" || reqs[1].Data["door"] != "sidecar" {
				t.Fatalf("entries %+v", reqs)
			}
			if reqs[0].Data["url"] != reqs[1].Data["url"] || reqs[0].Digest != reqs[1].Digest ||
				reqs[0].Decision != reqs[1].Decision || reqs[0].Reason != reqs[1].Reason || reqs[0].Action != reqs[1].Action {
				t.Errorf("forward %v %s %s/%s\nsidecar %v %s %s/%s", reqs[0].Data["url"], reqs[0].Digest, reqs[0].Decision, reqs[0].Reason,
					reqs[1].Data["url"], reqs[1].Digest, reqs[1].Decision, reqs[1].Reason)
			}
			hits := erp.Hits()[before:]
			if fresp.StatusCode == 200 && (len(hits) != 2 || hits[0].uri != target || hits[1].uri != target) {
				t.Errorf("the ERP got %+v, want %s byte for byte from both doors", hits, target)
			}
			t.Logf("%d %s", fresp.StatusCode, reqs[0].Data["url"])
		})
	}
	// Default ports and host case do not make another URL. (The manifest
	// names no such host: refused, and recorded under that URL.)
	n := len(requestEntries(fl))
	resp, _ := rawProxy(t, addr, "GET http://ERP.Example.COM:80/api/v1/accounts/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 403 {
		t.Errorf("host no rule names: %d", resp.StatusCode)
	}
	if e := requestEntries(fl)[n]; e.Data["url"] != "http://erp.example.com/api/v1/accounts/1" || e.Reason != record.UnknownHost {
		t.Errorf("url %v, reason %s", e.Data["url"], e.Reason)
	}
	// Only http and https absolute URIs are proxied.
	resp, body := rawProxy(t, addr, "GET ftp://erp.example.com/x HTTP/1.1\r\nHost: erp.example.com\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 400 || !strings.Contains(body, string(record.BadTarget)) {
		t.Errorf("ftp: %d %s", resp.StatusCode, body)
	}
}

func TestForwardAppIdentity(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl)
	_, addr := startForward(t, ForwardConfig{Gate: g})
	basic := func(user string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":pw"))
	}
	cases := []struct {
		name    string
		headers []string
		status  int
		app     string
	}{
		{"default app", nil, 200, "financial-ai-assistant"},
		{"X-UAPK-App", []string{"X-UAPK-App", "financial-ai-assistant"}, 200, "financial-ai-assistant"},
		{"Proxy-Authorization user", []string{"Proxy-Authorization", basic("financial-ai-assistant")}, 200, "financial-ai-assistant"},
		{"both agree", []string{"X-UAPK-App", "financial-ai-assistant", "Proxy-Authorization", basic("financial-ai-assistant")}, 200, "financial-ai-assistant"},
		{"another app by Proxy-Authorization", []string{"Proxy-Authorization", basic("other-app")}, 403, "other-app"},
		{"both disagree", []string{"X-UAPK-App", "financial-ai-assistant", "Proxy-Authorization", basic("other-app")}, 403, "financial-ai-assistant"},
		{"not Basic", []string{"Proxy-Authorization", "Bearer abc"}, 403, "financial-ai-assistant"},
		{"no user", []string{"Proxy-Authorization", basic("")}, 403, "financial-ai-assistant"},
	}
	c := proxyClient(t, addr, nil, "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, c, "GET", erp.URL+"/api/v1/accounts/1010/balance", "", tc.headers...)
			if r.status != tc.status {
				t.Fatalf("%d %s", r.status, r.body)
			}
			reqs := requestEntries(fl)
			if e := reqs[len(reqs)-1]; e.App != tc.app || (tc.status == 403 && e.Reason != record.UnknownApp) {
				t.Errorf("entry %+v", e)
			}
		})
	}
	for _, h := range erp.Hits() {
		if h.header.Get("Proxy-Authorization") != "" {
			t.Errorf("Proxy-Authorization reached the ERP")
		}
	}
	// Go's client sends the proxy URL's user as Proxy-Authorization.
	other := proxyClient(t, addr, nil, "other-app")
	if r := send(t, other, "GET", erp.URL+"/api/v1/accounts/1010/balance", ""); r.status != 403 || !strings.Contains(r.body, "unknown_app") {
		t.Errorf("%d %s", r.status, r.body)
	}
}

func TestForwardRefusesWhenTheLedgerFails(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{err: errors.New("disk full")}
	_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl)})
	c := proxyClient(t, addr, nil, "")
	r := send(t, c, "POST", erp.URL+"/api/v1/reconciliations", reconciliationBody, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 503 || r.body != `{"error":"ledger_unavailable"}` {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if len(erp.Hits()) != 0 {
		t.Fatal("forwarded without a record")
	}
}

func TestForwardUpstreamFailures(t *testing.T) {
	fl := &fakeLedger{}
	g := fwdGate(t, fl)
	// An ERP whose certificate nobody trusts: verification is on.
	untrusted := newTestERP(t, true)
	_, addr := startForward(t, ForwardConfig{Gate: g})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr})}}
	defer c.CloseIdleConnections()
	// Plain HTTP to the proxy, https to the ERP: the proxy originates TLS.
	resp, body := rawProxy(t, addr, "GET "+untrusted.URL+"/api/v1/accounts/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 502 || !strings.Contains(body, "upstream_unavailable") || resp.Header.Get("X-UAPK-Decision") != "allow" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	all := waitForEntries(t, fl, 2)
	// No TLS session, so the request never left: not delivered.
	if f := all[1]; f.Kind != "forward" || f.Reason != "upstream_unavailable" || f.Data["delivered"] != false ||
		!strings.Contains(f.Data["error"].(string), "certificate") {
		t.Errorf("forward entry %+v", f)
	}
	if len(untrusted.Hits()) != 0 {
		t.Errorf("a request reached an ERP whose certificate did not verify")
	}
	// A closed port.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	r := send(t, c, "GET", "http://"+dead+"/api/v1/accounts/1", "")
	if r.status != 502 {
		t.Errorf("%d %s", r.status, r.body)
	}
}

// withCA makes a fresh interception CA and a pool trusting it.
func withCA(t *testing.T) (*ca.Authority, *x509.CertPool) {
	t.Helper()
	a, err := ca.Init(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.Certificate())
	return a, pool
}

func erpTLS(erp *testERP) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(erp.Certificate())
	return &tls.Config{RootCAs: pool}
}

func TestForwardInterceptsHTTPS(t *testing.T) {
	erp := newTestERP(t, true)
	fl := &fakeLedger{}
	g := fwdGate(t, fl)
	authority, roots := withCA(t)
	f, addr := startForward(t, ForwardConfig{Gate: g, CA: authority, TLS: erpTLS(erp)})
	c := proxyClient(t, addr, roots, "financial-ai-assistant")

	r := send(t, c, "POST", erp.URL+"/api/v1/reconciliations", reconciliationBody, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 200 || r.header.Get("X-UAPK-Decision") != "allow" || r.header.Get("X-Erp") != "kept" || r.header.Get("X-UAPK-Spoofed") != "" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	wantURL := erp.URL + "/api/v1/reconciliations"
	all := waitForEntries(t, fl, 2)
	if e := all[0]; e.Data["url"] != wantURL || e.Digest != gate.Digest("POST", wantURL, []byte(reconciliationBody)) || e.App != "financial-ai-assistant" {
		t.Errorf("entry %+v", e)
	}
	if h := erp.Hits(); len(h) != 1 || h[0].header.Get("Proxy-Authorization") != "" || h[0].header.Get("X-UAPK-On-Behalf-Of") != "" {
		t.Errorf("hits %+v", h)
	}
	// Denied inside the tunnel, on the same kept-alive connection.
	r = send(t, c, "PUT", erp.URL+"/api/v1/audit-log/AL-1", `{}`)
	if r.status != 403 || !strings.Contains(r.body, `"reason":"denylisted"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if len(erp.Hits()) != 1 {
		t.Errorf("denied request reached the ERP")
	}
	// The leaf for this host was minted once and is cached.
	send(t, proxyClient(t, addr, roots, ""), "GET", erp.URL+"/api/v1/accounts/1", "")
	if n := authority.Minted(); n != 1 {
		t.Errorf("%d leaves minted for one host", n)
	}
	// The proxy app identity of the CONNECT applies inside: another app is denied.
	other := proxyClient(t, addr, roots, "other-app")
	if r := send(t, other, "GET", erp.URL+"/api/v1/accounts/1", ""); r.status != 403 || !strings.Contains(r.body, "unknown_app") {
		t.Errorf("%d %s", r.status, r.body)
	}
	_ = f
}

func TestForwardInterceptionEdges(t *testing.T) {
	erp := newTestERP(t, true)
	plain := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl)
	authority, _ := withCA(t)
	_, addr := startForward(t, ForwardConfig{Gate: g, CA: authority, TLS: erpTLS(erp)})
	erpHost := strings.TrimPrefix(erp.URL, "https://")

	t.Run("a client that does not trust the CA fails the handshake; nothing reaches the ERP", func(t *testing.T) {
		c := proxyClient(t, addr, nil, "")
		_, err := c.Get(erp.URL + "/api/v1/accounts/1")
		var uae x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &uae) {
			t.Fatalf("err %v", err)
		}
		if len(erp.Hits()) != 0 || len(requestEntries(fl)) != 0 {
			t.Errorf("something was forwarded or recorded")
		}
	})

	t.Run("Host inside the tunnel must be the CONNECT target", func(t *testing.T) {
		conn := connect(t, addr, erpHost)
		tc := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true}) // the leaf is checked elsewhere
		defer tc.Close()
		fmt.Fprintf(tc, "GET /api/v1/accounts/1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("status %d", resp.StatusCode)
		}
		reqs := requestEntries(fl)
		if e := reqs[len(reqs)-1]; e.Reason != record.HostMismatch {
			t.Errorf("entry %+v", e)
		}
	})

	t.Run("plain HTTP inside a CONNECT is decided too", func(t *testing.T) {
		host := strings.TrimPrefix(plain.URL, "http://")
		conn := connect(t, addr, host)
		defer conn.Close()
		fmt.Fprintf(conn, "GET /api/v1/accounts/1?x=1 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-UAPK-Decision") != "allow" {
			t.Errorf("status %d %v", resp.StatusCode, resp.Header)
		}
		reqs := requestEntries(fl)
		if e := reqs[len(reqs)-1]; e.Data["url"] != plain.URL+"/api/v1/accounts/1?x=1" {
			t.Errorf("entry %+v", e)
		}
	})

	t.Run("bad CONNECT targets are refused", func(t *testing.T) {
		for _, target := range []string{"erp.example.com", "erp.example.com:0", "erp.example.com:99999", ":443"} {
			resp, body := rawProxy(t, addr, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			if resp.StatusCode != 400 || !strings.Contains(body, string(record.BadTarget)) {
				t.Errorf("%s: %d %s", target, resp.StatusCode, body)
			}
		}
	})
}

// connect opens a tunnel through the door and checks the 200.
func connect(t *testing.T, addr, target string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	if br.Buffered() != 0 {
		t.Fatal("bytes after the CONNECT answer")
	}
	return conn
}

func TestConnectWithoutCA(t *testing.T) {
	erp := newTestERP(t, true)
	erpHost := strings.TrimPrefix(erp.URL, "https://")
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"tool_restrictions": {`, `"tool_restrictions": {"tunnel_hosts": ["`+erpHost+`"],`)
	f, addr := startForward(t, ForwardConfig{Gate: g})
	erpRoots := erpTLS(erp).RootCAs

	t.Run("a tunnel_hosts target is tunnelled blind and recorded by host and port", func(t *testing.T) {
		c := proxyClient(t, addr, erpRoots, "")
		r := send(t, c, "GET", erp.URL+"/api/v1/anything", "")
		if r.status != 200 || r.header.Get("X-UAPK-Decision") != "" {
			t.Fatalf("%d %v", r.status, r.header)
		}
		e := requestEntries(fl)[0]
		host, port, _ := net.SplitHostPort(erpHost)
		if e.Decision != "allow" || e.Reason != record.TunnelHost || e.Data["host"] != host || e.Data["port"] != port ||
			e.Data["method"] != "CONNECT" || e.Digest != gate.Digest("CONNECT", erpHost, nil) {
			t.Errorf("entry %+v", e)
		}
		c.CloseIdleConnections()
		all := waitForEntries(t, fl, 2)
		if end := all[1]; end.Kind != "forward" || end.Reason != "tunnel_closed" || end.Data["bytes_up"].(int64) == 0 ||
			end.Data["bytes_down"].(int64) == 0 || end.Data["request_record"] != uint64(1) {
			t.Errorf("end entry %+v", end)
		}
	})

	t.Run("any other CONNECT is denied and recorded", func(t *testing.T) {
		other := newTestERP(t, true)
		otherHost := strings.TrimPrefix(other.URL, "https://")
		resp, body := rawProxy(t, addr, "CONNECT "+otherHost+" HTTP/1.1\r\nHost: "+otherHost+"\r\n\r\n")
		var m map[string]any
		json.Unmarshal([]byte(body), &m)
		if resp.StatusCode != 403 || m["reason"] != string(record.TunnelNotAllowed) || m["error"] != "denied" || resp.Header.Get("X-UAPK-Decision") != "deny" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		reqs := requestEntries(fl)
		e := reqs[len(reqs)-1]
		if e.Decision != "deny" || e.Reason != record.TunnelNotAllowed || e.Data["url"] != otherHost {
			t.Errorf("entry %+v", e)
		}
		c := proxyClient(t, addr, erpTLS(other).RootCAs, "")
		if _, err := c.Get(other.URL + "/x"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("err %v", err)
		}
		if len(other.Hits()) != 0 {
			t.Errorf("denied tunnel reached its target")
		}
	})

	t.Run("another app may not tunnel", func(t *testing.T) {
		auth := base64.StdEncoding.EncodeToString([]byte("other-app:x"))
		resp, body := rawProxy(t, addr, "CONNECT "+erpHost+" HTTP/1.1\r\nHost: "+erpHost+"\r\nProxy-Authorization: Basic "+auth+"\r\n\r\n")
		if resp.StatusCode != 403 || !strings.Contains(body, string(record.UnknownApp)) {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})

	t.Run("shutdown closes open tunnels", func(t *testing.T) {
		conn := connect(t, addr, erpHost)
		defer conn.Close()
		waitFor(t, func() bool { return f.conns.Len() == 1 })
		// startForward's cleanup shuts down; goleak then checks nothing is left.
	})
}

func TestHeldRequestsOnTheForwardDoor(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"hold": "0s"`, `"hold": "30s"`)
	f, err := NewForward(ForwardConfig{Gate: g, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.Serve(ln) }()
	c := proxyClient(t, ln.Addr().String(), nil, "")
	entry := erp.URL + "/api/v1/journal-entries"

	// An agent that hangs up while held frees its goroutine at once.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", entry, strings.NewReader(`{"credit":250000}`))
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, func() bool { return g.Approvals().Held() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err %v", err)
	}
	waitFor(t, func() bool { return g.Approvals().Held() == 0 })

	// Shutdown answers held agents with their 202 instead of waiting.
	got := make(chan fwdReply, 1)
	go func() { got <- send(t, c, "POST", entry, `{"credit":250000}`) }()
	waitFor(t, func() bool { return g.Approvals().Held() == 1 })
	start := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := f.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	r := <-got
	if r.status != 202 || time.Since(start) > 5*time.Second {
		t.Errorf("%d %s after %v", r.status, r.body, time.Since(start))
	}
	if len(erp.Hits()) != 0 {
		t.Errorf("a held request reached the ERP")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestForwardTransportIsSafe(t *testing.T) {
	f, err := NewForward(ForwardConfig{Gate: fwdGate(t, &fakeLedger{}), TLS: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	tr := f.Transport()
	if tr.Proxy != nil || tr.TLSClientConfig.InsecureSkipVerify || tr.MaxIdleConnsPerHost < 256 ||
		tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 || tr.DialContext == nil {
		t.Errorf("transport %+v", tr)
	}
	if f.outer.ReadHeaderTimeout == 0 || f.outer.ReadTimeout == 0 || f.outer.IdleTimeout == 0 {
		t.Errorf("server timeouts %+v", f.outer)
	}
	if f.proxy.Tr != tr || f.proxy.ConnectDial != nil {
		t.Errorf("goproxy keeps its own transport or dialer")
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
