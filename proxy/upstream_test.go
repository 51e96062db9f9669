package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// idleERP closes every idle keep-alive connection after idle, as Node's
// default 5 s keepAliveTimeout does (shorter here, to keep the test quick).
func idleERP(t *testing.T, idle time.Duration) (string, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := &http.Server{IdleTimeout: idle, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"balance":"1"}`))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), &hits
}

// TestStaleKeepAliveReadsSucceed: reads spaced wider than the ERP's idle
// timeout all succeed on both doors (the sidecar sends a read that met a
// closed pooled connection again on a fresh one; net/http does the same on
// the forward door), and each reaches the ERP once.
//
// UAPK_SOAK=1 runs it at full scale: an ERP with a 1 s idle timeout, 100
// reads 2 s apart on each door (about 3.5 minutes).
func TestStaleKeepAliveReadsSucceed(t *testing.T) {
	idle, gap, n := 50*time.Millisecond, 150*time.Millisecond, 5
	if os.Getenv("UAPK_SOAK") != "" {
		idle, gap, n = time.Second, 2*time.Second, 100
	}
	erp, hits := idleERP(t, idle)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	_, faddr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl)})
	fc := proxyClient(t, faddr, nil, "")
	sidecarClient := &http.Client{}
	defer sidecarClient.CloseIdleConnections()
	for i := range n {
		if i > 0 {
			time.Sleep(gap) // wider than the ERP's idle timeout
		}
		for door, get := range map[string]func() (*http.Response, error){
			"sidecar": func() (*http.Response, error) {
				return sidecarClient.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
			},
			"forward": func() (*http.Response, error) { return fc.Get(erp + "/api/v1/accounts/1010/balance") },
		} {
			resp, err := get()
			if err != nil {
				t.Fatalf("%s read %d: %v", door, i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s read %d: %d %s", door, i, resp.StatusCode, body)
			}
		}
	}
	if got := hits.Load(); got != int64(2*n) {
		t.Errorf("the ERP saw %d requests, want %d", got, 2*n)
	}
}

// TestUndeliveredIsSaid: with nothing listening at the ERP's address the
// agent gets 502 upstream_unavailable, delivered false, and the forward
// record says the same.
func TestUndeliveredIsSaid(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close()
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: "http://" + addr})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != 502 || !strings.Contains(string(body), `"error":"upstream_unavailable"`) || !strings.Contains(string(body), `"delivered":false`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if f := lastForward(t, fl); f.Reason != record.UpstreamUnavailable || f.Data["delivered"] != false {
		t.Errorf("forward record %+v", f)
	}
}

// TestTimeoutIs504: an ERP that does not answer within the upstream
// timeout gets the agent 504 upstream_timeout, delivered true.
func TestTimeoutIs504(t *testing.T) {
	block := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })}
	eln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(eln)
	defer srv.Close()
	defer close(block)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: "http://" + eln.Addr().String(), UpstreamTimeout: 200 * time.Millisecond})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != 504 || !strings.Contains(string(body), `"error":"upstream_timeout"`) || !strings.Contains(string(body), `"delivered":true`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if f := lastForward(t, fl); f.Reason != record.UpstreamTimeout {
		t.Errorf("forward record %+v", f)
	}
}

// TestSidecarNeverReusesAConnectionAfter101: an ERP that answers 101 to a
// request that asked for no upgrade speaks something else on that
// connection from then on; the agent gets 502 upstream_error and the next
// request goes on a new connection.
func TestSidecarNeverReusesAConnectionAfter101(t *testing.T) {
	var conns sync.Map
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Store(r.RemoteAddr, true)
		if n.Add(1) == 1 {
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: evil\r\n\r\n")
			bw.Flush()
			t.Cleanup(func() { c.Close() })
			return
		}
		w.Write([]byte(`{"balance":"1"}`))
	})}
	eln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(eln)
	defer srv.Close()
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: "http://" + eln.Addr().String()})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	c := &http.Client{}
	defer c.CloseIdleConnections()
	get := func() (int, string) {
		resp, err := c.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if status, body := get(); status != 502 || !strings.Contains(body, `"error":"upstream_error"`) {
		t.Fatalf("after a 101: %d %s", status, body)
	}
	if status, body := get(); status != 200 {
		t.Fatalf("the next request: %d %s", status, body)
	}
	seen := 0
	conns.Range(func(any, any) bool { seen++; return true })
	if seen != 2 {
		t.Errorf("the ERP saw %d connections, want 2 (the switched one never reused)", seen)
	}
}
