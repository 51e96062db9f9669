package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// framingCases are request-smuggling shapes (the classes http-garden and
// PortSwigger's research probe): each is one agent connection's bytes.
var framingCases = []struct{ name, raw string }{
	{"CL.TE", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/records/JE-1 HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"TE.CL", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"},
	{"two Content-Length", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}DELETE /api/v1/records/JE-1 HTTP/1.1\r\n\r\n"},
	{"obs-fold", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\n{}"},
	{"bare LF", "POST /api/v1/notes HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}"},
	{"bare CR in a header", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nX-A: 1\rContent-Length: 40\r\nContent-Length: 2\r\n\r\n{}"},
	{"TE with a space", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}"},
	{"pipelined", "POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}POST /api/v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"},
}

// TestFramingAgainstTheERPsParser: whatever framing the agent sends, every
// request Go's net/http server (the ERP's parser here) reads is one the gate
// recorded as allowed, with the same method, target and body hash; nothing
// else is smuggled past the gate.
func TestFramingAgainstTheERPsParser(t *testing.T) {
	type seen struct{ method, target, sum string }
	var mu sync.Mutex
	var got []seen
	erp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := sha256.Sum256(b)
		mu.Lock()
		got = append(got, seen{r.Method, r.RequestURI, hex.EncodeToString(s[:])})
		mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	defer erp.Close()
	fl := &fakeLedger{}
	g := fwdGate(t, fl, `"default_policy": "DENY"`, `"default_policy": "RECORD_AND_ALLOW"`)
	ln := serveSidecar(t, g, erp.URL)
	for _, tc := range framingCases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			n := len(fl.all())
			rawExchange(t, ln.Addr().String(), tc.raw)
			allowed := map[seen]int{}
			for _, e := range fl.all()[n:] {
				if e.Kind == record.KindRequest && e.Decision == record.Allow {
					u := e.Data["url"].(string)
					target := u[strings.Index(u[len("http://"):], "/")+len("http://"):]
					allowed[seen{e.Data["method"].(string), target, e.Data["body_sha256"].(string)}]++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.name == "pipelined" && len(got) != 2 {
				t.Errorf("pipelined: the ERP read %d requests, want 2 (the check itself must see traffic)", len(got))
			}
			for _, s := range got {
				if allowed[s] == 0 {
					t.Errorf("the ERP read %s %s (body %s…), which the gate never allowed; allowed: %v", s.method, s.target, s.sum[:8], allowed)
					continue
				}
				allowed[s]--
			}
		})
	}
}

// rawExchange writes raw on a new connection and reads until the proxy
// closes it (or a short while passes).
func rawExchange(t *testing.T, addr, raw string) {
	t.Helper()
	c, err := (&net.Dialer{}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(raw))
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, c)
}
