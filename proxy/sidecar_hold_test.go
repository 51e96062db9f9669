package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

const heldApprover = "fm@corp.example"

// heldWorld is a sidecar whose journal entries are held for hold, the
// finance manager who approves them, and an ERP that keeps every request
// it gets as it got it.
type heldWorld struct {
	t    testing.TB
	g    *gate.Gate
	sc   *Sidecar
	addr string
	key  ed25519.PrivateKey

	mu   sync.Mutex
	hits []seenRequest
}

type seenRequest struct {
	method, uri string
	header      http.Header
	body        string
}

func newHeldWorld(t testing.TB, hold string) *heldWorld {
	t.Helper()
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(raw), `"hold": "0s"`, `"hold": "`+hold+`"`, 1)
	doc = strings.Replace(doc, `"app_id":`, `"max_pending": 100000, "app_id":`, 1) // room for the benchmark's
	m, err := rules.ParseManifest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemText := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "\n", "\n      ")
	p, err := rules.ParsePrincipals([]byte(fmt.Sprintf(
		"principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n  - id: %s\n    roles: [finance_manager]\n    public_key: |\n      %s\n",
		heldApprover, pemText)), ".")
	if err != nil {
		t.Fatal(err)
	}
	w := &heldWorld{t: t, key: priv}
	erp := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		w.hits = append(w.hits, seenRequest{r.Method, r.RequestURI, r.Header.Clone(), string(b)})
		w.mu.Unlock()
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusCreated)
		rw.Write([]byte(`{"id":"JE-1","status":"posted"}`))
	}))
	t.Cleanup(erp.Close)
	eng := rules.NewEngine(m, p)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(gw)
	if err != nil {
		t.Fatal(err)
	}
	ml := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(ml), Ledger: ml, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if w.g, err = gate.New(gate.Config{Engine: eng, Ledger: &fakeLedger{}, Approvals: svc, Logger: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	if w.sc, err = NewSidecar(SidecarConfig{Gate: w.g, Upstream: erp.URL, Logger: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go w.sc.Serve(ln)
	t.Cleanup(func() { w.sc.Shutdown(context.Background()) })
	w.addr = ln.Addr().String()
	return w
}

func (w *heldWorld) seen() []seenRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]seenRequest(nil), w.hits...)
}

// send writes a raw request on a connection of its own, and returns it and
// a reader for the answer.
func (w *heldWorld) send(raw string) (net.Conn, *bufio.Reader) {
	w.t.Helper()
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, raw); err != nil {
		w.t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// pendingOne waits until one request is held and returns its approval.
func (w *heldWorld) pendingOne() *approvals.Approval {
	w.t.Helper()
	w.waitHeld(1)
	list, err := w.g.Approvals().List(approvals.StatusPending)
	if err != nil || len(list) != 1 {
		w.t.Fatalf("pending: %d, %v", len(list), err)
	}
	return list[0]
}

// waitHeld waits until n requests are held.
func (w *heldWorld) waitHeld(n int) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.g.Approvals().Held() != n {
		if time.Now().After(deadline) {
			w.t.Fatalf("%d held, want %d", w.g.Approvals().Held(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *heldWorld) approve(a *approvals.Approval) {
	w.t.Helper()
	at := time.Now().UTC().Format(time.RFC3339)
	got, ref, err := w.g.Approvals().Decide(a.ID, approvals.Submission{Approver: heldApprover, Decision: "approve",
		Reason: "test", SignedAt: at, Signature: approvals.Sign(w.key, a.ID, a.Digest, "approve", heldApprover, at)})
	if err != nil || ref != nil || got.Status != approvals.StatusApproved {
		w.t.Fatalf("approve: %+v %+v %v", got, ref, err)
	}
}

const heldBody = `{"reference":"JE-Q3-0042","date":"2026-09-30","account":"6100-Accrued-Expenses","amount":"250000.00","memo":"caf\u00e9 accrual — Q3"}`

// heldRequest is a journal entry with headers the ERP reads: each must
// reach it as the agent sent it, after the hold as without one.
func heldRequest(addr string) string { return heldRequestOf(addr, heldBody) }

func heldRequestOf(addr, body string) string {
	return "POST /api/v1/journal-entries?batch=q3%2F2026&x=1 HTTP/1.1\r\n" +
		"Host: " + addr + "\r\n" +
		"Content-Type: application/json; charset=utf-8\r\n" +
		"X-Request-Id: 7f3c9a\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Language: de-CH\r\n" +
		"Idempotency-Key: q3-0042\r\n" +
		"X-Erp-Tenant: corp-01\r\n" +
		"X-Erp-Tenant: corp-02\r\n" +
		"Cookie: session=abc; theme=dark\r\n" +
		"X-UAPK-Justification: Q3 accrual\r\n" +
		"Content-Length: " + fmt.Sprint(len(body)) + "\r\n" +
		"\r\n" + body
}

// A held request is parked off fasthttp's worker with a copy of what the
// release needs: the ERP must get it exactly once, with its method, target,
// body and every header it would have got unheld.
func TestHeldRequestIsReleasedAsSentOnce(t *testing.T) {
	w := newHeldWorld(t, "30s")
	_, r := w.send(heldRequest(w.addr))
	a := w.pendingOne()
	if a.Body != heldBody {
		t.Fatalf("the approval holds body %q", a.Body)
	}
	if len(w.seen()) != 0 {
		t.Fatal("the ERP got the entry before its approval")
	}
	w.approve(a)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || resp.Header.Get("X-UAPK-Decision") != "allow" || string(body) != `{"id":"JE-1","status":"posted"}` {
		t.Fatalf("%d %s %s", resp.StatusCode, resp.Header, body)
	}
	waitFor(t, func() bool { return w.g.Approvals().Held() == 0 })
	time.Sleep(50 * time.Millisecond) // a second release would have come by now
	hits := w.seen()
	if len(hits) != 1 {
		t.Fatalf("the ERP got %d requests, want 1", len(hits))
	}
	got := hits[0]
	if got.method != "POST" || got.uri != "/api/v1/journal-entries?batch=q3%2F2026&x=1" || got.body != heldBody {
		t.Errorf("the ERP got %s %s %q", got.method, got.uri, got.body)
	}
	want := map[string][]string{
		"Content-Type":    {"application/json; charset=utf-8"},
		"X-Request-Id":    {"7f3c9a"},
		"Accept":          {"application/json"},
		"Accept-Language": {"de-CH"},
		"Idempotency-Key": {"q3-0042"},
		"X-Erp-Tenant":    {"corp-01", "corp-02"},
		"Cookie":          {"session=abc; theme=dark"},
		"Content-Length":  nil, // net/http moves it to the request
	}
	for name, vals := range want {
		if vals != nil && strings.Join(got.header[name], "|") != strings.Join(vals, "|") {
			t.Errorf("%s: the ERP got %q, want %q", name, got.header[name], vals)
		}
	}
	if got.header.Get(gate.HeaderCapability) == "" {
		t.Error("the released entry carries no capability token")
	}
	if got.header.Get(gate.HeaderJustification) != "" {
		t.Error("an X-UAPK- header reached the ERP")
	}
	if cur, _ := w.g.Approvals().Get(a.ID); cur.Consumed == 0 {
		t.Error("the approval is not consumed by the release")
	}
	// The same approval cannot let the entry through again.
	_, r2 := w.send(strings.Replace(heldRequest(w.addr), "X-UAPK-Justification: Q3 accrual\r\n",
		"X-UAPK-Approval-Id: "+a.ID+"\r\n", 1))
	resp2, err := http.ReadResponse(r2, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode == 201 || len(w.seen()) != 1 {
		t.Errorf("a retry on the used approval: %d, the ERP got %d", resp2.StatusCode, len(w.seen()))
	}
}

// The held answer is the unheld one: the same request on an approval that
// is approved before it is sent reaches the ERP with the same headers and
// body as the one released from its hold.
func TestHeldReleaseMatchesARetryOnTheApproval(t *testing.T) {
	w := newHeldWorld(t, "30s")
	// First: held, then approved while the agent waits.
	_, r := w.send(heldRequest(w.addr))
	w.approve(w.pendingOne())
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("held: %v %v", resp, err)
	}
	resp.Body.Close()
	// Second: the agent hangs up while held; the approval is used by a
	// retry that names it.
	c, _ := w.send(heldRequest(w.addr))
	a := w.pendingOne()
	c.Close()
	w.approve(a)
	waitFor(t, func() bool { return w.g.Approvals().Held() == 0 })
	_, r2 := w.send(strings.Replace(heldRequest(w.addr), "X-UAPK-Justification: Q3 accrual\r\n",
		"X-UAPK-Approval-Id: "+a.ID+"\r\n", 1))
	resp2, err := http.ReadResponse(r2, nil)
	if err != nil || resp2.StatusCode != 201 {
		t.Fatalf("retry: %v %v", resp2, err)
	}
	resp2.Body.Close()
	hits := w.seen()
	if len(hits) != 2 {
		t.Fatalf("the ERP got %d requests, want 2 (the one that hung up is never sent)", len(hits))
	}
	held, retried := hits[0], hits[1]
	for _, h := range []http.Header{held.header, retried.header} {
		for _, name := range []string{gate.HeaderCapability, "Forwarded", "X-Forwarded-For"} {
			h.Del(name) // per request: the token, the agent's port
		}
	}
	if held.method != retried.method || held.uri != retried.uri || held.body != retried.body ||
		fmt.Sprint(held.header) != fmt.Sprint(retried.header) {
		t.Errorf("released from the hold:\n  %s %s %v %q\nretried on the approval:\n  %s %s %v %q",
			held.method, held.uri, held.header, held.body, retried.method, retried.uri, retried.header, retried.body)
	}
}

// Shutdown answers a parked agent its 202 and waits for it; the ERP never
// sees the entry.
func TestShutdownAnswersParkedAgents(t *testing.T) {
	w := newHeldWorld(t, "30s")
	_, r := w.send(heldRequest(w.addr))
	w.pendingOne()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.sc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("X-UAPK-Decision") != "pending" {
		t.Errorf("%d %s", resp.StatusCode, resp.Header)
	}
	if n := len(w.seen()); n != 0 {
		t.Errorf("the ERP got %d requests", n)
	}
}

// BenchmarkParkedRequest measures what a parked request keeps, after a
// collection: heap, stack and goroutines for each of b.N held at once
// (both ends of each socket live in this process; the approvals are in
// memory). go test -run '^$' -bench ParkedRequest -benchtime 2000x ./proxy/
func BenchmarkParkedRequest(b *testing.B) {
	w := newHeldWorld(b, "10m")
	conns := make([]net.Conn, 0, b.N)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	b.ResetTimer()
	for i := range b.N {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		raw := heldRequestOf(w.addr, strings.Replace(heldBody, "0042", fmt.Sprintf("%06d", i), 1))
		if _, err := io.WriteString(c, raw); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 {
			w.waitHeld(i + 1) // bounded in flight, as agents trickle in
		}
	}
	w.waitHeld(b.N)
	b.StopTimer()
	time.Sleep(100 * time.Millisecond) // fasthttp's hijack goroutines return
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := float64(b.N)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/held")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/held")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/held")
}

// The workers that served a burst of held requests leave soon after their
// requests are parked, before the burst's memory is given back: their
// stacks are part of what is given back. Each agent here is held on a
// connection of its own; once all are parked, none of them keeps a
// goroutine, the workers included.
func TestParkedBurstLetsItsWorkersGo(t *testing.T) {
	if got := newHeldWorld(t, "10m").sc.server.MaxIdleWorkerDuration; got != idleWorker || 2*idleWorker >= burstQuiet {
		t.Fatalf("idle workers kept %s (want %s), give-back after %s: workers must be gone (2 x idle) before", got, idleWorker, burstQuiet)
	}
	w := newHeldWorld(t, "10m")
	base := runtime.NumGoroutine()
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.send(heldRequestOf(w.addr, fmt.Sprintf(`{"reference":"JE-%d","date":"2026-09-30","account":"6100","amount":"250000.00"}`, i)))
		}()
	}
	wg.Wait()
	w.waitHeld(n)
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > base+4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines with %d requests parked, %d before", runtime.NumGoroutine(), n, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The memory a burst of parks left is given back when the burst is over;
// when the burst paused and went on, once more at its real end; and when
// the burst's aftermath (the archive sealing a segment) grew the heap
// after that, once more again.
func TestGiveBackAfterABurstItsTailAndItsAftermath(t *testing.T) {
	var tb parkedTable
	tb.init()
	freed := make(chan struct{}, 10)
	var garbage atomic.Uint64
	tb.free = func() { garbage.Store(0); freed <- struct{}{} }
	tb.garbage = garbage.Load
	park := func(n int) {
		for range n {
			if !tb.add(&parkedConn{}) {
				t.Fatal("add refused")
			}
		}
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-freed:
		case <-time.After(30 * time.Second):
			t.Fatalf("no give-back %s", what)
		}
	}
	park(burstParks - 1)
	select {
	case <-freed:
		t.Fatal("given back before a burst")
	case <-time.After(2 * burstQuiet):
	}
	park(1)
	wait("after the burst")
	park(5) // the burst goes on after a pause
	wait("after the burst's tail")
	garbage.Store(settleGrowth + 1) // what the burst set off, after its last park
	wait("after the burst's aftermath")
	garbage.Store(settleGrowth + 1)
	wait("after the burst's aftermath, twice")
	garbage.Store(settleGrowth + 1)
	select {
	case <-freed:
		t.Fatalf("more than %d give-backs after a burst's own", settleGives)
	case <-time.After(2 * burstQuiet):
	}
}

// heldHeadSeeds are requests whose line and headers a held request keeps
// as written (heldHead): what the ERP gets after the hold must be what it
// gets from a parsed copy of the request (the reference).
var heldHeadSeeds = []string{
	heldRequest("127.0.0.1:8080"),
	"POST /api/v1/journal-entries HTTP/1.1\r\nHost: erp\r\nContent-Length: 2\r\n\r\n{}",
	"POST /a HTTP/1.0\r\nhost: erp\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-lower: v\r\n\r\n{}",
	"HEAD /a?b=c%2Fd HTTP/1.1\r\nHost: erp\r\n\r\n",
	"POST http://erp.example/a/../b?x HTTP/1.1\r\nHost: other\r\nContent-Length: 1\r\n\r\nx",
	"POST /a HTTP/1.1\r\nHost: erp\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: erp\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: erp\r\nCookie: a=b;c=d; flag; =e\r\nCookie: f=g\r\nContent-Length: 0\r\n\r\n",
	"PUT /a HTTP/1.1\r\nHost: erp\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
	"POST /a HTTP/1.1\r\nHost: erp\r\nUser-Agent: agent/1\r\nX-Empty:\r\nX-Dup: 1\r\nx-dup: 2\r\nAuthorization: Bearer t\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n\x1f\x8b\x00",
	"POST /a HTTP/1.1\r\nHost: erp\r\nContent-Type: multipart/form-data; boundary=xx\r\nContent-Length: 0\r\n\r\n",
	"DELETE /a HTTP/1.1\r\nHost: erp\r\nX-UAPK-Approval-Id: apr_x\r\nX-UAPK-Justification: caf\xc3\xa9\r\n\r\n",
}

// released returns what the ERP would get of the request raw as fasthttp's
// server reads it, parked as a copy (compact false: the reference) or as
// its written head (heldHead); ok is false when raw is not a request, or
// when heldHead keeps it as a copy.
func released(t testing.TB, raw []byte, compact bool) (head, wire []byte, ok bool) {
	var in fasthttp.Request
	if in.ReadLimitBody(bufio.NewReader(bytes.NewReader(raw)), 1<<20) != nil {
		return nil, nil, false
	}
	// What park does with it.
	in.Header.RawHeaders()
	body := bytes.Clone(in.Body())
	in.ResetBody()
	req := new(fasthttp.Request)
	if compact {
		h, ok := heldHead(&in.Header)
		if !ok {
			return nil, nil, false
		}
		if err := readHead(&req.Header, h); err != nil {
			t.Fatalf("heldHead's head does not read back: %v\n%q", err, h)
		}
	} else {
		in.CopyTo(req)
	}
	req.SetBodyRaw(body)
	// What the answer and forward do with it.
	var out fasthttp.Request
	req.CopyTo(&out)
	head = bytes.Clone(out.Header.Header())
	stripRequest(&out.Header)
	out.Header.Del("Authorization")
	out.Header.Set("Forwarded", "for=127.0.0.1;proto=http")
	out.Header.Set("X-Forwarded-For", "127.0.0.1")
	out.Header.Set("X-Forwarded-Proto", "http")
	out.Header.Set(gate.HeaderCapability, "cap")
	out.SetRequestURI("http://erp.example/api/v1/journal-entries?x=1")
	out.Header.SetHost("erp.example")
	out.Header.SetProtocol("HTTP/1.1")
	out.Header.SetNoDefaultContentType(true)
	out.SetConnectionClose()
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	if err := out.Write(bw); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	return head, b.Bytes(), true
}

func checkReleasedSame(t testing.TB, raw []byte) bool {
	h1, w1, ok := released(t, raw, true)
	if !ok {
		return false
	}
	h0, w0, _ := released(t, raw, false)
	if !bytes.Equal(h0, h1) || !bytes.Equal(w0, w1) {
		t.Fatalf("released from its head differs from the copy:\nraw  %q\ncopy %q\n     %q\nhead %q\n     %q", raw, h0, w0, h1, w1)
	}
	return true
}

// A held request kept as its written head is released exactly as one kept
// as a parsed copy: the same head, and the same bytes to the ERP.
func TestHeldHeadReleasesTheRequestAsRead(t *testing.T) {
	compact := 0
	for _, raw := range heldHeadSeeds {
		if checkReleasedSame(t, []byte(raw)) {
			compact++
		}
	}
	if compact < len(heldHeadSeeds)-1 {
		t.Fatalf("%d of %d seeds kept as a head", compact, len(heldHeadSeeds))
	}
	// One with trailers is kept as a copy.
	var in fasthttp.Request
	if err := in.ReadLimitBody(bufio.NewReader(bytes.NewReader([]byte(heldHeadSeeds[6]))), 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, ok := heldHead(&in.Header); ok {
		t.Fatal("a request with trailers kept as a head")
	}
}

func FuzzHeldHead(f *testing.F) {
	for _, s := range heldHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkReleasedSame(t, raw) })
}

// A held request whose head cannot be read back is not restored: its
// release is refused (gone), so it is never forwarded, and its answer is
// the 202.
func TestHeldHeadThatDoesNotReadBackIsNotReleased(t *testing.T) {
	w := newHeldWorld(t, "10m")
	p := &parkedConn{s: w.sc, v: &gate.Verdict{ApprovalID: "apr_x"}, head: []byte("\x00 not a request\r\n\r\n"), body: []byte("{}")}
	if p.restore() || p.req != nil {
		t.Fatal("a head that does not read back was restored")
	}
	p = &parkedConn{s: w.sc, v: &gate.Verdict{ApprovalID: "apr_x"}, head: []byte("POST /a HTTP/1.1\r\nHost: erp\r\nContent-Length: 2\r\n\r\n"), body: []byte("{}")}
	if !p.restore() || string(p.req.Body()) != "{}" || string(p.req.Header.Method()) != "POST" || p.head != nil {
		t.Fatalf("restore: %v", p.req)
	}
}
