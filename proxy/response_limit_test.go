package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// bigERP answers every request with n bytes, with a Content-Length or
// chunked.
func bigERP(t *testing.T, n int, chunked bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := strings.Repeat("x", n)
		if chunked {
			w.Write([]byte(body[:n/2]))
			w.(http.Flusher).Flush()
			w.Write([]byte(body[n/2:]))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func lastForward(t *testing.T, l *fakeLedger) ledger.Entry {
	t.Helper()
	var f ledger.Entry
	for _, e := range waitForEntries(t, l, 2) {
		if e.Kind == record.KindForward {
			f = e
		}
	}
	if f.Kind == "" {
		t.Fatal("no forward record")
	}
	return f
}

// The sidecar never buffers more than --max-response of an ERP answer: a
// larger one is a 502, recorded as an upstream error.
func TestSidecarBoundsTheERPAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"at the limit", 1024, false, 200},
		{"over, with a length", 1025, false, 502},
		{"over, chunked", 4096, true, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			erp := bigERP(t, tc.size, tc.chunked)
			fl := &fakeLedger{}
			sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp.URL, MaxResponse: 1024})
			go sc.Serve(ln)
			defer sc.Shutdown(context.Background())
			resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/accounts/1010/balance")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			http.DefaultClient.CloseIdleConnections()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %.80s", resp.StatusCode, body)
			}
			f := lastForward(t, fl)
			if tc.status == 200 {
				if f.Reason != record.Forwarded || len(body) != tc.size {
					t.Errorf("forward record %+v, %d bytes relayed", f, len(body))
				}
				return
			}
			// The ERP had the request: delivered, and said so.
			if f.Reason != record.UpstreamError || !strings.Contains(string(body), `"error":"upstream_error"`) ||
				!strings.Contains(string(body), `"delivered":true`) {
				t.Errorf("forward record %+v, body %s", f, body)
			}
		})
	}
}

// The forward door streams: an answer that says it is too large is a 502
// before a byte is relayed; one that grows too large is cut off at the limit
// and its forward record says why.
func TestForwardDoorBoundsTheERPAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
	}{
		{"at the limit", 1024, true},
		{"over, with a length", 1025, false},
		{"over, chunked", 4096, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			erp := bigERP(t, tc.size, tc.chunked)
			fl := &fakeLedger{}
			g := fwdGate(t, fl)
			_, addr := startForward(t, ForwardConfig{Gate: g, MaxResponse: 1024, Logger: zerolog.Nop()})
			c := proxyClient(t, addr, nil, "")
			resp, err := c.Get(erp.URL + "/api/v1/accounts/1010/balance")
			var body []byte
			rerr := err
			if err == nil {
				body, rerr = io.ReadAll(resp.Body)
				resp.Body.Close()
			} else if tc.size <= 1024 || !tc.chunked {
				t.Fatal(err)
			}
			f := lastForward(t, fl)
			switch {
			case tc.size <= 1024:
				if resp.StatusCode != 200 || rerr != nil || len(body) != tc.size || f.Data["response_size"] != int64(tc.size) {
					t.Errorf("%d, %d bytes, %v; record %+v", resp.StatusCode, len(body), rerr, f)
				}
			case !tc.chunked:
				if resp.StatusCode != 502 || f.Reason != record.UpstreamError || !strings.Contains(f.Data["error"].(string), "max-response") {
					t.Errorf("%d %s; record %+v", resp.StatusCode, body, f)
				}
			default:
				// The agent sees a broken answer (before or after the
				// headers), never a complete-looking one.
				if len(body) > 1024 || rerr == nil {
					t.Errorf("relayed %d bytes, error %v: want at most 1024 and a broken answer", len(body), rerr)
				}
				if e, _ := f.Data["relay_error"].(string); !strings.Contains(e, "max-response") || f.Data["relayed_size"] != int64(1024) {
					t.Errorf("record %+v", f)
				}
			}
		})
	}
}
