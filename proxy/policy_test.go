package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// seenERP records the headers of what reached it and answers with a
// spoofed X-UAPK-* trailer.
type seenERP struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newSeenERP(t *testing.T) *seenERP {
	e := &seenERP{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.seen = append(e.seen, r.Header.Clone())
		e.mu.Unlock()
		w.Header().Set("Trailer", "X-Uapk-Decision, X-Erp-Sum")
		w.Write([]byte(`{"balance":"1"}`))
		w.Header().Set("X-Uapk-Decision", "deny")
		w.Header().Set("X-Erp-Sum", "ok")
		w.Header().Set(http.TrailerPrefix+"X-Uapk-Record", "99") // unannounced
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *seenERP) last(t *testing.T) http.Header {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		t.Fatal("nothing reached the ERP")
	}
	return e.seen[len(e.seen)-1]
}

func (e *seenERP) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.seen)
}

// spoofed are headers an agent may send that the ERP must never see as
// sent: underscore names that CGI-style servers fold into X-UAPK-* or
// other dashes, and forwarding headers that ERPs trust for client address
// and URL building.
var spoofed = [][2]string{
	{"X_UAPK_Capability", "v4.public.forged"},
	{"X_Forwarded_Host", "evil.example"},
	{"Forwarded", "for=6.6.6.6;host=evil.example"},
	{"X-Forwarded-For", "6.6.6.6"},
	{"X-Forwarded-Host", "evil.example"},
	{"X-Forwarded-Proto", "https"},
}

func checkPolicy(t *testing.T, got http.Header) {
	t.Helper()
	for name := range got {
		if strings.Contains(name, "_") {
			t.Errorf("%s reached the ERP", name)
		}
	}
	if got.Get("X-Forwarded-Host") != "" || strings.Contains(got.Get("Forwarded"), "6.6.6.6") ||
		got.Get("X-Forwarded-For") != "127.0.0.1" || got.Get("X-Forwarded-Proto") != "http" ||
		got.Get("Forwarded") != `for="127.0.0.1";proto=http` {
		t.Errorf("forwarding headers the ERP got: Forwarded %q, X-Forwarded-For %q, -Proto %q, -Host %q",
			got.Get("Forwarded"), got.Get("X-Forwarded-For"), got.Get("X-Forwarded-Proto"), got.Get("X-Forwarded-Host"))
	}
}

func checkAnswer(t *testing.T, resp *http.Response) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body) // trailers arrive with the body's end
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"balance":"1"}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for name := range resp.Trailer {
		if hasPrefixFold(name, "x-uapk-") {
			t.Errorf("the ERP's trailer %s reached the agent", name)
		}
	}
	if d := resp.Header.Values("X-Uapk-Decision"); len(d) != 1 || d[0] != "allow" {
		t.Errorf("X-UAPK-Decision %v", d)
	}
}

func TestHeaderPolicyOnTheSidecar(t *testing.T) {
	erp := newSeenERP(t)
	sc, ln := newSidecar(t, &fakeLedger{}, SidecarConfig{Upstream: erp.URL})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	base := "http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance"

	req, _ := http.NewRequest("GET", base, nil)
	for _, h := range spoofed {
		req.Header[h[0]] = []string{h[1]} // as sent, not canonicalised
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, resp)
	checkPolicy(t, erp.last(t))

	for _, h := range []string{"X-HTTP-Method-Override", "X-Original-URL"} {
		before := erp.count()
		req, _ := http.NewRequest("GET", base, nil)
		req.Header.Set(h, "DELETE")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), string(record.AmbiguousRequest)) || erp.count() != before {
			t.Errorf("%s: %d %s, forwarded %d", h, resp.StatusCode, body, erp.count()-before)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestHeaderPolicyOnTheForwardDoor(t *testing.T) {
	erp := newSeenERP(t)
	fl := &fakeLedger{}
	_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl), Logger: zerolog.Nop()})
	c := proxyClient(t, addr, nil, "")
	base := erp.URL + "/api/v1/accounts/1010/balance"

	req, _ := http.NewRequest("GET", base, nil)
	for _, h := range spoofed {
		req.Header[h[0]] = []string{h[1]}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, resp)
	checkPolicy(t, erp.last(t))

	before := erp.count()
	resp, err = c.Get(base + "?_method=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), string(record.AmbiguousRequest)) || erp.count() != before {
		t.Errorf("_method: %d %s, forwarded %d", resp.StatusCode, body, erp.count()-before)
	}
}

// The sidecar speaks HTTP/1.1 to the ERP whatever the agent's request line
// said, and forwards no CONNECT or HTTP/2 preface even when the manifest
// records and allows what it does not classify.
func TestSidecarRequestLine(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"default_policy": "DENY"`, `"default_policy": "RECORD_AND_ALLOW"`)
	ln := serveSidecar(t, g, erp.URL)
	resp, _ := rawProxy(t, ln.Addr().String(), "GET /api/v1/accounts/1010/balance HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
	hits := erp.Hits()
	if resp.StatusCode != 200 || len(hits) != 1 || hits[0].proto != "HTTP/1.1" {
		t.Fatalf("%d, ERP saw %+v", resp.StatusCode, hits)
	}
	for _, m := range []string{"CONNECT", "PRI"} {
		resp, body := rawProxy(t, ln.Addr().String(), m+" /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 400 || !strings.Contains(body, string(record.BadTarget)) || len(erp.Hits()) != 1 {
			t.Errorf("%s: %d %s, ERP hits %d", m, resp.StatusCode, body, len(erp.Hits()))
		}
	}
}

// Two Content-Type (or Content-Encoding, Content-Length) headers: parsers
// take different ones, so neither door forwards such a request.
func TestRepeatedBodyHeadersAreRefused(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp.URL})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	_, faddr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl)})
	host := strings.TrimPrefix(erp.URL, "http://")
	for _, h := range []string{"Content-Type: application/json\r\nContent-Type: text/plain", "Content-Encoding: identity\r\ncontent-encoding: gzip"} {
		sresp, sbody := rawProxy(t, ln.Addr().String(), "POST /api/v1/reconciliations HTTP/1.1\r\nHost: x\r\n"+h+"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		fresp, fbody := rawProxy(t, faddr, "POST http://"+host+"/api/v1/reconciliations HTTP/1.1\r\nHost: "+host+"\r\n"+h+"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		for door, got := range map[string][2]string{"sidecar": {fmt.Sprint(sresp.StatusCode), sbody}, "forward": {fmt.Sprint(fresp.StatusCode), fbody}} {
			if got[0] != "400" || !strings.Contains(got[1], string(record.AmbiguousRequest)) {
				t.Errorf("%s, %q: %s %s", door, h, got[0], got[1])
			}
		}
	}
	if len(erp.Hits()) != 0 {
		t.Errorf("the ERP got %d requests", len(erp.Hits()))
	}
}

// Connection cannot take away the headers the decision was made with: a
// Content-Type the Connection header names still reaches the ERP, and the
// sidecar adds none of its own to a body sent without one.
func TestConnectionCannotStripEndToEndHeaders(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"default_policy": "DENY"`, `"default_policy": "RECORD_AND_ALLOW"`)
	ln := serveSidecar(t, g, erp.URL)
	_, faddr := startForward(t, ForwardConfig{Gate: g})
	host := strings.TrimPrefix(erp.URL, "http://")
	for door, tc := range map[string]struct{ addr, target, headers string }{
		"sidecar, Connection names it": {ln.Addr().String(), "/api/v1/notes", "Content-Type: application/json\r\nConnection: Content-Type, close\r\n"},
		"forward, Connection names it": {faddr, "http://" + host + "/api/v1/notes", "Content-Type: application/json\r\nConnection: Content-Type, close\r\n"},
		"sidecar, none sent":           {ln.Addr().String(), "/api/v1/notes", "Connection: close\r\n"},
	} {
		before := len(erp.Hits())
		resp, body := rawProxy(t, tc.addr, "POST "+tc.target+" HTTP/1.1\r\nHost: "+host+"\r\n"+tc.headers+"Content-Length: 2\r\n\r\n{}")
		hits := erp.Hits()
		if resp.StatusCode != 200 || len(hits) != before+1 {
			t.Fatalf("%s: %d %s", door, resp.StatusCode, body)
		}
		want := "application/json"
		if strings.HasSuffix(door, "none sent") {
			want = ""
		}
		if ct := hits[len(hits)-1].header.Get("Content-Type"); ct != want {
			t.Errorf("%s: the ERP got Content-Type %q, want %q", door, ct, want)
		}
	}
}

// On the sidecar a request target that is not origin-form ("*", an
// absolute URI) is refused as it came, the base path not prefixed.
func TestSidecarRefusesOtherTargetForms(t *testing.T) {
	erp := newTestERP(t, false)
	sc, ln := newSidecar(t, &fakeLedger{}, SidecarConfig{Upstream: erp.URL + "/erp"})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	for _, target := range []string{"*", "http://elsewhere.example/api/v1/accounts/1010/balance"} {
		resp, body := rawProxy(t, ln.Addr().String(), "GET "+target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 400 || !strings.Contains(body, string(record.AmbiguousPath)) {
			t.Errorf("%s: %d %s", target, resp.StatusCode, body)
		}
	}
	if len(erp.Hits()) != 0 {
		t.Errorf("the ERP got %+v", erp.Hits())
	}
}

// serveSidecar serves a sidecar door over g to upstream on loopback until
// the test ends.
func serveSidecar(t *testing.T, g *gate.Gate, upstream string) net.Listener {
	t.Helper()
	sc, err := NewSidecar(SidecarConfig{Gate: g, Upstream: upstream, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sc.Serve(ln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	return ln
}
