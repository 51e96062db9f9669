//go:build unix

package proxy

import (
	"context"
	"crypto/ed25519"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/durablefloor"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The sidecar door's own cost against a plain fasthttp reverse proxy in
// the same run, over a ledger that keeps nothing (the durable ledger has
// benchmarks of its own, and cmd/uapk-bench measures the whole): the
// rules, the records' data, the decision line, header work and the ERP
// round trip. Compare cpu-µs/op (the whole process: client, door and
// upstream, the same for both):
//
//	go test -run '^$' -bench 'SidecarDoor|PlainFasthttp' -benchtime 3s -count 3 ./proxy/

// nullLedger numbers records and keeps none; AppendAsync answers on a
// goroutine of its own, as the ledger does.
type nullLedger struct{ seq atomic.Uint64 }

func (n *nullLedger) Append(context.Context, ledger.Entry) (ledger.Record, error) {
	return ledger.Record{Seq: n.seq.Add(1)}, nil
}

func (n *nullLedger) AppendAsync(e ledger.Entry, done func(ledger.Record, error)) {
	r, _ := n.Append(context.Background(), e)
	if done != nil {
		go done(r, nil)
	}
}

func benchFastUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"REC-1","status":"reconciled","difference":"0.00"}`)
	}}
	go up.Serve(ln)
	b.Cleanup(func() { up.Shutdown() })
	return ln.Addr().String()
}

func benchFastServe(b *testing.B, h fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// benchFastLoad posts reconciliations to addr from 32 connections.
func benchFastLoad(b *testing.B, addr string) {
	const conns = 32
	c := &fasthttp.HostClient{Addr: addr, MaxConns: conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	body := []byte(`{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`)
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for left.Add(-1) >= 0 {
				req.Reset()
				req.SetRequestURI("http://" + addr + "/api/v1/reconciliations")
				req.Header.SetMethod("POST")
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(gate.HeaderOnBehalfOf, "accountant@corp.example")
				req.SetBody(body)
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Errorf("%v %d %s", err, resp.StatusCode(), resp.Body())
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func BenchmarkPlainFasthttp(b *testing.B) {
	benchFastLoad(b, benchFastServe(b, durablefloor.Proxy(benchFastUpstream(b), nil)))
}

// BenchmarkDurableFloor is BenchmarkPlainFasthttp making each request
// durable first through a durablefloor.Writer (one group-committed
// fdatasync, nothing else): the least a durable proxy costs here.
func BenchmarkDurableFloor(b *testing.B) {
	w, err := durablefloor.New(filepath.Join(b.TempDir(), "floor"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	benchFastLoad(b, benchFastServe(b, durablefloor.Proxy(benchFastUpstream(b), w.Request)))
}

// BenchmarkSidecarDoor is the door and the gate alone: the ledger records
// nothing (nullLedger). BenchmarkSidecarDoorDurable is the same door on a
// real ledger in the benchmark's temp dir (journal, fdatasync, applier; no
// archiver), so the two, BenchmarkDurableFloor and BenchmarkPlainFasthttp,
// run together, split what a request costs between the door, the gate,
// the durable write any proxy would make and the rest of the ledger.
func BenchmarkSidecarDoor(b *testing.B) { benchSidecar(b, &nullLedger{}) }

func BenchmarkSidecarDoorDurable(b *testing.B) {
	l, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := l.Close(); err != nil {
			b.Error(err)
		}
	})
	benchSidecar(b, l)
}

func benchSidecar(b *testing.B, led gate.Ledger) {
	upstream := benchFastUpstream(b)
	m, err := rules.LoadManifest("../examples/manifests/sox-financial.json")
	if err != nil {
		b.Fatal(err)
	}
	p, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), ".")
	if err != nil {
		b.Fatal(err)
	}
	eng := rules.NewEngine(m, p)
	_, priv, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(priv)
	if err != nil {
		b.Fatal(err)
	}
	ml := &approvalstest.Ledger{}
	svc, err := approvals.New(approvals.Config{Store: approvalstest.NewStore(ml), Ledger: ml, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	// The decision line is encoded as serve encodes it, then dropped.
	log := zerolog.New(io.Discard).With().Timestamp().Str("component", "uapk-proxy").Logger()
	g, err := gate.New(gate.Config{Engine: eng, Ledger: led, Approvals: svc, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	sc, err := NewSidecar(SidecarConfig{Gate: g, Upstream: "http://" + upstream, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go sc.Serve(ln)
	b.Cleanup(func() { sc.Shutdown(context.Background()) })
	benchFastLoad(b, ln.Addr().String())
}
