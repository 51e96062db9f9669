package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// slowERP answers after 10 s, or never once its request's context ends
// (net/http ends it when the proxy closes the connection): gone receives
// the moment it did.
func slowERP(t *testing.T) (string, <-chan time.Time) {
	t.Helper()
	gone := make(chan time.Time, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(10 * time.Second):
			w.Write([]byte(`{"balance":"1"}`))
		case <-r.Context().Done():
			gone <- time.Now()
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), gone
}

// waitForward waits for the forward record.
func waitForward(t *testing.T, l *fakeLedger, within time.Duration) ledger.Entry {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, e := range l.entries {
			if e.Kind == record.KindForward {
				l.mu.Unlock()
				return e
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no forward record within %s", within)
	return ledger.Entry{}
}

// TestAgentGoneCancelsTheERPCall: an agent that gives up (here after
// 200 ms) while the proxy waits for a slow ERP (10 s) gets its ERP call
// cancelled promptly on both doors: the ERP sees its connection close
// within about a second, not after the upstream timeout. The forward
// record says what happened: upstream_error, delivered true (the ERP had
// the request), an error naming client_gone.
func TestAgentGoneCancelsTheERPCall(t *testing.T) {
	for _, door := range []string{"sidecar", "forward"} {
		t.Run(door, func(t *testing.T) {
			erp, gone := slowERP(t)
			fl := &fakeLedger{}
			var do func(c *http.Client) error
			switch door {
			case "sidecar":
				sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp, UpstreamTimeout: 30 * time.Second})
				go sc.Serve(ln)
				t.Cleanup(func() { sc.Shutdown(context.Background()) })
				do = func(c *http.Client) error {
					_, err := c.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
					return err
				}
			case "forward":
				_, faddr := startForward(t, ForwardConfig{Gate: fwdGate(t, fl), UpstreamTimeout: 30 * time.Second})
				pc := proxyClient(t, faddr, nil, "")
				do = func(c *http.Client) error {
					c.Transport = pc.Transport
					_, err := c.Get(erp + "/api/v1/accounts/1010/balance")
					return err
				}
			}
			c := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{}}
			err := do(c)
			gaveUp := time.Now()
			if err == nil {
				t.Fatal("the agent got an answer; want it to give up")
			}
			select {
			case at := <-gone:
				if d := at.Sub(gaveUp); d > time.Second {
					t.Errorf("the ERP call was cancelled %s after the agent gave up, want within 1s", d)
				} else {
					t.Logf("the ERP saw its connection close %s after the agent gave up", d.Round(time.Millisecond))
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the ERP call was still open 3s after the agent gave up (upstream timeout 30s)")
			}
			f := waitForward(t, fl, 2*time.Second)
			msg, _ := f.Data["error"].(string)
			if f.Reason != record.UpstreamError || f.Data["delivered"] != true || !strings.HasPrefix(msg, "client_gone") {
				t.Errorf("forward record reason %s, data %v; want upstream_error, delivered true, error client_gone...", f.Reason, f.Data)
			}
		})
	}
}

// TestAgentWaitingIsNotGone: an agent that waits on a kept-alive
// connection for an ERP slower than the probe period is not taken for
// gone: it gets the answer, twice on the same connection, and the forward
// records say forwarded.
func TestAgentWaitingIsNotGone(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * agentProbe)
		w.Write([]byte(`{"balance":"1"}`))
	})}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(eln)
	t.Cleanup(func() { srv.Close() })
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: "http://" + eln.Addr().String()})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for i := range 2 {
		resp, err := c.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n := 0
	for _, e := range fl.entries {
		if e.Kind == record.KindForward {
			n++
			if e.Reason != record.Forwarded {
				t.Errorf("forward record %s %v", e.Reason, e.Data)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d forward records, want 2", n)
	}
}

// TestAgentWatchStartsAgainAfterIdle: the one goroutine that probes the
// agents ends once no call is in flight, and the next slow call starts it
// again: an agent that gives up then still gets its ERP call cancelled.
func TestAgentWatchStartsAgainAfterIdle(t *testing.T) {
	erp, gone := slowERP(t)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp, UpstreamTimeout: 30 * time.Second})
	go sc.Serve(ln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	url := "http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance"
	for round := range 2 {
		c := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{}}
		if _, err := c.Get(url); err == nil {
			t.Fatalf("round %d: the agent got an answer; want it to give up", round)
		}
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the ERP call was still open 5s after the agent gave up", round)
		}
		deadline := time.Now().Add(10 * time.Second)
		for sc.tr.watching.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the probing goroutine still runs with no call in flight", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
