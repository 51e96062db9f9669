package durablefloor

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func post(t *testing.T, addr, body string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/api/v1/reconciliations")
	req.Header.SetMethod("POST")
	req.SetBodyString(body)
	if err := fasthttp.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode(), string(resp.Body())
}

// TestProxyFloor: the floor forwards a request only once its line, headers
// and body are in the file; a failed write is answered 503 and the
// upstream never sees the request.
func TestProxyFloor(t *testing.T) {
	var seen atomic.Int64
	upstream := serve(t, func(ctx *fasthttp.RequestCtx) {
		seen.Add(1)
		ctx.SetBodyString("upstream saw " + string(ctx.Request.Body()))
	})
	if code, body := post(t, serve(t, Proxy(upstream, nil)), "plain"); code != 200 || body != "upstream saw plain" {
		t.Fatalf("plain proxy: %d %q", code, body)
	}

	path := filepath.Join(t.TempDir(), "floor")
	w, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	floor := serve(t, Proxy(upstream, w.Request))
	if code, body := post(t, floor, `{"marker":"durable-1"}`); code != 200 || body != `upstream saw {"marker":"durable-1"}` {
		t.Fatalf("floor: %d %q", code, body)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("POST /api/v1/reconciliations")) || !bytes.Contains(got, []byte(`{"marker":"durable-1"}`)) {
		t.Fatal("the forwarded request's line or body is not in the floor's file")
	}
	if code, _ := post(t, floor, "after close"); code != fasthttp.StatusServiceUnavailable {
		t.Fatalf("floor with a closed writer: %d, want 503", code)
	}
	if n := seen.Load(); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2 (nothing after the failed write)", n)
	}
}
