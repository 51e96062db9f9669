package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/testbin"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// ---------------------------------------------------------------------------
// The upstream: a raw TCP HTTP/1.1 server that logs the nonce of every
// request it reads, and then answers, or fails in one of its modes.

// Upstream modes.
const (
	modeOK      = "ok"      // answer 200 after delay
	modeReset   = "reset"   // read the request, then RST the connection
	modePartial = "partial" // read the request, send half an answer, close
	modeHung    = "hung"    // read the request, never answer; note when the peer hangs up
)

var nonceRe = regexp.MustCompile(`fz-[0-9a-f]{8}-[0-9]{6}`)

type hangUp struct {
	nonce string
	at    time.Time // when the proxy closed the connection of a hung request
}

type upstream struct {
	URL   string
	ln    net.Listener
	mode  atomic.Value // string
	delay atomic.Int64 // ns, modeOK
	done  chan struct{}

	mu      sync.Mutex
	hits    map[string]int // nonce -> arrivals
	total   int
	conns   map[net.Conn]struct{}
	hangUps []hangUp
	wg      sync.WaitGroup
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{URL: "http://" + ln.Addr().String(), ln: ln, done: make(chan struct{}),
		hits: map[string]int{}, conns: map[net.Conn]struct{}{}}
	u.mode.Store(modeOK)
	u.wg.Add(1)
	go u.accept()
	t.Cleanup(u.close)
	return u
}

func (u *upstream) setMode(m string)         { u.mode.Store(m) }
func (u *upstream) setDelay(d time.Duration) { u.delay.Store(int64(d)) }
func (u *upstream) hitsOf(nonce string) int  { u.mu.Lock(); defer u.mu.Unlock(); return u.hits[nonce] }
func (u *upstream) totalHits() int           { u.mu.Lock(); defer u.mu.Unlock(); return u.total }
func (u *upstream) hangUpsSeen() []hangUp {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]hangUp(nil), u.hangUps...)
}
func (u *upstream) snapshot() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]int, len(u.hits))
	for k, v := range u.hits {
		m[k] = v
	}
	return m
}

func (u *upstream) close() {
	select {
	case <-u.done:
		return
	default:
	}
	close(u.done)
	u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

func (u *upstream) accept() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		select {
		case <-u.done:
			u.mu.Unlock()
			c.Close()
			return
		default:
		}
		u.conns[c] = struct{}{}
		u.wg.Add(1)
		u.mu.Unlock()
		go u.serve(c)
	}
}

func (u *upstream) serve(c net.Conn) {
	defer u.wg.Done()
	defer func() {
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		nonce := string(nonceRe.Find(body))
		u.mu.Lock()
		u.hits[nonce]++
		u.total++
		u.mu.Unlock()
		switch u.mode.Load().(string) {
		case modeReset:
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			return
		case modePartial:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":")
			return
		case modeHung:
			_, _ = io.Copy(io.Discard, br) // until the proxy hangs up (or close)
			select {
			case <-u.done:
			default:
				u.mu.Lock()
				u.hangUps = append(u.hangUps, hangUp{nonce: nonce, at: time.Now()})
				u.mu.Unlock()
			}
			return
		}
		if d := time.Duration(u.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-u.done:
				return
			}
		}
		resp := `{"status":"ok","nonce":"` + nonce + `"}`
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp); err != nil {
			return
		}
	}
}

// closedPortURL is an address nothing listens on: the ERP refuses.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// ---------------------------------------------------------------------------
// The load client: every request carries a nonce in its body.

type sent struct {
	nonce, sha, path, body string
	held                   bool // a journal entry (needs approval)
	status                 int
	decision               string
	record                 string // X-UAPK-Record
	approval               string // X-UAPK-Approval-Id
	respBody               []byte
	err                    error
	start, end             time.Time
}

// acked says the proxy answered with its decision: a 2xx, a 4xx, or the
// 502/504 of a forwarded request. 503 (the record could not be made
// durable) and 500 are not acknowledgements.
func (s *sent) acked() bool {
	if s.err != nil || s.status == 0 {
		return false
	}
	return s.status < 500 || s.status == 502 || s.status == 504
}

type clients struct {
	run string // 8 hex digits, the nonce's run id
	n   atomic.Int64
	mu  sync.Mutex
	all []*sent
}

func newClients() *clients {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &clients{run: hex.EncodeToString(b)}
}

func (c *clients) make(held bool) *sent {
	nonce := fmt.Sprintf("fz-%s-%06d", c.run, c.n.Add(1))
	s := &sent{nonce: nonce, held: held}
	if held {
		s.path = "/api/v1/journal-entries"
		s.body = `{"account":"4000-Revenue","debit":0,"credit":250000,"description":"accrual ` + nonce + `"}`
	} else {
		s.path = "/api/v1/reconciliations"
		s.body = `{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55","memo":"` + nonce + `"}`
	}
	s.sha = sha256Hex([]byte(s.body))
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
	return s
}

// retry is another sending of s's body (an approved retry).
func (c *clients) retry(s *sent) *sent {
	r := &sent{nonce: s.nonce, held: s.held, path: s.path, body: s.body, sha: s.sha}
	c.mu.Lock()
	c.all = append(c.all, r)
	c.mu.Unlock()
	return r
}

func (c *clients) sents() []*sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*sent(nil), c.all...)
}

func (c *clients) ackedCount() int {
	n := 0
	for _, s := range c.sents() {
		if s.end.IsZero() {
			continue
		}
		if s.acked() {
			n++
		}
	}
	return n
}

// send sends s to base (the sidecar door) and fills in what came back.
func send(ctx context.Context, hc *http.Client, base string, s *sent, hdr ...string) {
	s.start = time.Now()
	defer func() { s.end = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, "POST", base+s.path, strings.NewReader(s.body))
	if err != nil {
		s.err = err
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Faults-Nonce", s.nonce)
	if s.held {
		req.Header.Set("X-UAPK-Justification", "quarter-end accrual "+s.nonce)
	} else {
		req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.err = err
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.err = err
		return
	}
	s.status, s.respBody = resp.StatusCode, b
	s.decision = resp.Header.Get("X-UAPK-Decision")
	s.record = resp.Header.Get("X-UAPK-Record")
	s.approval = resp.Header.Get("X-UAPK-Approval-Id")
}

// load runs workers sending reconciliations one after another, each at most
// max, until stop is closed or ctx ends. wait returns when all have ended.
func (c *clients) load(ctx context.Context, hc *http.Client, base string, workers, max int, stop <-chan struct{}) (wait func()) {
	return c.loadMixed(ctx, hc, base, workers, max, 0, stop)
}

// loadMixed is load with every heldEvery-th request of a worker a journal
// entry (0: none).
func (c *clients) loadMixed(ctx context.Context, hc *http.Client, base string, workers, max, heldEvery int, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range max {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				s := c.make(heldEvery > 0 && i%heldEvery == heldEvery-1)
				send(ctx, hc, base, s)
				if s.err != nil || s.status >= 500 {
					select { // a dead or refusing proxy: do not spin
					case <-time.After(20 * time.Millisecond):
					case <-stop:
						return
					}
				}
			}
		}()
	}
	return wg.Wait
}

func newHTTPClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// ---------------------------------------------------------------------------
// serve as a child process.

type proc struct {
	cmd     *exec.Cmd
	log     *procLog
	sidecar string
	admin   string
	exited  chan struct{}
	waitErr error
}

// launch starts `uapk-proxy args...` without waiting for anything.
func launch(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{log: newProcLog(), exited: make(chan struct{})}
	p.cmd = exec.Command(proxyBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UAPK_") { // only the flags configure it
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.WaitDelay = 5 * time.Second
	testbin.DieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill() // only the child this test started
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second): // stuck in the kernel (a frozen file system)
				t.Errorf("pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("%s (pid %d) log tail:\n%s", args[0], p.cmd.Process.Pid, p.log.tail(8))
		}
	})
	return p
}

// startServe runs serve and waits for its listening line.
func startServe(t *testing.T, args ...string) *proc {
	t.Helper()
	p := launch(t, append([]string{"serve"}, args...)...)
	if err := p.listening(time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *proc) listening(limit time.Duration) error {
	select {
	case a := <-p.log.listening:
		p.sidecar, p.admin = "http://"+a.SidecarAddr, "http://"+a.AdminAddr
		return nil
	case <-p.exited:
		return fmt.Errorf("serve exited %d before listening: %v\n%s", p.cmd.ProcessState.ExitCode(), p.waitErr, p.log.tail(30))
	case <-time.After(limit):
		return fmt.Errorf("serve not listening after %v:\n%s", limit, p.log.tail(30))
	}
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after SIGKILL")
	}
}

// term sends SIGTERM and returns the exit code (-1 if it had to be killed
// after limit).
func (p *proc) term(limit time.Duration) int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.waitExit(limit)
}

func (p *proc) waitExit(limit time.Duration) int {
	select {
	case <-p.exited:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

type listeningLine struct {
	SidecarAddr string `json:"sidecar_addr"`
	AdminAddr   string `json:"admin_addr"`
}

type procLog struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte
	lines     []string
	seen      bool
	listening chan listeningLine
}

func newProcLog() *procLog { return &procLog{listening: make(chan listeningLine, 1)} }

func (l *procLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.lines = append(l.lines, line)
		var m struct {
			Message string `json:"message"`
			listeningLine
		}
		if !l.seen && strings.Contains(line, `"listening"`) && json.Unmarshal([]byte(line), &m) == nil && m.Message == "listening" {
			l.seen = true
			l.listening <- m.listeningLine
		}
	}
	return len(b), nil
}

// find returns the first line for which match holds.
func (l *procLog) find(match func(string) bool) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if match(s) {
			return s, true
		}
	}
	return "", false
}

func (l *procLog) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *procLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if len(l.partial) > 0 {
		out += "\n" + string(l.partial)
	}
	return out
}

// ---------------------------------------------------------------------------
// A scenario's files: principals with an approver key, the manifest.

type fixture struct {
	dir        string
	principals string
	manifest   string
	fmKey      ed25519.PrivateKey
}

// newFixture writes the principals (an accountant for reconciliations, a
// finance manager who approves journal entries) and the example manifest,
// with journal entries held on the agent's connection for hold ("0s": a
// 202 at once).
func newFixture(t *testing.T, hold string) *fixture {
	t.Helper()
	dir := t.TempDir()
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WritePair(filepath.Join(dir, "fm"), pub, priv); err != nil {
		t.Fatal(err)
	}
	pr := "principals:\n" +
		"  - id: accountant@corp.example\n    roles: [staff_accountant]\n" +
		"  - id: fm@corp.example\n    roles: [finance_manager]\n    public_key: fm.pub\n"
	f := &fixture{dir: dir, principals: filepath.Join(dir, "principals.yaml"), manifest: filepath.Join(dir, "manifest.json")}
	if err := os.WriteFile(f.principals, []byte(pr), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := os.ReadFile("../../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	m = bytes.Replace(m, []byte(`"hold": "0s"`), []byte(`"hold": "`+hold+`"`), 1)
	if err := os.WriteFile(f.manifest, m, 0o644); err != nil {
		t.Fatal(err)
	}
	if f.fmKey, err = keys.LoadPrivateFile(filepath.Join(dir, "fm.key")); err != nil {
		t.Fatal(err)
	}
	return f
}

// serveArgs are the flags of a serve on dataDir in front of upstreamURL.
func (f *fixture) serveArgs(dataDir, upstreamURL string, extra ...string) []string {
	return append([]string{
		"--manifest", f.manifest, "--principals", f.principals, "--upstream", upstreamURL,
		"--sidecar-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--proxy-addr=",
		"--data-dir", dataDir, "--shutdown-grace", "5s",
	}, extra...)
}

// ---------------------------------------------------------------------------
// Admin API.

func adminToken(t *testing.T, dataDir string) string {
	t.Helper()
	tok, err := adminauth.ReadTokenFile(filepath.Join(dataDir, adminauth.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func adminDo(ctx context.Context, method, url, token, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// readyz returns /readyz's status (0 when no answer came within 2 s).
func readyz(admin string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	code, b, err := adminDo(ctx, "GET", admin+"/readyz", "", "")
	if err != nil {
		return 0, err.Error()
	}
	return code, string(b)
}

// waitFor polls cond every 50 ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// approve signs fm's approval of id and posts it.
func approve(ctx context.Context, f *fixture, admin, token, id string) error {
	code, b, err := adminDo(ctx, "GET", admin+"/v1/approvals/"+id, token, "")
	if err != nil || code != 200 {
		return fmt.Errorf("GET approval %s: %d %v %s", id, code, err, b)
	}
	var a approvals.Approval
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	at := time.Now().UTC().Format(time.RFC3339)
	sub, _ := json.Marshal(approvals.Submission{Approver: "fm@corp.example", Decision: "approve", Reason: "reviewed",
		SignedAt: at, Signature: approvals.Sign(f.fmKey, id, a.Digest, "approve", "fm@corp.example", at)})
	code, b, err = adminDo(ctx, "POST", admin+"/v1/approvals/"+id+"/decisions", token, string(sub))
	if err != nil || code != 200 {
		return fmt.Errorf("approve %s: %d %v %s", id, code, err, b)
	}
	return nil
}

// pendingByBody lists the pending approvals, by body.
func pendingByBody(ctx context.Context, admin, token string) (map[string]string, error) {
	code, b, err := adminDo(ctx, "GET", admin+"/v1/approvals?status=pending&limit=1000", token, "")
	if err != nil || code != 200 {
		return nil, fmt.Errorf("GET pending approvals: %d %v %s", code, err, b)
	}
	var page struct {
		Approvals []approvals.Approval `json:"approvals"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, a := range page.Approvals {
		out[a.Body] = a.ID
	}
	return out, nil
}

func metricValue(admin, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	code, b, err := adminDo(ctx, "GET", admin+"/metrics", "", "")
	if err != nil || code != 200 {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// ---------------------------------------------------------------------------
// The checker.

// tally is a scenario's figures for the summary.
type tally struct {
	runs, requests, acked, lost, dup int
	failed                           []string // checks that failed
	skipped                          string
}

// check runs one named check as a subtest, so that a failure names it.
func (tl *tally) check(t *testing.T, name string, f func(t *testing.T)) bool {
	t.Helper()
	ok := t.Run(name, f)
	if !ok {
		tl.failed = append(tl.failed, name)
	}
	return ok
}

// skip ends the scenario as skipped, saying why, in the log and the summary.
func (tl *tally) skip(t *testing.T, why string) {
	t.Helper()
	tl.skipped = why
	t.Skip("skipped: " + why)
}

type ledgerView struct {
	head      uint64
	bySeq     map[uint64]ledger.Record
	bySHA     map[string][]ledger.Record // request/override records by body_sha256
	closedBy  map[uint64][]ledger.Record // request seq -> forward and outcome records
	outcomes  int
	forwards  int
	readError error
}

func readLedger(dataDir string) ledgerView {
	v := ledgerView{bySeq: map[uint64]ledger.Record{}, bySHA: map[string][]ledger.Record{}, closedBy: map[uint64][]ledger.Record{}}
	l, err := ledger.Open(filepath.Join(dataDir, "ledger.db"), ledger.Options{ReadOnly: true, LockTimeout: 5 * time.Second})
	if err != nil {
		v.readError = err
		return v
	}
	defer l.Close()
	v.head = l.Head().Seq
	if v.head == 0 {
		return v
	}
	byDigest := map[string][]uint64{}
	var unlinked []ledger.Record
	v.readError = l.Range(1, v.head, func(_ uint64, raw []byte) error {
		var r ledger.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		v.bySeq[r.Seq] = r
		switch r.Kind {
		case "request", "override":
			if sha, ok := r.Data["body_sha256"].(string); ok {
				v.bySHA[sha] = append(v.bySHA[sha], r)
			}
			if r.Decision == "allow" && r.Digest != "" {
				byDigest[r.Digest] = append(byDigest[r.Digest], r.Seq)
			}
		case "forward", "outcome":
			if r.Kind == "forward" {
				v.forwards++
			} else {
				v.outcomes++
			}
			if rs, ok := r.Data["request_record"].(float64); ok {
				v.closedBy[uint64(rs)] = append(v.closedBy[uint64(rs)], r)
			} else {
				unlinked = append(unlinked, r)
			}
		}
		return nil
	})
	// An outcome that names its request only by digest closes the latest
	// allow of that digest before it that is not closed yet.
	for _, r := range unlinked {
		seqs := byDigest[r.Digest]
		for i := len(seqs) - 1; i >= 0; i-- {
			if seqs[i] < r.Seq && len(v.closedBy[seqs[i]]) == 0 {
				v.closedBy[seqs[i]] = append(v.closedBy[seqs[i]], r)
				break
			}
		}
	}
	return v
}

// checkAll runs the four properties against dataDir (the proxy stopped)
// and what the clients were told and the upstream saw, and adds the
// figures to tl.
func checkAll(t *testing.T, tl *tally, dataDir string, cl *clients, up *upstream) {
	t.Helper()
	sents := cl.sents()
	var hits map[string]int
	if up != nil {
		hits = up.snapshot()
	} else {
		hits = map[string]int{}
	}
	v := readLedger(dataDir)
	if v.readError != nil {
		t.Errorf("reading the ledger: %v", v.readError)
		tl.failed = append(tl.failed, "ledger-readable")
		return
	}
	byNonce := map[string]*sent{}
	for _, s := range sents {
		byNonce[s.nonce] = s
	}
	// Pair each answered request with its record: by X-UAPK-Record when
	// the proxy named it, else the body's latest request record.
	recordOf := func(s *sent) (ledger.Record, bool) {
		if s.record != "" {
			seq, err := strconv.ParseUint(s.record, 10, 64)
			if err == nil {
				r, ok := v.bySeq[seq]
				return r, ok
			}
		}
		rs := v.bySHA[s.sha]
		if len(rs) == 0 {
			return ledger.Record{}, false
		}
		return rs[len(rs)-1], true
	}
	tl.requests += len(sents)
	lost := map[string]bool{}
	for _, s := range sents {
		if s.acked() {
			tl.acked++
		}
	}

	tl.check(t, "chain-verifies", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, proxyBin, "verify", "--data-dir", dataDir).CombinedOutput()
		if err != nil {
			t.Errorf("uapk-proxy verify --data-dir: %v\n%s", err, out)
		}
	})
	tl.check(t, "acked-in-chain", func(t *testing.T) {
		n := 0
		for _, s := range sents {
			if !s.acked() {
				continue
			}
			r, ok := recordOf(s)
			sha, _ := r.Data["body_sha256"].(string)
			if !ok || (r.Kind != "request" && r.Kind != "override") || sha != s.sha || r.Digest == "" {
				lost[s.nonce] = true
				if n++; n <= 10 {
					t.Errorf("%s answered %d (%s, record %q) but its request record is missing or wrong: %+v", s.nonce, s.status, s.decision, s.record, r)
				}
			}
		}
		if n > 10 {
			t.Errorf("... %d in all", n)
		}
	})
	tl.check(t, "acked-allow-has-forward-or-outcome", func(t *testing.T) {
		n := 0
		for _, s := range sents {
			if !s.acked() || s.decision != "allow" {
				continue
			}
			r, ok := recordOf(s)
			if !ok || len(v.closedBy[r.Seq]) == 0 {
				lost[s.nonce] = true
				if n++; n <= 10 {
					t.Errorf("%s answered %d allow (request record %d) and the chain has neither its forward nor an outcome record", s.nonce, s.status, r.Seq)
				}
			}
		}
		if n > 10 {
			t.Errorf("... %d in all", n)
		}
	})
	tl.check(t, "allow-has-forward-or-outcome", func(t *testing.T) {
		n := 0
		for seq, r := range v.bySeq {
			if (r.Kind == "request" || r.Kind == "override") && r.Decision == "allow" && len(v.closedBy[seq]) == 0 {
				if n++; n <= 10 {
					t.Errorf("allow record %d (%s) has no forward record and no outcome record after the restart", seq, r.Action)
				}
			}
		}
		if n > 10 {
			t.Errorf("... %d in all", n)
		}
	})
	tl.check(t, "upstream-saw-only-allowed", func(t *testing.T) {
		for nonce, n := range hits {
			s := byNonce[nonce]
			if s == nil {
				t.Errorf("the upstream got %d requests with nonce %q no client sent", n, nonce)
				continue
			}
			allows := 0
			for _, r := range v.bySHA[s.sha] {
				if r.Decision == "allow" {
					allows++
				}
			}
			if allows < n {
				t.Errorf("%s reached the upstream %d times with %d allow records", nonce, n, allows)
			}
		}
	})
	tl.check(t, "refused-not-forwarded", func(t *testing.T) {
		for _, s := range sents {
			if s.err == nil && s.status == 503 && hits[s.nonce] > 0 {
				t.Errorf("%s answered 503 %s but reached the upstream %d times", s.nonce, s.respBody, hits[s.nonce])
			}
		}
	})
	tl.check(t, "forwarded-once", func(t *testing.T) {
		for nonce, n := range hits {
			if n > 1 {
				tl.dup++
				t.Errorf("%s reached the upstream %d times", nonce, n)
			}
		}
	})
	tl.lost += len(lost)
	t.Logf("ledger: %d records, %d forward, %d outcome; clients: %d sent, %d acknowledged; upstream: %d requests",
		v.head, v.forwards, v.outcomes, len(sents), countAcked(sents), sumHits(hits))
}

func countAcked(ss []*sent) int {
	n := 0
	for _, s := range ss {
		if s.acked() {
			n++
		}
	}
	return n
}

func sumHits(h map[string]int) int {
	n := 0
	for _, v := range h {
		n += v
	}
	return n
}

func statusCounts(ss []*sent) string {
	m := map[string]int{}
	for _, s := range ss {
		switch {
		case s.err != nil:
			m["err"]++
		default:
			m[strconv.Itoa(s.status)]++
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
