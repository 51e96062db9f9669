package main

// forward mode: uapk-proxy's forward door (HTTP_PROXY) against a plain
// goproxy, each in its own process, under the same bounded load of
// absolute-URI GETs (and, for reference, the same GETs to the same
// process's sidecar door: the same gate and ledger behind fasthttp):
//
//	uapk-bench -mode forward -proxy bin/uapk-proxy -duration 3s -conns 32 -rounds 3
//
// The ERP is a net/http server in this process. Both proxies run through
// every round, the baseline and the door taking turns (so both see the same
// machine load), and each one's CPU is read from /proc over its own load
// window only. The load: conns goroutines, each on one kept-alive
// connection with one request in flight, the request bytes written as they
// are and the answer parsed no further than its framing. The ERP counts the
// connections it accepts: with keep-alive reuse none is opened after the
// warm-up. The door's data directory is under TMPDIR (TMPDIR=/dev/shm puts
// its ledger on a tmpfs, to tell the disk's fsync from the CPU).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/uapk-gateway/uapk-proxy/internal/durablefloor"
)

// forwardGoal is the door's throughput against plain goproxy it must reach.
const forwardGoal = 0.9

// forwardPath is auto-approved by the example manifest (ledger_read) for
// the manifest's own app, with no principal needed.
const forwardPath = "/api/v1/accounts/1010-Cash"

func runForward(proxyBin, manifest string, d time.Duration, conns int, maxReq int64, rounds int) error {
	if rounds < 1 {
		rounds = 1
	}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var upHits, upConns atomic.Int64
	up := &http.Server{ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			upConns.Add(1)
		}
	}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"account":"1010-Cash","balance":"48210.55","currency":"USD"}`))
	})}
	go up.Serve(upLn)
	defer up.Close()
	upAddr := upLn.Addr().String()

	tmp, err := os.MkdirTemp("", "uapk-bench-forward-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	mpath, err := manifestWithERP(manifest, tmp, upAddr)
	if err != nil {
		return err
	}
	principals := filepath.Join(tmp, "principals.yaml")
	if err := os.WriteFile(principals, []byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(tmp, "proxy.log"))
	if err != nil {
		return err
	}
	defer logf.Close()

	plainAddr, doorAddr, sideAddr, adminAddr := freeAddr(), freeAddr(), freeAddr(), freeAddr()
	plain := exec.Command(self, "plain-goproxy", plainAddr)
	if err := os.MkdirAll(filepath.Join(tmp, "data"), 0o700); err != nil {
		return err
	}
	floorAddr := freeAddr()
	floor := exec.Command(self, "plain-goproxy", floorAddr, filepath.Join(tmp, "data", "floor-journal"))
	// The sidecar door of the same process, on the same ERP and ledger,
	// is a reference: the same gate and ledger behind fasthttp.
	audited := exec.Command(proxyBin, "serve", "--manifest", mpath, "--principals", principals,
		"--proxy-addr", doorAddr, "--upstream", "http://"+upAddr, "--sidecar-addr", sideAddr,
		"--admin-addr", adminAddr, "--data-dir", filepath.Join(tmp, "data"))
	for _, cmd := range []*exec.Cmd{plain, floor, audited} {
		cmd.Stderr = logf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", cmd.Path, err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM) // SIGINT is ignored by background jobs
			cmd.Wait()
		}()
	}
	absReq := []byte("GET http://" + upAddr + forwardPath + " HTTP/1.1\r\nHost: " + upAddr +
		"\r\nUser-Agent: uapk-bench\r\nAccept: application/json\r\n\r\n")
	originReq := []byte("GET " + forwardPath + " HTTP/1.1\r\nHost: " + sideAddr +
		"\r\nUser-Agent: uapk-bench\r\nAccept: application/json\r\n\r\n")
	targets := []*fwdTarget{
		{name: "plain goproxy", addr: plainAddr, cmd: plain, req: absReq},
		{name: "durable floor", addr: floorAddr, cmd: floor, req: absReq},
		{name: "uapk-proxy forward", addr: doorAddr, cmd: audited, req: absReq},
		{name: "(sidecar, reference)", addr: sideAddr, cmd: audited, req: originReq},
	}
	for _, t := range targets {
		if err := waitListening(t.addr); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", t.name, err, logf.Name())
		}
		// Warm up connections (both sides) and caches.
		if n, _ := absLoad(t.addr, t.req, 500*time.Millisecond, conns, maxReq); n == 0 {
			return fmt.Errorf("%s: no request succeeded during warm-up", t.name)
		}
	}

	fmt.Printf("load: %d connections, %s per target and round, %d rounds, GET %s through each proxy (auto-approved, durable ledger)\n",
		conns, d, rounds, forwardPath)
	fmt.Printf("%-6s %-20s %10s %10s %8s %14s %9s\n", "round", "target", "requests", "req/s", "errors", "cpu/request", "erp-conns")
	var ratios, cpuRatios, floorRatios []float64
	for round := 1; round <= rounds; round++ {
		var res [4]result
		for i, t := range targets {
			hits0, conns0 := upHits.Load(), upConns.Load()
			cpu0, err := procCPU(t.cmd.Process.Pid)
			if err != nil {
				return err
			}
			start := time.Now()
			n, errs := absLoad(t.addr, t.req, d, conns, maxReq)
			elapsed := time.Since(start)
			cpu1, err := procCPU(t.cmd.Process.Pid)
			if err != nil {
				return err
			}
			// Every answer counted must have reached the ERP: a proxy that
			// answered 200 itself would not be measured.
			if hits := upHits.Load() - hits0; hits < n {
				return fmt.Errorf("%s: %d answers but the ERP saw %d requests", t.name, n, hits)
			}
			res[i] = result{name: t.name, requests: n, errors: errs, elapsed: elapsed, cpu: cpu1 - cpu0}
			// ERP connections opened in the window: with keep-alive reuse
			// none after the warm-up.
			fmt.Printf("%-6d %-20s %10d %10.0f %8d %14s %9d\n", round, t.name, n, res[i].rps(), errs, res[i].cpuPerReq(), upConns.Load()-conns0)
		}
		base, fl, door := res[0], res[1], res[2]
		if base.requests == 0 || fl.requests == 0 || door.requests == 0 || base.cpuPerReq() == 0 {
			return errors.New("a target served no request")
		}
		ratios = append(ratios, door.rps()/base.rps())
		floorRatios = append(floorRatios, fl.rps()/base.rps())
		cpuRatios = append(cpuRatios, float64(door.cpuPerReq())/float64(base.cpuPerReq()))
	}
	lo, hi := minMax(ratios)
	clo, chi := minMax(cpuRatios)
	meets := everyRound(ratios, forwardGoal)
	fmt.Printf("forward/plain-goproxy throughput ratio: %.2f..%.2fx over %d rounds (goal >= %.1fx: %s); cpu per request ratio: %.2f..%.2fx\n",
		lo, hi, rounds, forwardGoal, verdict(meets, "meets", "below"), clo, chi)
	flo, fhi := minMax(floorRatios)
	fmt.Printf("durable floor/plain-goproxy: %.2f..%.2fx\n", flo, fhi)
	figure(fmt.Sprintf("forward door / plain goproxy, %d connections, absolute-URI GETs", conns),
		fmt.Sprintf("%.2f..%.2fx over %d rounds", lo, hi, rounds), fmt.Sprintf("cpu/req ratio %.2f..%.2fx", clo, chi),
		fmt.Sprintf(">= %.1fx", forwardGoal), meets)
	// The floor is held to the goal as the door is: in every round.
	floorFigure(fmt.Sprintf("  durable floor / plain goproxy, %d connections", conns),
		fmt.Sprintf("%.2f..%.2fx over %d rounds", flo, fhi, rounds), "the same plain rounds",
		"the limit: one group-committed fdatasync per request, nothing else", everyRound(floorRatios, forwardGoal))
	return nil
}

type fwdTarget struct {
	name, addr string
	cmd        *exec.Cmd // the process whose CPU is read
	req        []byte
}

// everyRound reports whether a throughput goal holds in every round: how
// make bench judges a proxy's ratio, and its durable floor's the same way.
func everyRound(ratios []float64, goal float64) bool {
	lo, _ := minMax(ratios)
	return lo >= goal
}

func minMax(xs []float64) (lo, hi float64) {
	lo, hi = xs[0], xs[0]
	for _, x := range xs[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// manifestWithERP writes a copy of the manifest whose erp_hosts also names
// the benchmark's ERP.
func manifestWithERP(path, dir, erp string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	tr, _ := m["tool_restrictions"].(map[string]any)
	if tr == nil {
		tr = map[string]any{}
		m["tool_restrictions"] = tr
	}
	hosts, _ := tr["erp_hosts"].([]any)
	tr["erp_hosts"] = append(hosts, erp)
	out, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "manifest.json")
	return p, os.WriteFile(p, out, 0o644)
}

func waitListening(addr string) error {
	for range 200 {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("did not start listening on " + addr)
}

// absLoad sends req (an absolute-URI GET) to the proxy at addr from conns
// connections for d or until maxReq answers, and counts the 200s and the
// rest.
func absLoad(addr string, req []byte, d time.Duration, conns int, maxReq int64) (int64, int64) {
	return drive(d, conns, maxReq, func(more func() bool, count func(ok bool)) {
		var c net.Conn
		var br *bufio.Reader
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for more() {
			if c == nil {
				var err error
				if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
					count(false)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				br = bufio.NewReaderSize(c, 16<<10)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			status, keep, err := roundTripRaw(c, br, req)
			count(err == nil && status == http.StatusOK)
			if err != nil || !keep {
				c.Close()
				c = nil
			}
		}
	})
}

// roundTripRaw writes req and reads one HTTP/1.1 answer: its status, and
// whether the connection may carry another request. It parses only what a
// load generator needs (Content-Length or chunked framing, Connection).
func roundTripRaw(c net.Conn, br *bufio.Reader, req []byte) (status int, keep bool, err error) {
	if _, err = c.Write(req); err != nil {
		return 0, false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	keep = true
	length, chunked := int64(-1), false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("bad header line %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil {
				return 0, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = keep && !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		_, err = io.Copy(io.Discard, httputil.NewChunkedReader(br))
		if err == nil { // trailers end with an empty line
			for {
				var t []byte
				if t, err = br.ReadSlice('\n'); err != nil || len(bytes.TrimRight(t, "\r\n")) == 0 {
					break
				}
			}
		}
	case length >= 0:
		_, err = br.Discard(int(length))
	default:
		return status, false, errors.New("answer without framing")
	}
	return status, keep && err == nil, err
}

// plainGoproxy is the forward baseline: goproxy as its README shows it,
// with nothing decided and nothing recorded, and the same ERP transport
// settings as the door (keep-alives, 256 idle connections per host, no
// proxy of its own).
//
// With a floor path it is the forward door's durable floor: before
// forwarding, the request line and headers are made durable through a
// durablefloor.Writer, and nothing else is done.
func plainGoproxy(listen, floorPath string) {
	p := goproxy.NewProxyHttpServer()
	if floorPath != "" {
		w, err := durablefloor.New(floorPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "durable floor:", err)
			os.Exit(1)
		}
		p.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
			var b bytes.Buffer
			b.WriteString(r.Method + " " + r.URL.String() + " " + r.Proto + "\r\n")
			_ = r.Header.Write(&b)
			if err := w.Write(b.Bytes()); err != nil {
				return r, goproxy.NewResponse(r, goproxy.ContentTypeText, http.StatusServiceUnavailable, err.Error())
			}
			return r, nil
		})
	}
	p.Tr = &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		DisableCompression:    true,
	}
	p.ConnectDial = nil
	srv := &http.Server{Addr: listen, Handler: p, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
