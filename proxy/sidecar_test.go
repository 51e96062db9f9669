package proxy

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's process-wide helpers: the Date header ticker and the
		// default dialer's DNS cache cleaner live as long as the process.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		// fasthttp's cleaners notice a stopped server or a closed pool only
		// after their current sleep (up to the idle durations); they exit
		// then. Our own goroutines are still checked.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	)
}

// fakeLedger records entries, or fails every append when err is set.
type fakeLedger struct {
	mu      sync.Mutex
	err     error
	entries []ledger.Entry
}

func (f *fakeLedger) Append(_ context.Context, e ledger.Entry) (ledger.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return ledger.Record{}, f.err
	}
	f.entries = append(f.entries, e)
	return ledger.Record{Seq: uint64(len(f.entries))}, nil
}

func (f *fakeLedger) AppendAsync(e ledger.Entry, done func(ledger.Record, error)) {
	r, err := f.Append(context.Background(), e)
	if done != nil {
		done(r, err)
	}
}

func testEngine(t *testing.T) *rules.Engine {
	t.Helper()
	m, err := rules.LoadManifest("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	return rules.NewEngine(m, p)
}

func testGate(t *testing.T, l gate.Ledger) (*gate.Gate, error) {
	t.Helper()
	return newGate(t, l, testEngine(t))
}

// newGate is a gate over eng writing to l; its approvals live in memory.
func newGate(t *testing.T, l gate.Ledger, eng *rules.Engine) (*gate.Gate, error) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(priv)
	if err != nil {
		t.Fatal(err)
	}
	ml := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(ml), Ledger: ml, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return gate.New(gate.Config{Engine: eng, Ledger: l, Approvals: svc, Logger: zerolog.Nop()})
}

func reconciliationCall() *gate.Call {
	return &gate.Call{Door: "sidecar", Req: rules.Request{
		Method: "POST", Scheme: "http", Host: "erp.example.com", Path: "/api/v1/reconciliations",
		Body: []byte(`{"account":"1010"}`), App: "financial-ai-assistant", OnBehalfOf: "accountant@corp.example",
	}}
}

func TestGateRefusesWhenTheLedgerFails(t *testing.T) {
	fl := &fakeLedger{err: errors.New("disk full")}
	g, err := testGate(t, fl)
	if err != nil {
		t.Fatal(err)
	}
	v := g.Check(reconciliationCall())
	status, body := answer(v)
	if v.Forward() || status != 503 || string(body) != `{"error":"ledger_unavailable"}` {
		t.Fatalf("verdict %+v: %d %s", v, status, body)
	}
}

func TestStripRemovesProxyAndHopByHopHeaders(t *testing.T) {
	var got http.Header
	erp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("X-UAPK-Spoofed", "from the ERP")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Erp", "kept")
		w.Write([]byte(`{"ok":true}`))
	}))
	defer erp.Close()
	fl := &fakeLedger{}
	g, _ := testGate(t, fl)
	ln := serveSidecar(t, g, erp.URL)

	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/api/v1/reconciliations", strings.NewReader(`{}`))
	req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
	req.Header.Set("x-uapk-lowercase", "1")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "1")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Proxy-Authorization", "Basic eDp5")
	req.Header.Set("X-Kept", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for name := range got {
		l := strings.ToLower(name)
		if strings.HasPrefix(l, "x-uapk-") || l == "x-hop" || l == "te" || l == "proxy-authorization" {
			t.Errorf("%s reached the ERP", name)
		}
	}
	if got.Get("X-Kept") != "yes" {
		t.Errorf("an ordinary header was dropped: %v", got)
	}
	if resp.Header.Get("X-UAPK-Spoofed") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("ERP response headers not stripped: %v", resp.Header)
	}
	if resp.Header.Get("X-Erp") != "kept" || resp.Header.Get("X-UAPK-Decision") != "allow" {
		t.Errorf("response headers %v", resp.Header)
	}
}

func TestNewSidecarRejectsBadUpstreams(t *testing.T) {
	g, _ := testGate(t, &fakeLedger{})
	for _, u := range []string{"", "erp.example.com", "ftp://erp", "http://", "http://u:p@erp", "http://erp/?q=1", "http://erp/#f"} {
		if _, err := NewSidecar(SidecarConfig{Gate: g, Upstream: u}); err == nil {
			t.Errorf("upstream %q accepted", u)
		}
	}
}

func TestAdminRecordsEndpointServesVerifiableBytes(t *testing.T) {
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 5; i++ {
		if _, err := l.Append(context.Background(), ledger.Entry{Kind: record.KindRequest, Data: map[string]any{"i": i, "s": "ü<&>\u2028"}}); err != nil {
			t.Fatal(err)
		}
	}
	var refused []string
	srv := httptest.NewServer(NewAdmin(AdminConfig{Ledger: l, Logger: zerolog.Nop(), Auth: testTokens(t),
		Refused: func(r string) { refused = append(refused, r) }}))
	defer srv.Close()
	// Without a token, or with one lacking scope read: refused, and counted.
	for _, c := range []struct {
		auth   string
		code   int
		reason string
	}{{"", 401, "missing_token"}, {"Bearer nope", 401, "bad_token"}, {"Bearer tok-decide", 403, "missing_scope"}} {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/ledger/records", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(body), `"reason": "`+c.reason+`"`) {
			t.Errorf("auth %q: %d %s, want %d %s", c.auth, resp.StatusCode, body, c.code, c.reason)
		}
	}
	if strings.Join(refused, ",") != "missing_token,bad_token,missing_scope" {
		t.Errorf("refusals reported: %v", refused)
	}
	cases := []struct {
		query string
		code  int
		seqs  int
	}{
		{"", 200, 5}, {"?from=2&to=3", 200, 2}, {"?from=4", 200, 2}, {"?from=9", 200, 0},
		{"?from=0", 400, 0}, {"?from=3&to=2", 400, 0}, {"?from=x", 400, 0}, {"?to=-1", 400, 0},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/ledger/records"+c.query, nil)
		req.Header.Set("Authorization", "Bearer tok-read")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: status %d %s", c.query, resp.StatusCode, body)
			continue
		}
		if c.code != 200 {
			continue
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil || len(raws) != c.seqs {
			t.Errorf("%s: %d records (%v): %s", c.query, len(raws), err, body)
			continue
		}
		// Each element is the stored record byte for byte.
		for _, raw := range raws {
			var r ledger.Record
			json.Unmarshal(raw, &r)
			stored, _ := l.Get(r.Seq)
			if string(stored) != string(raw) {
				t.Errorf("record %d differs from the stored bytes:\n%s\n%s", r.Seq, raw, stored)
			}
		}
	}
}

// A client that opened a connection and never sent a byte must not hold up
// shutdown (fasthttp alone would wait for its ReadTimeout, 60s).
func TestShutdownClosesSilentConnections(t *testing.T) {
	sc, ln := newSidecar(t, &fakeLedger{}, SidecarConfig{Upstream: "http://127.0.0.1:9"})
	go sc.Serve(ln)
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // let the server accept it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sc.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown waited on a silent connection: %v", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Errorf("silent connection still open after shutdown")
	}
}

// A SIGTERM that lands while the doors are still starting: Serve after
// Shutdown returns at once instead of serving forever.
func TestServeAfterShutdownReturns(t *testing.T) {
	sc, ln := newSidecar(t, &fakeLedger{}, SidecarConfig{Upstream: "http://127.0.0.1:9"})
	if err := sc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sc.Serve(ln) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Shutdown is still serving")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after Shutdown")
	}
}

// newSidecar builds a sidecar door over a test gate writing to l, and a
// loopback listener for it; the caller serves.
func newSidecar(t *testing.T, l gate.Ledger, cfg SidecarConfig) (*Sidecar, net.Listener) {
	t.Helper()
	g, err := testGate(t, l)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Gate, cfg.Logger = g, zerolog.Nop()
	sc, err := NewSidecar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return sc, ln
}
