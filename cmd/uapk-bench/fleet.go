package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
)

// The fleet mode: three proxies and two hubs over one PostgreSQL (Debian's
// server, run as internal/pgtest runs it for the tests), all on loopback.
// It measures, in one run and for three routes of a decision:
//
//   - hub: posted to a hub (alternately the two), queued in PostgreSQL,
//     taken and decided by the proxy holding the request;
//   - direct: posted to the holding proxy's own admin API (the baseline);
//   - other: posted to another proxy's admin API, which decides it in the
//     shared store, and the holder is told by NOTIFY.
//
// First one decision at a time (unloaded latency, and where it goes, read
// from a LISTEN on the fleet's channel), then -fleet-requests held at once
// per route and decided by -fleet-workers approvers in parallel
// (decisions/s, loaded latency).

// fleetConfig is the fleet mode's flags.
type fleetConfig struct {
	proxyBin, manifest string
	n                  int           // held at once per route in the parallel rounds
	serial             int           // decisions per route posted one at a time
	repeat             int           // parallel rounds per route, the routes taking turns
	workers            int           // approvers in parallel
	deadline           time.Duration // bound on the whole run
	keep               bool
}

const (
	fleetProxies = 3
	fleetHubs    = 2
	fleetToken   = "uapk-bench-fleet-token"
	fleetHold    = "10m"
)

// The routes a decision takes.
const (
	routeHub    = "hub"
	routeDirect = "direct"
	routeOther  = "other"
)

var routeNames = map[string]string{
	routeHub:    "via hub",
	routeDirect: "direct to holder",
	routeOther:  "via other proxy",
}

// child is one proxy or hub process.
type child struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	admin   string // http://ADDR
	side    string // a proxy's sidecar address
}

type fleet struct {
	cfg      fleetConfig
	ctx      context.Context
	deadline time.Time
	proxies  []*child
	hubs     []*child
	admin    *http.Client
	priv     ed25519.PrivateKey
	st       *upstreamStats
	notes    *notifications

	next    int // next entry index
	results []agentResult
	done    []chan struct{}
}

// roundResult is one round's measurements.
type roundResult struct {
	route, kind      string
	n                int
	latencies        []time.Duration // own POST sent to the agent's 201
	answers          []time.Duration // own POST sent to its 200
	postsDur         time.Duration   // first POST sent to last POST answered
	releaseDur       time.Duration   // first POST sent to last 201
	cpuProxies       time.Duration
	cpuHubs          time.Duration
	cpuPG, cpuBench  time.Duration
	busy             float64 // machine CPU busy share during the posts
	commits, commitS float64 // ledger group commits and their seconds, all proxies
	batchRecs        float64 // records in those commits
	segments         map[string][]time.Duration
	holdDur          time.Duration // first dial to all parked
	proxyCPUPerHeld  time.Duration
}

func runFleet(cfg fleetConfig) error {
	if cfg.n < 1 || cfg.n > 10_000 || cfg.serial < 0 || cfg.serial > 1000 {
		return errors.New("-fleet-requests wants 1..10000 and -fleet-serial 0..1000")
	}
	if cfg.workers < 1 || cfg.workers > 256 || cfg.repeat < 1 || cfg.repeat > 20 {
		return errors.New("-fleet-workers wants 1..256 and -fleet-repeat 1..20")
	}
	if _, err := raiseNofile(); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	defer cancel()
	deadline, _ := ctx.Deadline()
	start := time.Now()

	total := 3*cfg.n*cfg.repeat + 3*cfg.serial
	f := &fleet{cfg: cfg, ctx: ctx, deadline: deadline, st: &upstreamStats{seen: make([]atomic.Int32, total)},
		results: make([]agentResult, total), done: make([]chan struct{}, total)}
	for i := range f.done {
		f.done[i] = make(chan struct{})
	}

	// The ERP stand-in all three proxies forward to: it counts each entry
	// across the fleet.
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := &fasthttp.Server{Handler: f.st.handle}
	go up.Serve(upLn)
	defer up.Shutdown()

	tmp, err := os.MkdirTemp("", "uapk-bench-fleet-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Println("temp dir (kept):", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	manifest, principals, priv, err := heldFiles(tmp, cfg.manifest, fleetHold)
	if err != nil {
		return err
	}
	f.priv = priv
	tokens := filepath.Join(tmp, "admin-tokens.yaml")
	doc := "tokens:\n  - {name: bench, sha256: " + adminauth.Hash(fleetToken) + ", scopes: [read, decide, override, evidence]}\n"
	if err := os.WriteFile(tokens, []byte(doc), 0o600); err != nil {
		return err
	}

	pgStart := time.Now()
	pg, err := pgtest.New()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pg.Stop()
	dsn, err := pg.CreateDB("uapk_bench_fleet")
	if err != nil {
		return err
	}
	pgBin, _ := pgtest.BinDir()
	pgUp := time.Since(pgStart)

	// LISTEN beside the proxies, for the timeline of each decision.
	f.notes, err = listenNotes(ctx, dsn)
	if err != nil {
		return err
	}
	defer f.notes.close()
	probe, err := f.notes.probe(ctx, dsn, 50)
	if err != nil {
		return err
	}

	tr := &bearer{rt: &http.Transport{MaxIdleConnsPerHost: cfg.workers + 4, MaxConnsPerHost: cfg.workers + 8, Proxy: nil}, token: fleetToken}
	f.admin = &http.Client{Timeout: 60 * time.Second, Transport: tr}
	defer tr.rt.(*http.Transport).CloseIdleConnections()

	// Children stop before PostgreSQL does (defers run last first).
	defer func() {
		var wg sync.WaitGroup
		for _, c := range append(append([]*child(nil), f.hubs...), f.proxies...) {
			wg.Add(1)
			go func() { defer wg.Done(); stopChild(c.cmd, c.exited) }()
		}
		wg.Wait()
	}()
	upstream := "http://" + upLn.Addr().String()
	for i := range fleetProxies {
		name := fmt.Sprintf("proxy-%d", i+1)
		conf := filepath.Join(tmp, name+".yaml")
		if err := os.WriteFile(conf, []byte("approvals:\n  postgres: "+dsn+"\n  instance: "+name+"\n"), 0o600); err != nil {
			return err
		}
		c := &child{name: name, side: freeAddr(), admin: "http://" + freeAddr(), logPath: filepath.Join(tmp, name+".log")}
		c.cmd = exec.Command(cfg.proxyBin, "serve", "--config", conf, "--manifest", manifest, "--principals", principals,
			"--upstream", upstream, "--sidecar-addr", c.side, "--admin-addr", strings.TrimPrefix(c.admin, "http://"),
			"--data-dir", filepath.Join(tmp, name), "--proxy-addr", "", "--admin-tokens", tokens)
		if err := c.start(nil); err != nil {
			return err
		}
		f.proxies = append(f.proxies, c)
	}
	for _, c := range f.proxies {
		if err := waitReady(ctx, f.admin, c.admin, c.side, c.exited); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", c.name, err, logTail(c.logPath))
		}
	}
	for i := range fleetHubs {
		name := fmt.Sprintf("hub-%d", i+1)
		conf := filepath.Join(tmp, name+".yaml")
		if err := os.WriteFile(conf, []byte("approvals:\n  postgres: "+dsn+"\n  instance: "+name+"\n"), 0o600); err != nil {
			return err
		}
		c := &child{name: name, logPath: filepath.Join(tmp, name+".log")}
		c.cmd = exec.Command(cfg.proxyBin, "hub", "--config", conf, "--admin-tokens", tokens, "--principals", principals,
			"--admin-addr", "127.0.0.1:0", "--data-dir", filepath.Join(tmp, name))
		addr := make(chan string, 1)
		if err := c.start(addr); err != nil {
			return err
		}
		f.hubs = append(f.hubs, c)
		select {
		case a := <-addr:
			c.admin = "http://" + a
		case <-c.exited:
			return fmt.Errorf("%s exited at start: %s", name, logTail(c.logPath))
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s did not log \"listening\" in 30s: %s", name, logTail(c.logPath))
		}
	}
	fmt.Printf("fleet: %d proxies, %d hubs, one PostgreSQL (%s, fsync=off as internal/pgtest runs it, up in %s); %d CPUs, load %s\n",
		fleetProxies, fleetHubs, filepath.Base(filepath.Dir(pgBin)), pgUp.Round(time.Millisecond), runtime.NumCPU(), loadavg())
	fmt.Printf("  %d decisions one at a time per route, then %d held at once per route decided by %d approvers in parallel; agents round-robin over the proxies\n",
		cfg.serial, cfg.n, cfg.workers)

	var rounds []*roundResult
	if cfg.serial > 0 {
		r, err := f.round("", 3*cfg.serial, 1)
		if err != nil {
			return err
		}
		rounds = append(rounds, r...)
	}
	for range cfg.repeat {
		for _, route := range []string{routeHub, routeDirect, routeOther} {
			r, err := f.round(route, cfg.n, cfg.workers)
			if err != nil {
				return err
			}
			rounds = append(rounds, r...)
		}
	}

	// Everything decided, each entry at the ERP once, nothing left, every
	// proxy's chain whole.
	var problems []string
	problems = append(problems, f.st.problems(total)...)
	if left, _, err := listPending(f.admin, f.hubs[0].admin); err != nil || len(left) != 0 {
		problems = append(problems, fmt.Sprintf("still pending after the run: %d (%v)", len(left), err))
	}
	for _, c := range f.proxies {
		if err := verifyChain(f.admin, c.admin); err != nil {
			problems = append(problems, c.name+": "+err.Error())
		}
	}
	printFleet(cfg, rounds, probe, time.Since(start))
	if len(problems) > 0 {
		return fmt.Errorf("fleet run failed:\n  %s\n%s", strings.Join(problems, "\n  "), f.logs())
	}
	fmt.Printf("verified: all %d agents got 201 allow, the ERP saw each entry exactly once with a capability token, nothing left pending, %d chains verify\n",
		total, fleetProxies)
	return nil
}

// start runs c with its output in its log; with addr set (a hub), the
// admin_addr of its "listening" line is sent there.
func (c *child) start(addr chan<- string) error {
	logf, err := os.Create(c.logPath)
	if err != nil {
		return err
	}
	setChildProc(c.cmd)
	c.cmd.Stdout = logf
	var pipe io.ReadCloser
	if addr == nil {
		c.cmd.Stderr = logf
	} else if pipe, err = c.cmd.StderrPipe(); err != nil {
		logf.Close()
		return err
	}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	c.exited = make(chan struct{})
	copied := make(chan struct{})
	if pipe != nil {
		go func() {
			defer close(copied)
			sc := bufio.NewScanner(pipe)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			sent := false
			for sc.Scan() {
				logf.Write(append(sc.Bytes(), '\n'))
				if sent {
					continue
				}
				var l struct {
					Message   string `json:"message"`
					AdminAddr string `json:"admin_addr"`
				}
				if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "listening" && l.AdminAddr != "" {
					addr <- l.AdminAddr
					sent = true
				}
			}
			io.Copy(logf, pipe)
		}()
	} else {
		close(copied)
	}
	go func() {
		<-copied
		c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return nil
}

// target is where entry i's decision is posted on route; k counts the
// round's posts (the hubs alternate).
func (f *fleet) target(route string, i, k int) string {
	holder := i % fleetProxies
	switch route {
	case routeHub:
		return f.hubs[k%fleetHubs].admin
	case routeOther:
		return f.proxies[(holder+1)%fleetProxies].admin
	default:
		return f.proxies[holder].admin
	}
}

// round holds k entries at once over the proxies and decides them: with
// route "" one at a time, the routes taking turns (the serial rounds, one
// result per route); otherwise all on route with workers in parallel.
func (f *fleet) round(route string, k, workers int) ([]*roundResult, error) {
	base := f.next
	f.next += k
	label := route
	if label == "" {
		label = "serial"
	}

	// Hold: each agent on its own connection to proxy i%3, until every
	// proxy has all its requests parked on the approval.
	agentCtx, stopAgents := context.WithCancel(f.ctx)
	defer stopAgents()
	var agents sync.WaitGroup
	var finished atomic.Int64
	sem := make(chan struct{}, 64)
	cpuP0 := f.cpu(f.proxies)
	holdStart := time.Now()
	for i := base; i < base+k; i++ {
		agents.Add(1)
		go func() {
			defer agents.Done()
			defer close(f.done[i])
			f.results[i] = agent(agentCtx, f.proxies[i%fleetProxies].side, i, f.deadline, sem)
			finished.Add(1)
		}()
	}
	allDone := make(chan struct{})
	go func() { agents.Wait(); close(allDone) }()
	fail := func(err error) ([]*roundResult, error) {
		stopAgents()
		<-allDone
		return nil, fmt.Errorf("%s round: %w\n%s", label, err, f.logs())
	}
	last, lastMove := -1, time.Now()
	for {
		held, err := f.held()
		if err != nil {
			return fail(err)
		}
		if held == k {
			break
		}
		if held != last {
			last, lastMove = held, time.Now()
		}
		if f.ctx.Err() != nil {
			return fail(fmt.Errorf("-deadline %s reached with %d of %d parked", f.cfg.deadline, held, k))
		}
		if n := finished.Load(); n > 0 {
			time.Sleep(200 * time.Millisecond)
			stopAgents()
			<-allDone
			return nil, fmt.Errorf("%s round: %d of %d agents were answered before any decision, %d parked:\n%s\n%s",
				label, finished.Load(), k, held, summarize(f.results[base:base+k]), f.logs())
		}
		if time.Since(lastMove) > 30*time.Second {
			return fail(fmt.Errorf("stalled at %d of %d parked for 30s", held, k))
		}
		if err := f.alive(); err != nil {
			return fail(err)
		}
		select {
		case <-f.ctx.Done():
			return fail(fmt.Errorf("deadline: %d of %d parked", held, k))
		case <-time.After(20 * time.Millisecond):
		}
	}
	holdDur := time.Since(holdStart)
	cpuHeld := f.cpu(f.proxies) - cpuP0
	pending, _, err := listPending(f.admin, f.hubs[0].admin)
	if err != nil {
		return fail(err)
	}
	if len(pending) != k {
		return fail(fmt.Errorf("the hub lists %d pending, want %d", len(pending), k))
	}
	sort.Slice(pending, func(a, b int) bool { return pending[a].index < pending[b].index })
	for j, p := range pending {
		if p.index != base+j {
			return fail(fmt.Errorf("pending approval %s holds entry %d, want %d", p.id, p.index, base+j))
		}
	}

	// Decide.
	posted := make([]time.Time, k)
	answered := make([]time.Time, k)
	routes := make([]string, k)
	for j := range k {
		routes[j] = route
		if route == "" {
			// Each route in turn, over every holder: entry j is held at
			// j%3 and takes route (j+j/3)%3, so each three entries take
			// the three routes, and each route meets every holder.
			routes[j] = []string{routeHub, routeDirect, routeOther}[(j+j/fleetProxies)%3]
		}
	}
	var postErrs atomic.Int64
	var firstErr atomic.Value
	m0, err := f.metrics()
	if err != nil {
		return fail(err)
	}
	cpuP1, cpuH1, busy1, pg1, self1 := f.cpu(f.proxies), f.cpu(f.hubs), machineCPU(), pgCPU(), selfCPU()
	postStart := time.Now()
	segs := map[string]map[string][]time.Duration{}
	if route == "" {
		nth := map[string]int{}
		for j, p := range pending {
			mark := f.notes.mark()
			posted[j] = time.Now()
			err := approve(f.ctx, f.admin, f.target(routes[j], p.index, nth[routes[j]]), f.priv, p)
			nth[routes[j]]++
			if err != nil {
				return fail(fmt.Errorf("entry %d %s: %w", p.index, routes[j], err))
			}
			answered[j] = time.Now()
			select {
			case <-f.done[p.index]:
			case <-time.After(30 * time.Second):
				return fail(fmt.Errorf("entry %d was not released 30s after its decision (%s)", p.index, routes[j]))
			}
			time.Sleep(5 * time.Millisecond) // the last notifications of this one
			if segs[routes[j]] == nil {
				segs[routes[j]] = map[string][]time.Duration{}
			}
			f.notes.timeline(mark, p.id, posted[j], answered[j], f.results[p.index].done, routes[j] == routeHub, segs[routes[j]])
		}
	} else {
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					p := pending[j]
					posted[j] = time.Now()
					if err := approve(f.ctx, f.admin, f.target(route, p.index, j), f.priv, p); err != nil {
						postErrs.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					answered[j] = time.Now()
				}
			}()
		}
		for j := range pending {
			if f.ctx.Err() != nil {
				break
			}
			jobs <- j
		}
		close(jobs)
		wg.Wait()
	}
	postsDur := time.Since(postStart)
	select {
	case <-allDone:
	case <-time.After(time.Minute):
		stopAgents()
		<-allDone
	}
	cpuP2, cpuH2, busy2, pg2, self2 := f.cpu(f.proxies), f.cpu(f.hubs), machineCPU(), pgCPU(), selfCPU()
	m1, err := f.metrics()
	if err != nil {
		return nil, err
	}

	var problems []string
	if e := postErrs.Load(); e > 0 {
		problems = append(problems, fmt.Sprintf("%d decisions failed; first: %v", e, firstErr.Load()))
	}
	byRoute := map[string]*roundResult{}
	var order []*roundResult
	ok := 0
	var lastDone time.Time
	for j, p := range pending {
		r := f.results[p.index]
		rr := byRoute[routes[j]]
		if rr == nil {
			rr = &roundResult{route: routes[j], kind: "serial", segments: map[string][]time.Duration{}}
			if route != "" {
				rr.kind = "parallel"
			}
			byRoute[routes[j]] = rr
			order = append(order, rr)
		}
		rr.n++
		if r.err != nil || r.status != 201 || r.decision != "allow" {
			continue
		}
		ok++
		if r.done.After(lastDone) {
			lastDone = r.done
		}
		if !answered[j].IsZero() {
			rr.latencies = append(rr.latencies, r.done.Sub(posted[j]))
			rr.answers = append(rr.answers, answered[j].Sub(posted[j]))
		}
	}
	if ok != k {
		problems = append(problems, fmt.Sprintf("%d of %d agents got 201 allow:\n%s", ok, k, summarize(f.results[base:base+k])))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s round failed:\n  %s\n%s", label, strings.Join(problems, "\n  "), f.logs())
	}
	for _, rr := range order {
		rr.segments = segs[rr.route]
		rr.holdDur = holdDur
		rr.proxyCPUPerHeld = cpuHeld / time.Duration(k)
		rr.commits = m1.sum("uapk_ledger_commit_duration_seconds_count") - m0.sum("uapk_ledger_commit_duration_seconds_count")
		rr.commitS = m1.sum("uapk_ledger_commit_duration_seconds_sum") - m0.sum("uapk_ledger_commit_duration_seconds_sum")
		rr.batchRecs = m1.sum("uapk_ledger_batch_records_sum") - m0.sum("uapk_ledger_batch_records_sum")
		if route != "" {
			rr.postsDur, rr.releaseDur = postsDur, lastDone.Sub(postStart)
			rr.cpuProxies, rr.cpuHubs = cpuP2-cpuP1, cpuH2-cpuH1
			rr.cpuPG, rr.cpuBench = pg2-pg1, self2-self1
			rr.busy = busy2.busySince(busy1)
			rr.commits = m1.sum("uapk_ledger_commit_duration_seconds_count") - m0.sum("uapk_ledger_commit_duration_seconds_count")
			rr.commitS = m1.sum("uapk_ledger_commit_duration_seconds_sum") - m0.sum("uapk_ledger_commit_duration_seconds_sum")
			rr.batchRecs = m1.sum("uapk_ledger_batch_records_sum") - m0.sum("uapk_ledger_batch_records_sum")
		}
	}
	return order, nil
}

// held sums the proxies' held connections (uapk_held_connections: parked
// on the approval, its request record durable).
func (f *fleet) held() (int, error) {
	n := 0
	for _, c := range f.proxies {
		m, err := scrape(f.admin, c.admin)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", c.name, err)
		}
		n += int(m["uapk_held_connections"])
	}
	return n, nil
}

func (f *fleet) alive() error {
	for _, c := range append(append([]*child(nil), f.proxies...), f.hubs...) {
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited: %s", c.name, logTail(c.logPath))
		default:
		}
	}
	return nil
}

func (f *fleet) cpu(cs []*child) time.Duration {
	var t time.Duration
	for _, c := range cs {
		d, _ := procCPU(c.cmd.Process.Pid)
		t += d
	}
	return t
}

// fleetMetrics is every proxy's /metrics, by proxy.
type fleetMetrics []map[string]float64

func (m fleetMetrics) sum(name string) float64 {
	var s float64
	for _, p := range m {
		s += p[name]
	}
	return s
}

func (f *fleet) metrics() (fleetMetrics, error) {
	var out fleetMetrics
	for _, c := range f.proxies {
		m, err := scrape(f.admin, c.admin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// scrape reads a Prometheus text page: each series without labels by its
// name, and series with labels summed under their name.
func scrape(c *http.Client, base string) (map[string]float64, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if strings.Contains(name, `le="`) {
				continue // histogram buckets
			}
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m, sc.Err()
}

// logs summarizes every child's log, for a failure's report.
func (f *fleet) logs() string {
	var b strings.Builder
	for _, c := range append(append([]*child(nil), f.proxies...), f.hubs...) {
		fmt.Fprintf(&b, "%s log: %s\n", c.name, summarizeLog(c.logPath))
	}
	return strings.TrimRight(b.String(), "\n")
}

// notifications are what a LISTEN on the fleet's channel heard, with the
// time each arrived: an approval's id when a change to it commits, a
// relayed row's "relay:ID" when a hub queues a decision and when a proxy
// answers it.
type notifications struct {
	conn *pgx.Conn
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	events []noteEvent
}

type noteEvent struct {
	payload string
	at      time.Time
}

func listenNotes(ctx context.Context, dsn string) (*notifications, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	for _, ch := range []string{pgstore.Channel, probeChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	lctx, stop := context.WithCancel(ctx)
	n := &notifications{conn: conn, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		for {
			m, err := conn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			at := time.Now()
			n.mu.Lock()
			n.events = append(n.events, noteEvent{m.Payload, at})
			n.mu.Unlock()
		}
	}()
	return n, nil
}

// pgProbe is PostgreSQL's own share of a stage, measured idle before the
// run: a NOTIFY committed in its own transaction on a connection of its
// own (commit), and from its commit's answer to the LISTEN hearing it
// (delivery).
type pgProbe struct{ commit, delivery []time.Duration }

// probe commits count notifications on the probe channel, one at a time.
func (n *notifications) probe(ctx context.Context, dsn string, count int) (pgProbe, error) {
	var p pgProbe
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return p, fmt.Errorf("probe: %w", err)
	}
	defer conn.Close(context.Background())
	for i := range count {
		payload := "probe:" + strconv.Itoa(i)
		mark := n.mark()
		t0 := time.Now()
		if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", probeChannel, payload); err != nil {
			return p, fmt.Errorf("probe: %w", err)
		}
		t1 := time.Now()
		p.commit = append(p.commit, t1.Sub(t0))
		for wait := time.Now().Add(2 * time.Second); ; {
			if at, ok := n.heard(mark, payload); ok {
				p.delivery = append(p.delivery, max(at.Sub(t1), 0))
				break
			}
			if time.Now().After(wait) {
				return p, errors.New("probe: a notification was not heard within 2s")
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	return p, nil
}

// probeChannel is the bench's own channel, beside the fleet's.
const probeChannel = "uapk_bench_probe"

func (n *notifications) heard(mark int, payload string) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.events[mark:] {
		if e.payload == payload {
			return e.at, true
		}
	}
	return time.Time{}, false
}

func (n *notifications) close() {
	n.stop()
	<-n.done
	n.conn.Close(context.Background())
}

func (n *notifications) mark() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.events)
}

// The stages of one decision, as the LISTEN saw them.
const (
	segQueued   = "post->queued at hub"
	segDecided  = "->decision committed"
	segClaimed  = "->use claimed by holder"
	segRecorded = "->use recorded"
	seg201      = "->agent's 201"
	segAnswered = "post->decision answered"
)

var segOrder = []string{segQueued, segDecided, segClaimed, segRecorded, seg201, segAnswered}

// timeline splits one decision (the only one in flight) into its stages
// from the notifications since mark: the relayed row queued (hub only),
// then the approval's three commits (the decision; the holder's claim of
// the use; the use's record written back), then the agent's answer.
func (n *notifications) timeline(mark int, id string, posted, answered, released time.Time, hub bool, out map[string][]time.Duration) {
	n.mu.Lock()
	evs := append([]noteEvent(nil), n.events[mark:]...)
	n.mu.Unlock()
	var queued time.Time
	var changes []time.Time
	for _, e := range evs {
		switch {
		case strings.HasPrefix(e.payload, pgstore.RelayPrefix):
			if queued.IsZero() {
				queued = e.at
			}
		case e.payload == id:
			changes = append(changes, e.at)
		}
	}
	if len(changes) < 3 || (hub && queued.IsZero()) {
		return // missed: not counted
	}
	prev := posted
	if hub {
		out[segQueued] = append(out[segQueued], queued.Sub(posted))
		prev = queued
	}
	for i, s := range []string{segDecided, segClaimed, segRecorded} {
		out[s] = append(out[s], changes[i].Sub(prev))
		prev = changes[i]
	}
	out[seg201] = append(out[seg201], released.Sub(prev))
	out[segAnswered] = append(out[segAnswered], answered.Sub(posted))
}

// pgCPU is the CPU time of this bench's PostgreSQL: the postmaster (a
// child of this process named postgres), its backends and what its exited
// children left it.
func pgCPU() time.Duration {
	var t time.Duration
	for _, pm := range childPIDs(os.Getpid(), "postgres") {
		t += procTimes(pm, true)
		for _, b := range childPIDs(pm, "") {
			t += procTimes(b, false)
		}
	}
	return t
}

func selfCPU() time.Duration { return procTimes(os.Getpid(), false) }

// childPIDs lists the processes whose parent is pid (and whose command
// is comm, if set).
func childPIDs(pid int, comm string) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 2 || (comm != "" && s[lp+1:rp] != comm) {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			if k, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				out = append(out, k)
			}
		}
	}
	return out
}

// procTimes is utime+stime of pid, with its reaped children's if
// children.
func procTimes(pid int, children bool) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0
	}
	// After the command, f[0] is the state (field 3 of the line): utime
	// (field 14) is f[11], stime f[12], cutime f[13], cstime f[14].
	n := 13
	if children {
		n = 15
	}
	var ticks int64
	for _, v := range f[11:n] {
		x, _ := strconv.ParseInt(v, 10, 64)
		ticks += x
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// cpuStat is /proc/stat's first line: busy and total ticks.
type cpuStat struct{ busy, total float64 }

func machineCPU() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var s cpuStat
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		s.total += x
		if i >= 8 {
			break // guest time is counted in user already
		}
		if i != 3 && i != 4 { // idle, iowait
			s.busy += x
		}
	}
	return s
}

func (s cpuStat) busySince(o cpuStat) float64 {
	if s.total <= o.total {
		return 0
	}
	return (s.busy - o.busy) / (s.total - o.total)
}

func ms(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f ms", float64(d)/1e6)
}

func median(ds []time.Duration) time.Duration { return pct(ds, 0.5) }

func printFleet(cfg fleetConfig, rounds []*roundResult, probe pgProbe, took time.Duration) {
	fmt.Println()
	fmt.Printf("fleet: %d proxies, %d hubs, %d held (%d one at a time; %d x %d at once per route); %s in all, load %s at the end\n",
		fleetProxies, fleetHubs, 3*cfg.serial+3*cfg.n*cfg.repeat, 3*cfg.serial, cfg.repeat, cfg.n, took.Round(100*time.Millisecond), loadavg())
	routes := []string{routeHub, routeDirect, routeOther}
	serial := map[string]*roundResult{}
	parallel := map[string][]*roundResult{}
	for _, r := range rounds {
		if r.kind == "serial" {
			serial[r.route] = r
		} else {
			parallel[r.route] = append(parallel[r.route], r)
		}
	}
	if len(serial) > 0 {
		fmt.Println("  one decision at a time: own POST sent to the agent's 201 (and to the POST's answer)")
		for _, route := range routes {
			r := serial[route]
			fmt.Printf("    held->released %-17s p50 %8s  p99 %8s  max %8s   (answered p50 %s; n=%d)\n", routeNames[route],
				ms(pct(r.latencies, 0.5)), ms(pct(r.latencies, 0.99)), ms(pct(r.latencies, 1)), ms(median(r.answers)), len(r.latencies))
		}
		fmt.Println("  where it goes, one at a time (medians of each stage, from a LISTEN on the fleet's channel):")
		for _, route := range routes {
			r := serial[route]
			var parts []string
			for _, s := range segOrder {
				if v := r.segments[s]; len(v) > 0 {
					parts = append(parts, fmt.Sprintf("%s %s", s, ms(median(v))))
				}
			}
			if got := len(r.segments[seg201]); got < r.n {
				parts = append(parts, fmt.Sprintf("(%d of %d timelines complete)", got, r.n))
			}
			fmt.Printf("    %-17s %s\n", routeNames[route], strings.Join(parts, ", "))
		}
		var commits, secs float64
		for _, r := range serial {
			commits, secs = commits+r.commits, secs+r.commitS
		}
		fmt.Printf("    of which: ledger group commit (bbolt + fdatasync) mean %s over %.0f commits; PostgreSQL idle NOTIFY commit p50 %s, delivery to a LISTEN p50 %s\n",
			ms(time.Duration(secs/max(commits, 1)*1e9)), commits, ms(median(probe.commit)), ms(median(probe.delivery)))
	}
	fmt.Printf("  %d held at once per route, %d approvers in parallel, %d round(s) per route, the routes taking turns:\n", cfg.n, cfg.workers, cfg.repeat)
	rates := map[string]float64{}
	for _, route := range routes {
		rs := parallel[route]
		if len(rs) == 0 {
			continue
		}
		var dps, rps []float64
		var lat []time.Duration
		var cpuP, cpuH, cpuPG, cpuB time.Duration
		var busy, commits, commitS, recs float64
		n := 0
		for _, r := range rs {
			dps = append(dps, float64(r.n)/r.postsDur.Seconds())
			rps = append(rps, float64(r.n)/r.releaseDur.Seconds())
			lat = append(lat, r.latencies...)
			cpuP, cpuH, cpuPG, cpuB, n = cpuP+r.cpuProxies, cpuH+r.cpuHubs, cpuPG+r.cpuPG, cpuB+r.cpuBench, n+r.n
			busy, commits, commitS, recs = busy+r.busy, commits+r.commits, commitS+r.commitS, recs+r.batchRecs
		}
		rates[route] = medianF(dps)
		fmt.Printf("    %-17s %5.0f decisions/s (%s), %5.0f released/s; held->released p50 %s p99 %s max %s\n", routeNames[route],
			medianF(dps), spread(dps), medianF(rps), ms(pct(lat, 0.5)), ms(pct(lat, 0.99)), ms(pct(lat, 1)))
		per := func(d time.Duration) string { return ms(d / time.Duration(n)) }
		fmt.Printf("    %-17s cpu/decision: proxies %s, hubs %s, postgres %s, bench %s; machine %.0f%% busy\n", "",
			per(cpuP), per(cpuH), per(cpuPG), per(cpuB), 100*busy/float64(len(rs)))
		fmt.Printf("    %-17s ledger: %.1f group commits/decision, mean %s, %.1f records each\n", "",
			commits/float64(n), ms(time.Duration(commitS/max(commits, 1)*1e9)), recs/max(commits, 1))
	}
	if rs := parallel[routeHub]; len(rs) > 0 {
		fmt.Printf("    holding %d: first dial to all parked %s, proxy cpu %s/held\n", rs[0].n, rs[0].holdDur.Round(time.Millisecond), rs[0].proxyCPUPerHeld.Round(10*time.Microsecond))
	}
	if h, d := rates[routeHub], rates[routeDirect]; h > 0 && d > 0 {
		fmt.Printf("  decisions/s via hub %.0f, direct to holder %.0f, ratio %.2f", h, d, h/d)
		if o := rates[routeOther]; o > 0 {
			fmt.Printf("; via other proxy %.0f, ratio %.2f", o, o/d)
		}
		fmt.Println()
	}
}

func medianF(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

// spread is the rounds' rates, lowest to highest.
func spread(xs []float64) string {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(parts, " ")
}
