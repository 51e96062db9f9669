package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// heldConfig is the held mode's flags.
type heldConfig struct {
	proxyBin, manifest string
	n                  int           // requests held at once
	hold               string        // journal_entry "hold" in the manifest written for the run
	deadline           time.Duration // bound on the whole run
	workers            int           // approvals posted in parallel
	dialers            int           // agent connections being opened at once
	dwell              time.Duration // extra time everything stays held before approving
	keep               bool          // keep the temp dir
}

const (
	maxHeld   = 100_000
	approver  = "fm@corp.example"
	jePath    = "/api/v1/journal-entries"
	refPrefix = "BENCH-"
	// fdSlack covers what besides the agents' connections the bench keeps
	// open: the upstream's connections from the proxy (the sidecar's
	// HostClient allows 1024), admin clients, files.
	fdSlack = 1024 + 128
)

// agentResult is what one held agent got back.
type agentResult struct {
	status   int
	decision string // X-UAPK-Decision
	body     string // first bytes, for the report
	err      error
	done     time.Time
}

// upstreamStats is what the ERP stand-in saw.
type upstreamStats struct {
	entries   atomic.Int64 // POST /api/v1/journal-entries
	withToken atomic.Int64 // of those, carrying X-UAPK-Capability
	other     atomic.Int64 // anything else
	bad       atomic.Int64 // journal entries whose reference is not one of ours
	seen      []atomic.Int32
}

// phase timings and /proc readings, for the table.
type heldReport struct {
	nofile, proxyNofile          string
	rssBefore, rssHeld, rssAfter int64 // VmRSS, bytes
	anonBefore, anonHeld         int64 // RssAnon: heap and stacks, without the mmapped ledger file
	fileHeld                     int64 // RssFile: the binary and the ledger's pages read through its mmap
	rssDwell, anonDwell          int64 // at the end of -dwell, still all held (0 without)
	hwm                          int64
	fdsHeld                      int
	openDur                      time.Duration // first dial to all N pending
	cpuOpen, cpuRelease          time.Duration
	listDur                      time.Duration
	listBytes                    int
	approvalsDur                 time.Duration // first POST sent to last POST answered
	releaseDur                   time.Duration // first POST sent to last agent answered 201
	latencies                    []time.Duration
}

func runHeld(cfg heldConfig) error {
	if cfg.n < 1 || cfg.n > maxHeld {
		return fmt.Errorf("-held %d: want 1..%d", cfg.n, maxHeld)
	}
	if cfg.workers < 1 || cfg.workers > 1024 || cfg.dialers < 1 || cfg.dialers > 4096 {
		return errors.New("-workers wants 1..1024 and -dialers 1..4096")
	}
	if _, err := time.ParseDuration(cfg.hold); err != nil {
		return fmt.Errorf("-hold %q: %w", cfg.hold, err)
	}
	if cfg.dwell >= cfg.deadline {
		return fmt.Errorf("-dwell %s leaves no time inside -deadline %s", cfg.dwell, cfg.deadline)
	}
	var rep heldReport
	limit, err := raiseNofile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	rep.nofile = strconv.FormatUint(limit, 10)
	if need := uint64(cfg.n + fdSlack); limit < need {
		return fmt.Errorf("-held %d needs about %d file descriptors in this process and in the proxy; the hard RLIMIT_NOFILE is %d", cfg.n, need, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	defer cancel()
	deadline, _ := ctx.Deadline()

	// The ERP stand-in: posts every journal entry, counting each of ours.
	st := &upstreamStats{seen: make([]atomic.Int32, cfg.n)}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	up := &fasthttp.Server{Handler: st.handle}
	go up.Serve(upLn)
	defer up.Shutdown()

	tmp, err := os.MkdirTemp("", "uapk-bench-held-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Println("temp dir (kept):", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	manifest, principals, priv, err := heldFiles(tmp, cfg.manifest, cfg.hold)
	if err != nil {
		return err
	}

	sideAddr, adminAddr := freeAddr(), freeAddr()
	logPath := filepath.Join(tmp, "proxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	proxy := exec.Command(cfg.proxyBin, "serve", "--manifest", manifest, "--principals", principals,
		"--upstream", "http://"+upLn.Addr().String(), "--sidecar-addr", sideAddr, "--admin-addr", adminAddr,
		"--data-dir", filepath.Join(tmp, "data"), "--proxy-addr", "")
	proxy.Stdout, proxy.Stderr = logf, logf
	if err := proxy.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cfg.proxyBin, err)
	}
	pid := proxy.Process.Pid
	exited := make(chan struct{})
	go func() { proxy.Wait(); close(exited) }()
	defer stopChild(proxy, exited)

	tr := &bearer{rt: &http.Transport{MaxIdleConnsPerHost: cfg.workers, MaxConnsPerHost: cfg.workers + 4, Proxy: nil}}
	admin := &http.Client{Timeout: 60 * time.Second, Transport: tr}
	adminURL := "http://" + adminAddr
	if err := waitReady(ctx, admin, adminURL, sideAddr, exited); err != nil {
		return fmt.Errorf("%w (proxy log: %s)", err, logTail(logPath))
	}
	// The admin API wants the token serve wrote beside the ledger.
	if tr.token, err = adminauth.ReadTokenFile(filepath.Join(tmp, "data", adminauth.FileName)); err != nil {
		return err
	}
	rep.proxyNofile = procLimit(pid, "Max open files")
	if rep.rssBefore, err = procStatus(pid, "VmRSS"); err != nil {
		return err
	}
	rep.anonBefore, _ = procStatus(pid, "RssAnon")
	base, err := ledgerHead(admin, adminURL)
	if err != nil {
		return err
	}
	fmt.Printf("held: %d journal entries held at once (hold %q), each on its own connection; RLIMIT_NOFILE %s (proxy %s); %d CPUs, load %s\n",
		cfg.n, cfg.hold, rep.nofile, rep.proxyNofile, runtime.NumCPU(), loadavg())

	// The agents: each opens its own connection, sends one entry and waits.
	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	results := make([]agentResult, cfg.n)
	var finished atomic.Int64
	var agents sync.WaitGroup
	sem := make(chan struct{}, cfg.dialers)
	cpu0, _ := procCPU(pid)
	openStart := time.Now()
	for i := range cfg.n {
		agents.Add(1)
		go func() {
			defer agents.Done()
			defer finished.Add(1)
			results[i] = agent(agentCtx, sideAddr, i, deadline, sem)
		}()
	}

	// All N pending: each held request is exactly one ledger record, so the
	// head says how many are pending without listing them (a list of 10k
	// approvals is megabytes of JSON and would itself grow the RSS).
	lastSeq, lastMove := base, time.Now()
	for {
		h, err := ledgerHead(admin, adminURL)
		if err != nil {
			return err
		}
		if h-base >= uint64(cfg.n) {
			break
		}
		if h != lastSeq {
			lastSeq, lastMove = h, time.Now()
		}
		if f := finished.Load(); f > 0 {
			time.Sleep(200 * time.Millisecond) // let early answers land, to report them together
			stopAgents()
			agents.Wait()
			return fmt.Errorf("%d of %d agents were answered before any approval, with %d pending:\n%s\nproxy log: %s",
				finished.Load(), cfg.n, h-base, summarize(results), summarizeLog(logPath))
		}
		if time.Since(lastMove) > 30*time.Second {
			return fmt.Errorf("stalled at %d of %d pending for 30s; proxy log: %s", h-base, cfg.n, summarizeLog(logPath))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deadline: %d of %d pending after %s", h-base, cfg.n, time.Since(openStart).Round(time.Millisecond))
		case <-exited:
			return fmt.Errorf("proxy exited with %d of %d pending: %s", h-base, cfg.n, logTail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
	rep.openDur = time.Since(openStart)
	cpu1, _ := procCPU(pid)
	rep.cpuOpen = cpu1 - cpu0
	// A pending record is durable just before its request subscribes to the
	// hub; give the last ones a moment to park.
	time.Sleep(time.Second)
	if rep.rssHeld, err = procStatus(pid, "VmRSS"); err != nil {
		return err
	}
	rep.anonHeld, _ = procStatus(pid, "RssAnon")
	rep.fileHeld, _ = procStatus(pid, "RssFile")
	rep.fdsHeld = procFDs(pid)
	fmt.Printf("  all %d pending after %s; proxy RSS %s, %d fds\n", cfg.n, rep.openDur.Round(time.Millisecond), mib(rep.rssHeld), rep.fdsHeld)

	if cfg.dwell > 0 {
		fmt.Printf("  dwelling %s with everything held\n", cfg.dwell)
		select {
		case <-ctx.Done():
			return errors.New("deadline during -dwell")
		case <-time.After(cfg.dwell):
		}
		if f := finished.Load(); f > 0 {
			fmt.Printf("  %d agents were answered during the dwell, before any approval\n", f)
		}
		rep.rssDwell, _ = procStatus(pid, "VmRSS")
		rep.anonDwell, _ = procStatus(pid, "RssAnon")
	}

	// Approve, oldest first, as the finance manager.
	t0 := time.Now()
	pending, n, err := listPending(admin, adminURL)
	if err != nil {
		return err
	}
	rep.listDur, rep.listBytes = time.Since(t0), n
	if len(pending) != cfg.n {
		return fmt.Errorf("GET /v1/approvals?status=pending lists %d, want %d", len(pending), cfg.n)
	}
	for _, p := range pending {
		if p.index >= cfg.n {
			return fmt.Errorf("approval %s holds entry %d of a run of %d", p.id, p.index, cfg.n)
		}
	}
	posted := make([]time.Time, cfg.n) // by agent index
	jobs := make(chan pendingApproval)
	var postErrs atomic.Int64
	var firstPostErr atomic.Value
	var workers sync.WaitGroup
	cpu2, _ := procCPU(pid)
	postStart := time.Now()
	for range cfg.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for p := range jobs {
				posted[p.index] = time.Now()
				if err := approve(ctx, admin, adminURL, priv, p); err != nil {
					postErrs.Add(1)
					firstPostErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	for _, p := range pending {
		if ctx.Err() != nil {
			break
		}
		jobs <- p
	}
	close(jobs)
	workers.Wait()
	rep.approvalsDur = time.Since(postStart)
	fmt.Printf("  %d approvals posted in %s\n", cfg.n, rep.approvalsDur.Round(time.Millisecond))
	// Every agent should be answered moments after its approval; a minute
	// after the last one, stop waiting and report who was not.
	allDone := make(chan struct{})
	go func() { agents.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(time.Minute):
		stopAgents()
		<-allDone
	}
	cpu3, _ := procCPU(pid)
	rep.cpuRelease = cpu3 - cpu2
	rep.rssAfter, _ = procStatus(pid, "VmRSS")
	rep.hwm, _ = procStatus(pid, "VmHWM")

	var last time.Time
	var problems []string
	ok := 0
	for i, r := range results {
		if r.err == nil && r.status == 201 && r.decision == "allow" {
			ok++
			if r.done.After(last) {
				last = r.done
			}
			if !posted[i].IsZero() {
				rep.latencies = append(rep.latencies, r.done.Sub(posted[i]))
			}
		}
	}
	if !last.IsZero() {
		rep.releaseDur = last.Sub(postStart)
	}
	if ok != cfg.n {
		problems = append(problems, fmt.Sprintf("%d of %d agents got 201 allow:\n%s", ok, cfg.n, summarize(results)))
	}
	if e := postErrs.Load(); e > 0 {
		problems = append(problems, fmt.Sprintf("%d approvals failed; first: %v", e, firstPostErr.Load()))
	}
	problems = append(problems, st.problems(cfg.n)...)
	if left, _, err := listPending(admin, adminURL); err != nil || len(left) != 0 {
		problems = append(problems, fmt.Sprintf("still pending after the run: %d (%v)", len(left), err))
	}
	if err := verifyChain(admin, adminURL); err != nil {
		problems = append(problems, err.Error())
	}

	printHeld(cfg, &rep, ok, st)
	if len(problems) > 0 {
		return fmt.Errorf("held run failed:\n  %s\nproxy log: %s", strings.Join(problems, "\n  "), summarizeLog(logPath))
	}
	fmt.Println("verified: every agent got 201 allow, the ERP saw each entry exactly once with a capability token, the chain verifies")
	return nil
}

// heldFiles writes the run's manifest (the example with journal_entry held
// for hold, a byte replace that keeps everything else as it is), the
// principals file and the finance manager's key pair.
func heldFiles(dir, manifest, hold string) (string, string, ed25519.PrivateKey, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return "", "", nil, err
	}
	old := []byte(`"hold": "0s"`)
	if c := bytes.Count(b, old); c != 1 {
		return "", "", nil, fmt.Errorf("%s: want exactly one %s (journal_entry's) to replace, found %d", manifest, old, c)
	}
	mpath := filepath.Join(dir, "manifest-held.json")
	b = bytes.Replace(b, old, []byte(`"hold": `+strconv.Quote(hold)), 1)
	// Every held entry is a pending approval: room for all of them.
	b = bytes.Replace(b, []byte(`"app_id":`), []byte(`"max_pending": `+strconv.Itoa(maxHeld)+`, "app_id":`), 1)
	if err := os.WriteFile(mpath, b, 0o644); err != nil {
		return "", "", nil, err
	}
	pub, priv, err := keys.Generate()
	if err != nil {
		return "", "", nil, err
	}
	if err := keys.WritePair(filepath.Join(dir, "fm"), pub, priv); err != nil {
		return "", "", nil, err
	}
	ppath := filepath.Join(dir, "principals.yaml")
	yaml := "principals:\n  - id: " + approver + "\n    roles: [finance_manager]\n    public_key: fm.pub\n"
	if err := os.WriteFile(ppath, []byte(yaml), 0o644); err != nil {
		return "", "", nil, err
	}
	return mpath, ppath, priv, nil
}

func entryBody(i int) []byte {
	// Under the 1,000,000 cap: one finance_manager approval each. The
	// reference makes every body, and so every digest, distinct.
	return fmt.Appendf(nil, `{"reference":"%s%06d","date":"2026-09-30","account":"6100-Accrued-Expenses","amount":"%d.00","memo":"uapk-bench held entry"}`,
		refPrefix, i, 1000+i)
}

func (st *upstreamStats) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Method()) != "POST" || string(ctx.Path()) != jePath {
		st.other.Add(1)
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	st.entries.Add(1)
	if len(ctx.Request.Header.Peek("X-UAPK-Capability")) > 0 {
		st.withToken.Add(1)
	}
	ref := gjson.GetBytes(ctx.PostBody(), "reference").String()
	i, err := strconv.Atoi(strings.TrimPrefix(ref, refPrefix))
	if err != nil || !strings.HasPrefix(ref, refPrefix) || i < 0 || i >= len(st.seen) {
		st.bad.Add(1)
	} else {
		st.seen[i].Add(1)
	}
	ctx.SetStatusCode(fasthttp.StatusCreated)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"id":"JE-` + ref + `","status":"posted"}`)
}

// problems lists how what the ERP saw differs from n entries, each once,
// each with a capability token.
func (st *upstreamStats) problems(n int) []string {
	var out []string
	if got := st.entries.Load(); got != int64(n) {
		out = append(out, fmt.Sprintf("the ERP saw %d journal entries, want %d", got, n))
	}
	if got := st.withToken.Load(); got != st.entries.Load() {
		out = append(out, fmt.Sprintf("%d of %d journal entries reached the ERP without a capability token", st.entries.Load()-got, st.entries.Load()))
	}
	if st.other.Load() != 0 || st.bad.Load() != 0 {
		out = append(out, fmt.Sprintf("the ERP saw %d unexpected requests and %d unknown references", st.other.Load(), st.bad.Load()))
	}
	dup, missing := 0, 0
	for i := range st.seen {
		switch c := st.seen[i].Load(); {
		case c == 0:
			missing++
		case c > 1:
			dup++
		}
	}
	if dup != 0 || missing != 0 {
		out = append(out, fmt.Sprintf("entries posted to the ERP twice: %d, never: %d", dup, missing))
	}
	return out
}

// agent sends entry i on a connection of its own and waits for the answer,
// at most until deadline. Opening and sending is bounded by sem.
func agent(ctx context.Context, addr string, i int, deadline time.Time, sem chan struct{}) agentResult {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return agentResult{err: ctx.Err(), done: time.Now()}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		<-sem
		return agentResult{err: fmt.Errorf("dial: %w", err), done: time.Now()}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(deadline)
	body := entryBody(i)
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"X-UAPK-Justification: uapk-bench held entry %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		jePath, addr, i, len(body), body)
	_, err = conn.Write(req)
	<-sem
	if err != nil {
		return agentResult{err: fmt.Errorf("send: %w", err), done: time.Now()}
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), nil)
	if err != nil {
		return agentResult{err: fmt.Errorf("read: %w", err), done: time.Now()}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	r := agentResult{status: resp.StatusCode, decision: resp.Header.Get("X-UAPK-Decision"), body: string(b), done: time.Now()}
	if err != nil {
		r.err = fmt.Errorf("read body: %w", err)
	}
	return r
}

type pendingApproval struct {
	id, digest string
	index      int // the agent whose entry it holds
}

// listPending returns the pending approvals, oldest first, and the size of
// the answer.
func listPending(c *http.Client, base string) ([]pendingApproval, int, error) {
	var out []pendingApproval
	size := 0
	for cursor := ""; ; {
		resp, err := c.Get(base + "/v1/approvals?status=pending&limit=1000&cursor=" + url.QueryEscape(cursor))
		if err != nil {
			return nil, size, err
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
		resp.Body.Close()
		size += len(raw)
		if err != nil {
			return nil, size, err
		}
		if resp.StatusCode != 200 {
			return nil, size, fmt.Errorf("GET /v1/approvals?status=pending: %d %.200s", resp.StatusCode, raw)
		}
		var list struct {
			Approvals []approvals.Approval `json:"approvals"`
			Next      string               `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, size, err
		}
		for _, a := range list.Approvals {
			ref := gjson.Get(a.Body, "reference").String()
			i, err := strconv.Atoi(strings.TrimPrefix(ref, refPrefix))
			if err != nil || i < 0 || i >= maxHeld {
				return nil, size, fmt.Errorf("approval %s holds a body that is not the bench's: %.100s", a.ID, a.Body)
			}
			out = append(out, pendingApproval{id: a.ID, digest: a.Digest, index: i})
		}
		if cursor = list.Next; cursor == "" {
			return out, size, nil
		}
	}
}

// bearer adds the admin token to every admin call.
type bearer struct {
	rt    http.RoundTripper
	token string
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// approve signs p as the finance manager, with the wall clock, and posts it.
func approve(ctx context.Context, c *http.Client, base string, key ed25519.PrivateKey, p pendingApproval) error {
	at := time.Now().UTC().Format(time.RFC3339)
	s := approvals.Submission{Approver: approver, Decision: "approve", Reason: "uapk-bench", SignedAt: at,
		Signature: approvals.Sign(key, p.id, p.digest, "approve", approver, at)}
	b, _ := json.Marshal(s)
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/approvals/"+p.id+"/decisions", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Status string `json:"status"`
	}
	json.Unmarshal(raw, &m)
	if resp.StatusCode != 200 || m.Status != approvals.StatusApproved {
		return fmt.Errorf("approve %s: %d %.200s", p.id, resp.StatusCode, raw)
	}
	return nil
}

func ledgerHead(c *http.Client, base string) (uint64, error) {
	resp, err := c.Get(base + "/v1/ledger/head")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var h struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return 0, fmt.Errorf("GET /v1/ledger/head: %w", err)
	}
	return h.Seq, nil
}

func verifyChain(c *http.Client, base string) error {
	resp, err := c.Get(base + "/v1/ledger/verify")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET /v1/ledger/verify: %d %.300s", resp.StatusCode, raw)
	}
	return nil
}

// waitReady waits for /readyz and the sidecar's port.
func waitReady(ctx context.Context, c *http.Client, adminURL, sideAddr string, exited <-chan struct{}) error {
	for range 200 {
		resp, err := c.Get(adminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if conn, err := net.DialTimeout("tcp", sideAddr, time.Second); err == nil {
					conn.Close()
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the proxy exited at start")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("the proxy did not become ready in 10s")
}

// stopChild interrupts the proxy and waits for it to drain (it allows itself
// 30s), then kills it.
func stopChild(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// procLimit returns the soft limit of a /proc/PID/limits row.
func procLimit(pid int, row string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, row); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

func procFDs(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// summarize counts the agents' outcomes by status, decision and error.
func summarize(rs []agentResult) string {
	counts := map[string]int{}
	samples := map[string]string{}
	for _, r := range rs {
		var k string
		switch {
		case r.err != nil:
			k = "error: " + addrRE.ReplaceAllString(r.err.Error(), "ADDR")
		case r.done.IsZero():
			k = "no answer"
		default:
			k = fmt.Sprintf("%d %s", r.status, r.decision)
			if _, ok := samples[k]; !ok {
				samples[k] = r.body
			}
		}
		counts[k]++
	}
	var b strings.Builder
	for i, k := range byCount(counts) {
		if i == 10 {
			fmt.Fprintf(&b, "    ... %d more kinds\n", len(counts)-10)
			break
		}
		fmt.Fprintf(&b, "    %6d  %s", counts[k], k)
		if s := samples[k]; s != "" {
			fmt.Fprintf(&b, "  %.160s", s)
		}
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

var addrRE = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

func byCount(counts map[string]int) []string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// summarizeLog counts the proxy's log lines that are not routine: decisions
// by decision/reason/status, other messages by level and text.
func summarizeLog(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Level, Message, Decision, Reason string
			Status                           json.RawMessage // a number in decision lines, a word elsewhere
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			counts["(not JSON) "+clipLine(sc.Text())]++
			continue
		}
		switch l.Message {
		case "decision":
			counts[fmt.Sprintf("decision %s/%s status %s", l.Decision, l.Reason, l.Status)]++
		case "approval decision", "listening", "created the gateway key":
		default:
			counts[l.Level+": "+l.Message]++
		}
	}
	var b strings.Builder
	b.WriteString(path)
	for i, k := range byCount(counts) {
		if i == 12 {
			break
		}
		fmt.Fprintf(&b, "\n    %6d  %s", counts[k], k)
	}
	return b.String()
}

func logTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return path + "\n" + string(b)
}

func clipLine(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

// loadavg is the 1-minute load average: other work on the machine skews
// the timings (not the RSS).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// heldGoal is the RSS the proxy should stay within holding heldGoalN
// requests, the idle proxy included (about 15 KiB each).
const (
	heldGoal  = 150 << 20
	heldGoalN = 10_000
)

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

func printHeld(cfg heldConfig, r *heldReport, ok int, st *upstreamStats) {
	n := float64(cfg.n)
	row := func(k, v string) { fmt.Printf("  %-46s %s\n", k, v) }
	fmt.Println()
	fmt.Printf("held requests: %d (hold %q, %d approval workers, load %s at the end)\n", cfg.n, cfg.hold, cfg.workers, loadavg())
	row("RLIMIT_NOFILE bench / proxy", r.nofile+" / "+r.proxyNofile)
	row("proxy RSS before load (anon)", mib(r.rssBefore)+" ("+mib(r.anonBefore)+")")
	row("proxy RSS with all held (anon, file)", mib(r.rssHeld)+" ("+mib(r.anonHeld)+", "+mib(r.fileHeld)+")")
	row("  held minus before: per held request (anon)", fmt.Sprintf("%s: %.1f KiB (%.1f KiB)", mib(r.rssHeld-r.rssBefore),
		float64(r.rssHeld-r.rssBefore)/n/1024, float64(r.anonHeld-r.anonBefore)/n/1024))
	goal := func(rss int64) string {
		if cfg.n != heldGoalN {
			return fmt.Sprintf("(the goal, %s, is for -held %d)", mib(heldGoal), heldGoalN)
		}
		return fmt.Sprintf("%.2f x the goal of %s", float64(rss)/float64(heldGoal), mib(heldGoal))
	}
	row("  against the goal", goal(r.rssHeld))
	if cfg.n == heldGoalN {
		figure(fmt.Sprintf("proxy RSS with %d requests held", cfg.n),
			fmt.Sprintf("%s (%.1f KiB each above idle)", mib(r.rssHeld), float64(r.rssHeld-r.rssBefore)/n/1024),
			"idle "+mib(r.rssBefore), "<= "+mib(heldGoal), r.rssHeld <= heldGoal)
	}
	if r.rssDwell > 0 {
		row("proxy RSS at the end of -dwell (anon)", mib(r.rssDwell)+" ("+mib(r.anonDwell)+"), "+goal(r.rssDwell))
	}
	row("proxy open fds with all held", strconv.Itoa(r.fdsHeld))
	row("proxy RSS after release / peak (VmHWM)", mib(r.rssAfter)+" / "+mib(r.hwm))
	row("open: first dial to all pending", fmt.Sprintf("%s (%.0f held/s, proxy cpu %s = %s/request)",
		r.openDur.Round(time.Millisecond), n/r.openDur.Seconds(), r.cpuOpen, (r.cpuOpen/time.Duration(cfg.n)).Round(time.Microsecond)))
	row("list pending approvals (admin GET)", fmt.Sprintf("%s, %.1f MiB", r.listDur.Round(time.Millisecond), float64(r.listBytes)/(1<<20)))
	row("approvals: first POST sent to last answered", fmt.Sprintf("%s (%.0f approvals/s)", r.approvalsDur.Round(time.Millisecond), n/r.approvalsDur.Seconds()))
	release := "none answered 201"
	if r.releaseDur > 0 {
		release = r.releaseDur.Round(time.Millisecond).String()
	}
	row("release: first POST sent to last 201", release)
	row("  proxy cpu during release", fmt.Sprintf("%s = %s/request", r.cpuRelease, (r.cpuRelease/time.Duration(cfg.n)).Round(time.Microsecond)))
	row("  own POST sent to agent's 201 p50/p99/max", fmt.Sprintf("%s / %s / %s",
		pct(r.latencies, 0.5).Round(time.Microsecond), pct(r.latencies, 0.99).Round(time.Microsecond), pct(r.latencies, 1).Round(time.Microsecond)))
	row("agents answered 201 allow", fmt.Sprintf("%d of %d", ok, cfg.n))
	row("ERP journal entries / with capability token", fmt.Sprintf("%d / %d", st.entries.Load(), st.withToken.Load()))
}
