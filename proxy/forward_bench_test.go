//go:build unix

package proxy

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The forward door against a plain goproxy in the same run: the same
// in-process upstream, the same client, the same load, the same upstream
// transport settings. Each runs at 32 and at 256 agents in flight
// (RunParallel goroutines), because a group-committed ledger pays one fsync
// per batch: the more requests share it, the less each waits. The door adds
// the rules, a durable (fsync, group-committed) request record before
// forwarding, the forward record, hashing and header work. Compare ns/op:
//
//	go test -run '^$' -bench 'ForwardDoor|PlainGoproxy' -benchtime 5s -count 5 ./proxy/
//
// The goal is the audited door at 0.8x plain goproxy's throughput or better.

var benchConns = []int{32, 256}

func benchUpstream(b *testing.B) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"REC-000001","status":"reconciled","account":"1010-Cash"}`))
	}))
	b.Cleanup(up.Close)
	return up
}

func benchServe(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// benchLoad drives POST reconciliations through the proxy at addr from
// conns goroutines at once.
func benchLoad(b *testing.B, addr, upstream string, conns int) {
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), MaxIdleConnsPerHost: 1024}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	target := upstream + "/api/v1/reconciliations"
	b.SetParallelism(max(1, conns/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", target, strings.NewReader(reconciliationBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(gate.HeaderOnBehalfOf, "accountant@corp.example")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	// CPU of the whole process (client, proxy, upstream) per request: the
	// client's and the upstream's share is the same for both proxies, so the
	// difference is the door's own cost, steadier than throughput on a
	// shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkPlainGoproxy(b *testing.B) {
	up := benchUpstream(b)
	p := goproxy.NewProxyHttpServer()
	p.Tr = newUpstreamTransport((&net.Dialer{Timeout: fwdDialTimeout}).DialContext, nil, 256, 30*time.Second)
	p.ConnectDial = nil
	addr := benchServe(b, p)
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) { benchLoad(b, addr, up.URL, n) })
	}
	p.Tr.CloseIdleConnections()
}

func BenchmarkForwardDoor(b *testing.B) {
	var err error
	up := benchUpstream(b)
	var commitNanos atomic.Int64
	// UAPK_BENCH_LEDGER_DIR puts the ledger elsewhere (a tmpfs, say, to see
	// how much of the gap is the disk's fsync).
	dir := b.TempDir()
	if d := os.Getenv("UAPK_BENCH_LEDGER_DIR"); d != "" {
		if dir, err = os.MkdirTemp(d, "uapk-bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{
		OnCommit: func(_ int, took time.Duration, _ error) { commitNanos.Add(int64(took)) },
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	store, err := approvalstore.Open(l)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		b.Fatal(err)
	}
	// The upstream listens on a loopback port chosen at random.
	m, err := rules.ParseManifest([]byte(strings.Replace(string(raw), `"127.0.0.1:9090"]`, `"127.0.0.1:*"]`, 1)))
	if err != nil {
		b.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		b.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(priv)
	eng := rules.NewEngine(m, p)
	svc, err := approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	g, err := gate.New(gate.Config{Engine: eng, Ledger: l, Approvals: svc, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	f, err := NewForward(ForwardConfig{Gate: g, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go f.Serve(ln)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.Shutdown(ctx)
	})
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			before, took := l.Stats(), commitNanos.Load()
			benchLoad(b, ln.Addr().String(), up.URL, n)
			st := l.Stats()
			if c := st.Commits - before.Commits; c > 0 {
				b.ReportMetric(float64(st.Appends-before.Appends)/float64(c), "records/commit")
				b.ReportMetric(float64(commitNanos.Load()-took)/float64(c)/1e3, "µs/commit")
			}
		})
	}
}
