// Command uapk-bench measures uapk-proxy on loopback, bounded in time and
// count. It has four modes.
//
// throughput (the default) measures the sidecar door against a plain
// fasthttp reverse proxy in the same run:
//
//	uapk-bench -proxy bin/uapk-proxy -duration 3s -conns 32 -rounds 3
//
// It starts a small upstream in-process, the baseline proxy, the durable
// floor (floor.go: the baseline plus one group-committed fdatasync per
// request) and uapk-proxy as child processes (so each one's CPU is read
// from /proc alone), drives each with the same load in interleaved rounds,
// and prints requests/s, proxy CPU per request and the ratios; then the
// added p50 latency of one agent on one connection, for the floor and for
// uapk-proxy, in fdatasyncs of the same disk.
//
// held measures what it costs to keep many agents waiting on their open
// connections for an approval, and how fast they are released:
//
//	uapk-bench -mode held -held 10000 -deadline 5m
//
// It holds N distinct journal entries at once (each on its own
// connection), reads the proxy's RSS from /proc, signs and posts the N
// approvals as a finance manager, and checks that every agent got the
// ERP's 201 and that the ERP saw each entry exactly once. See held.go.
//
// fleet measures deciding across a fleet: three proxies and two hubs over
// one PostgreSQL (the machine's server, run as internal/pgtest runs it):
//
//	uapk-bench -mode fleet -fleet-requests 300 -fleet-workers 16 -deadline 3m
//
// Agents spread round-robin over the proxies hold distinct journal
// entries; their decisions are posted to the hubs (alternately), to the
// holding proxy's admin API (the baseline) or to another proxy's. It
// prints held-to-released latency p50/p99/max one decision at a time and
// under load, where an unloaded decision's time goes (from a LISTEN on the
// fleet's channel), decisions per second with parallel approvers on each
// route and the hub's ratio to the baseline, and checks that every agent
// got 201 and the ERP saw each entry exactly once. See fleet.go.
//
// forward measures the forward door (HTTP_PROXY) against a plain goproxy,
// each a child process, under absolute-URI GETs, in interleaved rounds:
//
//	uapk-bench -mode forward -duration 3s -conns 32 -rounds 3
//
// See forward.go.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/durablefloor"
	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "plain" {
		plainProxy(os.Args[2], os.Args[3], nil)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		floorProxy(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "plain-goproxy" {
		floorPath := ""
		if len(os.Args) > 3 {
			floorPath = os.Args[3]
		}
		plainGoproxy(os.Args[2], floorPath)
		return
	}
	mode := flag.String("mode", "throughput", "throughput (sidecar vs plain fasthttp), forward (forward door vs plain goproxy), held (N requests held for approval), fleet (3 proxies, 2 hubs, one PostgreSQL) or table FILE (the FIGURE lines of a make bench run as one table)")
	proxyBin := flag.String("proxy", "bin/uapk-proxy", "uapk-proxy binary")
	manifest := flag.String("manifest", "examples/manifests/sox-financial.json", "manifest")
	duration := flag.Duration("duration", 5*time.Second, "throughput: load time per target")
	conns := flag.Int("conns", 32, "throughput: concurrent client connections")
	maxReq := flag.Int64("max-requests", 2_000_000, "throughput: upper bound on requests per target")
	rounds := flag.Int("rounds", 3, "throughput, forward: rounds, the baselines and the proxy taking turns")
	var hc heldConfig
	flag.IntVar(&hc.n, "held", 10_000, "held: requests held at once, each on its own connection (1..100000)")
	flag.StringVar(&hc.hold, "hold", "10m", `held: the journal_entry "hold" written into the manifest`)
	flag.DurationVar(&hc.deadline, "deadline", 5*time.Minute, "held, fleet: bound on the whole run (fleet: default 3m)")
	flag.IntVar(&hc.workers, "workers", 32, "held: approvals posted in parallel")
	flag.IntVar(&hc.dialers, "dialers", 256, "held: agent connections being opened and sent at once")
	flag.DurationVar(&hc.dwell, "dwell", 0, "held: keep all N held this long before the first approval (long holds)")
	flag.BoolVar(&hc.keep, "keep", false, "held, fleet: keep the temp dir (logs, ledgers) and print its path")
	var fc fleetConfig
	flag.IntVar(&fc.n, "fleet-requests", 300, "fleet: requests held at once per route (hub, direct, other proxy), decided in parallel")
	flag.IntVar(&fc.serial, "fleet-serial", 30, "fleet: decisions per route posted one at a time, for unloaded latency")
	flag.IntVar(&fc.repeat, "fleet-repeat", 3, "fleet: parallel rounds per route, the routes taking turns")
	flag.IntVar(&fc.workers, "fleet-workers", 16, "fleet: approvers posting in parallel")
	flag.Parse()
	deadlineSet := false
	flag.Visit(func(f *flag.Flag) { deadlineSet = deadlineSet || f.Name == "deadline" })
	var err error
	switch *mode {
	case "throughput":
		err = run(*proxyBin, *manifest, *duration, *conns, *maxReq, *rounds)
	case "forward":
		err = runForward(*proxyBin, *manifest, *duration, *conns, *maxReq, *rounds)
	case "held":
		hc.proxyBin, hc.manifest = *proxyBin, *manifest
		err = runHeld(hc)
	case "table":
		err = printTable(flag.Arg(0))
	case "fleet":
		fc.proxyBin, fc.manifest, fc.keep, fc.deadline = *proxyBin, *manifest, hc.keep, hc.deadline
		if !deadlineSet {
			fc.deadline = 3 * time.Minute
		}
		err = runFleet(fc)
	default:
		err = fmt.Errorf("-mode %q: want throughput, forward, held, fleet or table", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "uapk-bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	requests int64
	errors   int64
	elapsed  time.Duration
	cpu      time.Duration
}

func (r result) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }
func (r result) cpuPerReq() time.Duration {
	if r.requests == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.requests)
}

// The goals of the sidecar's rows: its throughput against the plain
// fasthttp proxy at 32 connections, and what it adds to one agent's median
// latency, in fdatasyncs of this disk.
const (
	sidecarGoal = 0.6
	latencyGoal = 2
)

func run(proxyBin, manifest string, d time.Duration, conns int, maxReq int64, rounds int) error {
	if rounds < 1 {
		rounds = 1
	}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"REC-1","status":"reconciled","difference":"0.00"}`)
	}}
	go up.Serve(upLn)
	defer up.Shutdown()
	upstream := "http://" + upLn.Addr().String()

	tmp, err := os.MkdirTemp("", "uapk-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	principals := filepath.Join(tmp, "principals.yaml")
	if err := os.WriteFile(principals, []byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), 0o644); err != nil {
		return err
	}
	body := []byte(`{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`)
	headers := map[string]string{"Content-Type": "application/json", "X-UAPK-On-Behalf-Of": "accountant@corp.example"}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	plainAddr := freeAddr()
	plain := exec.Command(self, "plain", plainAddr, upLn.Addr().String())
	if err := os.MkdirAll(filepath.Join(tmp, "data"), 0o700); err != nil {
		return err
	}
	floorAddr := freeAddr()
	floor := exec.Command(self, "floor", floorAddr, upLn.Addr().String(), filepath.Join(tmp, "data", "floor-journal"))
	audAddr, adminAddr := freeAddr(), freeAddr()
	logf, err := os.Create(filepath.Join(tmp, "proxy.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	audited := exec.Command(proxyBin, "serve", "--manifest", manifest, "--principals", principals,
		"--upstream", upstream, "--sidecar-addr", audAddr, "--admin-addr", adminAddr,
		"--data-dir", filepath.Join(tmp, "data"), "--proxy-addr", "")
	audited.Stderr = logf

	fmt.Printf("load: %d connections, %s per target and round, %d rounds, POST /api/v1/reconciliations (auto-approved, durable ledger)\n", conns, d, rounds)
	targets := []struct {
		name string
		cmd  *exec.Cmd
		addr string
	}{{"plain fasthttp proxy", plain, plainAddr}, {"durable floor", floor, floorAddr}, {"uapk-proxy sidecar", audited, audAddr}}
	for _, t := range targets {
		if err := t.cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		defer func() {
			t.cmd.Process.Signal(syscall.SIGTERM) // SIGINT is ignored by background jobs
			t.cmd.Wait()
		}()
	}
	fmt.Printf("%-6s %-22s %10s %10s %8s %14s\n", "round", "target", "requests", "req/s", "errors", "cpu/request")
	var ratios, floorRatios, ofFloor, cpuRatios []float64
	var last [3]result
	for round := 1; round <= rounds; round++ {
		for i, t := range targets {
			r, err := measure(t.name, t.cmd.Process.Pid, t.addr, body, headers, d, conns, maxReq)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if r.requests == 0 {
				return fmt.Errorf("%s: no request succeeded", t.name)
			}
			fmt.Printf("%-6d %-22s %10d %10.0f %8d %14s\n", round, r.name, r.requests, r.rps(), r.errors, r.cpuPerReq())
			last[i] = r
		}
		base, fl, aud := last[0], last[1], last[2]
		ratios = append(ratios, aud.rps()/base.rps())
		floorRatios = append(floorRatios, fl.rps()/base.rps())
		ofFloor = append(ofFloor, aud.rps()/fl.rps())
		cpuRatios = append(cpuRatios, float64(aud.cpuPerReq())/float64(base.cpuPerReq()))
	}
	lo, hi := minMax(ratios)
	flo, fhi := minMax(floorRatios)
	olo, ohi := minMax(ofFloor)
	clo, chi := minMax(cpuRatios)
	base, fl, aud := last[0], last[1], last[2]
	fmt.Printf("audited/plain throughput ratio: %.2f..%.2fx over %d rounds (goal >= %.1fx); cpu per request ratio: %.2f..%.2fx\n",
		lo, hi, rounds, sidecarGoal, clo, chi)
	fmt.Printf("durable floor/plain: %.2f..%.2fx; audited/durable floor: %.2f..%.2fx\n", flo, fhi, olo, ohi)
	figure(fmt.Sprintf("sidecar / plain fasthttp proxy, %d connections", conns),
		fmt.Sprintf("%.2f..%.2fx over %d rounds (last: %.0f req/s, %s cpu/req)", lo, hi, rounds, aud.rps(), aud.cpuPerReq().Round(100*time.Nanosecond)),
		fmt.Sprintf("last: %.0f req/s, %s cpu/req", base.rps(), base.cpuPerReq().Round(100*time.Nanosecond)), fmt.Sprintf(">= %.1fx", sidecarGoal), everyRound(ratios, sidecarGoal))
	// The floor is held to the goal as the sidecar is: in every round.
	floorFigure(fmt.Sprintf("  durable floor / plain fasthttp proxy, %d connections", conns),
		fmt.Sprintf("%.2f..%.2fx (last: %.0f req/s, %s cpu/req); the sidecar is %.2f..%.2fx of it", flo, fhi, fl.rps(), fl.cpuPerReq().Round(100*time.Nanosecond), olo, ohi),
		"the same plain rounds", "the limit: one group-committed fdatasync per request, nothing else", everyRound(floorRatios, sidecarGoal))

	// One agent on one connection: what the audit adds to each request,
	// and what the durable floor adds, in the disk's own fdatasyncs (a 4
	// KiB overwrite and fdatasync in the proxy's data directory); the
	// three proxies and the disk take turns.
	syncFile := filepath.Join(tmp, "data", "fdatasync-floor")
	lats := make([][]time.Duration, len(targets))
	var syncLat []time.Duration
	for range 3 {
		for i, t := range targets {
			lat, err := latencies(t.addr, body, headers, 1000, d)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			lats[i] = append(lats[i], lat...)
		}
		sl, err := fdatasyncFloor(syncFile, 300)
		if err != nil {
			return fmt.Errorf("fdatasync floor: %w", err)
		}
		syncLat = append(syncLat, sl...)
	}
	pp, dp, ap, fp := p50(lats[0]), p50(lats[1]), p50(lats[2]), p50(syncLat)
	added, floorAdded := ap-pp, dp-pp
	fmt.Printf("one connection, p50 latency: plain %s, durable floor %s, audited %s (p99 %s); added %s = %.2f fdatasyncs of this disk (fdatasync p50 %s, same run; goal <= %d); the floor adds %s = %.2f\n",
		pp.Round(time.Microsecond), dp.Round(time.Microsecond), ap.Round(time.Microsecond), p99(lats[2]).Round(time.Microsecond),
		added.Round(time.Microsecond), float64(added)/float64(fp), fp.Round(time.Microsecond), latencyGoal,
		floorAdded.Round(time.Microsecond), float64(floorAdded)/float64(fp))
	syncs := float64(added) / float64(fp)
	figure("added p50 latency, one agent, one connection",
		fmt.Sprintf("+%s = %.2f fdatasyncs", added.Round(time.Microsecond), syncs),
		fmt.Sprintf("plain %s; fdatasync %s", pp.Round(time.Microsecond), fp.Round(time.Microsecond)), fmt.Sprintf("<= %d fdatasyncs", latencyGoal), syncs <= latencyGoal)
	floorSyncs := float64(floorAdded) / float64(fp)
	floorFigure("  added p50 latency of the durable floor, one connection",
		fmt.Sprintf("+%s = %.2f fdatasyncs", floorAdded.Round(time.Microsecond), floorSyncs),
		fmt.Sprintf("plain %s; fdatasync %s", pp.Round(time.Microsecond), fp.Round(time.Microsecond)),
		"the limit: one fdatasync before forwarding, nothing else", floorSyncs <= latencyGoal)
	return nil
}

// latencies sends n requests one at a time on one connection (for at most
// d) and returns how long each took.
func latencies(addr string, body []byte, headers map[string]string, n int, d time.Duration) ([]time.Duration, error) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 1, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	out := make([]time.Duration, 0, n)
	deadline := time.Now().Add(d)
	for len(out) < n && time.Now().Before(deadline) {
		req.Reset()
		req.SetRequestURI("http://" + addr + "/api/v1/reconciliations")
		req.Header.SetMethod("POST")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		req.SetBody(body)
		start := time.Now()
		if err := c.Do(req, resp); err != nil {
			return nil, err
		}
		if resp.StatusCode() != 200 {
			return nil, fmt.Errorf("status %d", resp.StatusCode())
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// fdatasyncFloor overwrites 4 KiB of a file whose blocks exist and
// fdatasyncs it, n times: the least a durable write costs on this disk.
func fdatasyncFloor(path string, n int) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	defer f.Close()
	page := make([]byte, 4096)
	for range 64 {
		if _, err := f.Write(page); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := f.WriteAt(page, int64(i%64)*4096); err != nil {
			return nil, err
		}
		if err := fsutil.Fdatasync(f); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

func p50(d []time.Duration) time.Duration { return quantile(d, 0.5) }
func p99(d []time.Duration) time.Duration { return quantile(d, 0.99) }

func measure(name string, pid int, addr string, body []byte, headers map[string]string, d time.Duration, conns int, maxReq int64) (result, error) {
	client := &fasthttp.HostClient{Addr: addr, MaxConns: conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	if err := waitUp(client); err != nil {
		return result{}, err
	}
	// Warm up connections and caches, then measure.
	load(client, body, headers, 500*time.Millisecond, conns, maxReq)
	cpu0, err := procCPU(pid)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	n, errs := load(client, body, headers, d, conns, maxReq)
	elapsed := time.Since(start)
	cpu1, err := procCPU(pid)
	if err != nil {
		return result{}, err
	}
	return result{name: name, requests: n, errors: errs, elapsed: elapsed, cpu: cpu1 - cpu0}, nil
}

func load(c *fasthttp.HostClient, body []byte, headers map[string]string, d time.Duration, conns int, maxReq int64) (int64, int64) {
	return drive(d, conns, maxReq, func(more func() bool, count func(ok bool)) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for more() {
			req.Reset()
			req.SetRequestURI("http://" + c.Addr + "/api/v1/reconciliations")
			req.Header.SetMethod("POST")
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			req.SetBody(body)
			err := c.Do(req, resp)
			count(err == nil && resp.StatusCode() == 200)
		}
	})
}

// drive runs worker on conns goroutines for d or until maxReq requests are
// counted, whichever comes first, and returns the requests counted ok and
// the others. A worker loops while more() and counts each request once.
func drive(d time.Duration, conns int, maxReq int64, worker func(more func() bool, count func(ok bool))) (int64, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n, errs atomic.Int64
	more := func() bool { return ctx.Err() == nil && n.Load()+errs.Load() < maxReq }
	count := func(ok bool) {
		if ok {
			n.Add(1)
		} else {
			errs.Add(1)
		}
	}
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() { worker(more, count) })
	}
	wg.Wait()
	return n.Load(), errs.Load()
}

func waitUp(c *fasthttp.HostClient) error {
	for range 100 {
		conn, err := net.DialTimeout("tcp", c.Addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("did not start listening on " + c.Addr)
}

// procCPU reads user+system CPU time of a process from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that closes the command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (USER_HZ = 100).
	fields := strings.Fields(line[strings.LastIndexByte(line, ')')+2:])
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// plainProxy serves the baseline on listen (durablefloor.Proxy): the
// textbook fasthttp reverse proxy, with nothing decided and nothing
// recorded; with a before, each request goes through it first
// (floorProxy).
func plainProxy(listen, upstream string, before func(*fasthttp.Request) error) {
	srv := &fasthttp.Server{Handler: durablefloor.Proxy(upstream, before)}
	if err := srv.ListenAndServe(listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
