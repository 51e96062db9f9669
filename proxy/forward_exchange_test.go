package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ERP connections: kept alive and reused by requests in flight together,
// and never opened for a request the gate refused.

// countingDial dials like the door's default and counts the dials.
func countingDial(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: fwdDialTimeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, network, addr)
	}
}

// barrierERP answers once `width` requests are in its handler at the same
// time (or after 5s), so that each round holds `width` ERP connections
// busy at once.
func barrierERP(t *testing.T, width int) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	var hits, accepted atomic.Int64
	var mu sync.Mutex
	in, release := 0, make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		in++
		ch := release
		if in == width {
			close(release)
			in, release = 0, make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"account":"1010-Cash","balance":"1.00"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits, &accepted
}

func TestForwardReusesERPConnections(t *testing.T) {
	const width, rounds = 32, 5
	for _, tc := range []struct {
		name    string
		perHost int
		// reuse: at most this many ERP connections over all rounds
		// (width, plus a few a put-back race may add); without it: at least.
		reuse bool
		bound int
	}{
		{"default pool", 0, true, width + width/2},
		// net/http's default pool keeps 2: each round after the first
		// opens width-2 connections again. The test must see that.
		{"pool of 2", 2, false, width + (rounds-1)*(width-2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			erp, hits, accepted := barrierERP(t, width)
			var dials atomic.Int64
			_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, &fakeLedger{}), DialContext: countingDial(&dials),
				MaxIdleConnsPerHost: tc.perHost})
			tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), MaxIdleConnsPerHost: 2 * width}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for range rounds {
				var wg sync.WaitGroup
				for range width {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := c.Get(erp.URL + "/api/v1/accounts/1010-Cash")
						if err != nil {
							t.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							t.Errorf("status %d", resp.StatusCode)
						}
					}()
				}
				wg.Wait()
			}
			if hits.Load() != width*rounds {
				t.Fatalf("ERP got %d requests, want %d", hits.Load(), width*rounds)
			}
			n := dials.Load()
			if n != accepted.Load() {
				t.Errorf("%d dials but the ERP accepted %d connections", n, accepted.Load())
			}
			if tc.reuse && n > int64(tc.bound) {
				t.Errorf("%d ERP connections for %d requests, %d at a time: want at most %d", n, width*rounds, width, tc.bound)
			}
			if !tc.reuse && n < int64(tc.bound) {
				t.Errorf("%d ERP connections with a pool of 2: want at least %d", n, tc.bound)
			}
		})
	}
}

func TestForwardRefusalOpensNoERPConnection(t *testing.T) {
	erp, hits, accepted := barrierERP(t, 1)
	var dials atomic.Int64
	_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, &fakeLedger{}), DialContext: countingDial(&dials), MaxBody: 64})
	c := proxyClient(t, addr, nil, "")
	for _, r := range []struct {
		name, method, url, body string
		headers                 []string
		want                    int
	}{
		{"denied action", "DELETE", erp.URL + "/api/v1/audit-log/7", "", nil, http.StatusForbidden},
		{"no action matches", "GET", erp.URL + "/api/v1/payroll", "", nil, http.StatusForbidden},
		{"host not in erp_hosts", "GET", "http://erp.elsewhere.example/api/v1/accounts/1", "", nil, http.StatusForbidden},
		{"unknown app", "GET", erp.URL + "/api/v1/accounts/1", "", []string{"X-UAPK-App", "someone-else"}, http.StatusForbidden},
		{"body over the limit", "POST", erp.URL + "/api/v1/reconciliations", strings.Repeat("x", 200), nil, http.StatusRequestEntityTooLarge},
		{"approval needed", "POST", erp.URL + "/api/v1/journal-entries", `{"amount":10}`,
			[]string{"X-UAPK-On-Behalf-Of", "accountant@corp.example", "Content-Type", "application/json"}, 0},
	} {
		got := send(t, c, r.method, r.url, r.body, r.headers...)
		if r.want != 0 && got.status != r.want {
			t.Errorf("%s: status %d, want %d: %s", r.name, got.status, r.want, got.body)
		}
		if got.status == http.StatusOK {
			t.Errorf("%s: forwarded: %s", r.name, got.body)
		}
		if n := dials.Load(); n != 0 {
			t.Fatalf("%s: the door dialled the ERP %d times", r.name, n)
		}
	}
	if hits.Load() != 0 || accepted.Load() != 0 {
		t.Fatalf("the ERP saw %d requests on %d connections", hits.Load(), accepted.Load())
	}
	// The counter sees a forwarded request's connection.
	if got := send(t, c, "GET", erp.URL+"/api/v1/accounts/1", ""); got.status != http.StatusOK {
		t.Fatalf("allowed GET: %d %s", got.status, got.body)
	}
	if dials.Load() != 1 || accepted.Load() != 1 {
		t.Fatalf("allowed GET: %d dials, %d connections accepted", dials.Load(), accepted.Load())
	}
}

// TestForwardUpstreamTimeout: the upstream timeout bounds the whole ERP
// exchange, body included, on the forward door, and a timeout is not taken
// for the agent going: an ERP that sends no header gets the agent 504
// upstream_timeout (delivered true); one that stalls in its body has the
// relay cut and the forward record says how far it got and why (were the
// cut the client's own timeout, the record would say client_gone).
func TestForwardUpstreamTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/body") {
			w.Header().Set("Content-Length", "100")
			w.Write([]byte(`{"balance":`))
			w.(http.Flusher).Flush()
		}
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(eln)
	t.Cleanup(func() { close(block); srv.Close() })
	erp := "http://" + eln.Addr().String()

	t.Run("no header", func(t *testing.T) {
		fl := &fakeLedger{}
		_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl), UpstreamTimeout: 200 * time.Millisecond})
		r := send(t, proxyClient(t, addr, nil, ""), "GET", erp+"/api/v1/accounts/1010", "")
		if r.status != http.StatusGatewayTimeout || !strings.Contains(r.body, `"error":"upstream_timeout"`) || !strings.Contains(r.body, `"delivered":true`) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		f := waitForward(t, fl, 2*time.Second)
		if msg, _ := f.Data["error"].(string); f.Reason != "upstream_timeout" || strings.HasPrefix(msg, "client_gone") {
			t.Errorf("forward record %s %v", f.Reason, f.Data)
		}
	})
	t.Run("stalled body", func(t *testing.T) {
		fl := &fakeLedger{}
		_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl), UpstreamTimeout: 300 * time.Millisecond})
		c := proxyClient(t, addr, nil, "")
		resp, err := c.Get(erp + "/api/v1/accounts/1010/body")
		if err != nil {
			t.Fatal(err)
		}
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil || string(b) != `{"balance":` {
			t.Errorf("agent read %q, %v: want the 11 bytes sent and an error (the answer is cut short)", b, rerr)
		}
		f := waitForward(t, fl, 2*time.Second)
		msg, _ := f.Data["relay_error"].(string)
		if f.Reason != "forwarded" || f.Data["relayed_size"] != int64(11) || msg == "" || strings.HasPrefix(msg, "client_gone") ||
			f.Data["response_sha256"] != nil {
			t.Errorf("forward record %s %v", f.Reason, f.Data)
		}
	})
}
