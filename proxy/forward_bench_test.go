//go:build unix

package proxy

import (
	"context"
	"crypto/ed25519"
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
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The forward door against a plain goproxy in the same run: the same
// in-process upstream, the same client, the same load, the same upstream
// transport settings. Two loads: GET /api/v1/accounts/1010-Cash (ledger_read,
// auto-approved for the manifest's app: the uapk-bench forward mode's load)
// at 32 agents in flight, and POST /api/v1/reconciliations (with a principal
// and a body) at 32 and at 256 (RunParallel goroutines), because a
// group-committed ledger pays one fsync per batch: the more requests share
// it, the less each waits. The door adds the rules, a durable (fsync,
// group-committed) request record before forwarding, the forward record,
// hashing and header work. Compare ns/op and cpu-µs/op:
//
//	go test -run '^$' -bench 'ForwardDoor|PlainGoproxy' -benchtime 3s -count 3 ./proxy/
//
// The goal is the audited door at 0.9x plain goproxy's throughput at 32 in
// flight. CPU here is the whole process's (client and upstream included);
// uapk-bench -mode forward reads each proxy's own CPU.

// benchLoads are the sub-benchmarks, the same for both proxies.
var benchLoads = []struct {
	name  string
	get   bool
	conns int
}{{"GET/conns=32", true, 32}, {"POST/conns=32", false, 32}, {"POST/conns=256", false, 256}}

func benchUpstream(b *testing.B) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			w.Write([]byte(`{"account":"1010-Cash","balance":"48210.55","currency":"USD"}`))
			return
		}
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

// benchLoad drives GETs of an account or POST reconciliations through the
// proxy at addr from conns goroutines at once.
func benchLoad(b *testing.B, addr, upstream string, get bool, conns int) {
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), MaxIdleConnsPerHost: 1024}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	method, target, body := http.MethodPost, upstream+"/api/v1/reconciliations", reconciliationBody
	if get {
		method, target, body = http.MethodGet, upstream+"/api/v1/accounts/1010-Cash", ""
	}
	b.SetParallelism(max(1, conns/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var req *http.Request
			if get {
				req, _ = http.NewRequest(method, target, nil)
			} else {
				req, _ = http.NewRequest(method, target, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(gate.HeaderOnBehalfOf, "accountant@corp.example")
			}
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
	for _, l := range benchLoads {
		b.Run(l.name, func(b *testing.B) { benchLoad(b, addr, up.URL, l.get, l.conns) })
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
	eng := benchEngine(b)
	_, priv, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(priv)
	svc, err := approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	g, err := gate.New(gate.Config{Engine: eng, Ledger: l, Approvals: svc, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	addr := serveDoor(b, g)
	for _, ld := range benchLoads {
		b.Run(ld.name, func(b *testing.B) {
			before, took := l.Stats(), commitNanos.Load()
			benchLoad(b, addr, up.URL, ld.get, ld.conns)
			st := l.Stats()
			if c := st.Commits - before.Commits; c > 0 {
				b.ReportMetric(float64(st.Appends-before.Appends)/float64(c), "records/commit")
				b.ReportMetric(float64(commitNanos.Load()-took)/float64(c)/1e3, "µs/commit")
			}
		})
	}
}

// BenchmarkForwardDoorMemoryLedger is the door and its gate (rules,
// verdicts, forward records) over a ledger that keeps nothing: no record is
// encoded, hashed, written or synced. Against BenchmarkPlainGoproxy it is
// what the door's HTTP path and the gate cost; against BenchmarkForwardDoor,
// what the durable ledger costs. The GET load only.
func BenchmarkForwardDoorMemoryLedger(b *testing.B) {
	up := benchUpstream(b)
	eng := benchEngine(b)
	_, priv, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(priv)
	ml := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(ml), Ledger: ml, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	dl := &discardLedger{}
	g, err := gate.New(gate.Config{Engine: eng, Ledger: dl, Approvals: svc, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	addr := serveDoor(b, g)
	ld := benchLoads[0]
	b.Run(ld.name, func(b *testing.B) {
		before := dl.seq.Load()
		benchLoad(b, addr, up.URL, ld.get, ld.conns)
		if n := dl.seq.Load() - before; n < 2*uint64(b.N) { // a request record and a forward record each
			b.Fatalf("%d records for %d requests", n, b.N)
		}
	})
}

// discardLedger numbers records and keeps none.
type discardLedger struct{ seq atomic.Uint64 }

func (d *discardLedger) Append(context.Context, ledger.Entry) (ledger.Record, error) {
	return ledger.Record{Seq: d.seq.Add(1)}, nil
}

func (d *discardLedger) AppendAsync(e ledger.Entry, done func(ledger.Record, error)) {
	r, err := d.Append(context.Background(), e)
	if done != nil {
		done(r, err)
	}
}

// benchEngine is the example manifest, its ERP on any loopback port (the
// benchmark upstream's is chosen at random).
func benchEngine(b *testing.B) *rules.Engine {
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		b.Fatal(err)
	}
	m, err := rules.ParseManifest([]byte(strings.Replace(string(raw), `"127.0.0.1:9090"]`, `"127.0.0.1:*"]`, 1)))
	if err != nil {
		b.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		b.Fatal(err)
	}
	return rules.NewEngine(m, p)
}

// serveDoor serves a forward door over g on loopback until the benchmark ends.
func serveDoor(b *testing.B, g *gate.Gate) string {
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
	return ln.Addr().String()
}
