package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// countingERP answers after delay; got counts requests it received (it
// "processed" them: received = the ERP acted on it).
func countingERP(t *testing.T, delay time.Duration) (string, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	var got, cancelled atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		select {
		case <-time.After(delay):
			w.Write([]byte(`{"balance":"1"}`))
		case <-r.Context().Done():
			cancelled.Add(1)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), &got, &cancelled
}

func forwardReasons(fl *fakeLedger) (out []string) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, e := range fl.entries {
		if e.Kind == record.KindForward {
			out = append(out, fmt.Sprintf("%s %v", e.Reason, e.Data["error"]))
		}
	}
	return out
}

// TestAgentWatchPastReadTimeout: the read deadline fasthttp armed when it
// began reading the request passes during a long ERP call; the agent, still
// waiting on its keep-alive connection, must not be taken for gone.
func TestAgentWatchPastReadTimeout(t *testing.T) {
	erp, got, cancelled := countingERP(t, 900*time.Millisecond)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp, UpstreamTimeout: 5 * time.Second, ReadTimeout: 300 * time.Millisecond})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
	status := 0
	if err == nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	t.Logf("status %d err %v; ERP received %d cancelled %d; forwards %v", status, err, got.Load(), cancelled.Load(), forwardReasons(fl))
	if status != 200 {
		t.Errorf("a waiting agent was taken for gone once ReadTimeout (300ms) passed during a 900ms ERP call: %d %v", status, err)
	}
}

// TestAgentWatchSlowUploadThenSlowERP: an agent slow to send its request
// and a slow ERP together outlast ReadTimeout; the agent gets its answer.
func TestAgentWatchSlowUploadThenSlowERP(t *testing.T) {
	erp, got, cancelled := countingERP(t, 600*time.Millisecond)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp, UpstreamTimeout: 5 * time.Second, ReadTimeout: time.Second})
	go sc.Serve(ln)
	defer sc.Shutdown(context.Background())
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /api/v1/accounts/1010/balance HTTP/1.1\r\nHost: erp\r\n")
	time.Sleep(700 * time.Millisecond)
	io.WriteString(c, "\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	t.Logf("status %d err %v; ERP received %d cancelled %d; forwards %v", status, err, got.Load(), cancelled.Load(), forwardReasons(fl))
	if status != 200 {
		t.Errorf("a slow-sending agent + slow ERP taken for gone: %d", status)
	}
}
