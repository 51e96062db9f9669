package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// fwdEnv is a running proxy with the forward door on (and, unless a tweak
// says otherwise, HTTPS interception with a CA made by `ca init`) in front
// of the mock ERP served over http or https. The sidecar door forwards to
// the same ERP, so a request can be compared across the two doors.
type fwdEnv struct {
	*env
	scheme string
	erpURL string // the ERP as agents name it, e.g. https://127.0.0.1:PORT
	proxy  string // http://127.0.0.1:PORT of the forward door
	caPEM  string // the interception CA's certificate file
	erpCA  string // the ERP's own certificate (https only)
	erpSrv *httptest.Server
}

func newFwdEnv(t *testing.T, scheme string, tweak ...func(*serveOptions)) *fwdEnv {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, erp: erpmock.New(), clock: &clock{}, logs: &syncBuffer{}, keyDir: dir}
	e.clock.Set(businessHours)
	fe := &fwdEnv{env: e, scheme: scheme}
	fe.erpSrv = httptest.NewUnstartedServer(e.erp)
	fe.erpSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if scheme == "https" {
		fe.erpSrv.StartTLS()
		fe.erpCA = filepath.Join(dir, "erp-ca.pem")
		writePEMCert(t, fe.erpCA, fe.erpSrv.Certificate())
	} else {
		fe.erpSrv.Start()
	}
	t.Cleanup(fe.erpSrv.Close)
	fe.erpURL = fe.erpSrv.URL

	caDir := filepath.Join(dir, "ca")
	var out bytes.Buffer
	if code := runCLI(t, &out, "ca", "init", "--out", caDir); code != 0 {
		t.Fatalf("ca init: %d %s", code, out.String())
	}
	fe.caPEM = filepath.Join(caDir, "ca.pem")
	e.opts = &serveOptions{
		Manifest:    "../../examples/manifests/sox-financial.json",
		Principals:  writePrincipals(t, dir),
		Upstream:    fe.erpURL,
		SidecarAddr: "127.0.0.1:0",
		ProxyAddr:   "127.0.0.1:0",
		AdminAddr:   "127.0.0.1:0",
		CADir:       caDir,
		UpstreamCA:  fe.erpCA,
		DataDir:     filepath.Join(dir, "data"),
		MaxBody:     "10MiB",
		LogLevel:    "info",
		now:         e.clock.Now,
	}
	// The test ERP listens on a loopback port chosen at random: the
	// manifest's erp_hosts names it, as an operator names the real ERP.
	withERPHosts(strings.TrimPrefix(fe.erpURL, scheme+"://"))(e.opts)
	for _, f := range tweak {
		f(e.opts)
	}
	e.start()
	fe.proxy = "http://" + e.srv.ProxyAddr.String()
	return fe
}

// withERPHosts puts hosts first in the manifest's tool_restrictions.erp_hosts.
func withERPHosts(hosts ...string) func(*serveOptions) {
	return func(o *serveOptions) {
		b, err := os.ReadFile(o.Manifest)
		if err != nil {
			panic(err)
		}
		q, _ := json.Marshal(hosts)
		const list = `"erp_hosts": [`
		if !bytes.Contains(b, []byte(list)) {
			panic(o.Manifest + " has no erp_hosts")
		}
		p := filepath.Join(filepath.Dir(o.Principals), "manifest-erp-hosts.json")
		if err := os.WriteFile(p, bytes.Replace(b, []byte(list), []byte(list+string(q[1:len(q)-1])+", "), 1), 0o644); err != nil {
			panic(err)
		}
		o.Manifest = p
	}
}

func writePEMCert(t testing.TB, path string, c *x509.Certificate) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkLeaks fails the test if goroutines started during it outlive it; it
// runs after every other cleanup (the env's stop among them).
func checkLeaks(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	}
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		goleak.VerifyNone(t, opts...)
	})
}

// agentRequest is one ERP call as an agent makes it.
type agentRequest struct {
	method, url, body string
	headers           map[string]string
}

// agentReply is what the agent saw; err is set when no HTTP answer came
// (a refused handshake, a refused CONNECT).
type agentReply struct {
	status int
	header http.Header
	body   string
	err    string
}

// agentClient is a real HTTP client configured to use the forward door.
type agentClient struct {
	name string
	bin  string // skipped when missing
	// do sends r through proxy; trust is the CA file it trusts ("" for
	// none beyond its defaults).
	do func(t *testing.T, proxy, trust string, r agentRequest) agentReply
}

var agentClients = []agentClient{
	{"go", "", goAgent},
	{"curl", "curl", curlAgent},
	{"python", "python3", pythonAgent},
	{"node", "node", nodeAgent},
}

func goAgent(t *testing.T, proxyURL, trust string, r agentRequest) agentReply {
	pu, _ := url.Parse(proxyURL)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{}}
	if trust != "" {
		pemData, err := os.ReadFile(trust)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemData)
		tr.TLSClientConfig.RootCAs = pool
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(r.method, r.url, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return agentReply{err: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return agentReply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// clientEnv is the environment of a client process: this one's, without
// any proxy or CA setting that would change what the test asks for.
func clientEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
			"NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_OPTIONS", "NODE_USE_ENV_PROXY":
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}

func runClient(t *testing.T, cmd *exec.Cmd) ([]byte, error) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env, c.Dir, c.Stdin, c.Stderr = cmd.Env, cmd.Dir, cmd.Stdin, &stderr
	out, err := c.Output()
	if stderr.Len() > 0 {
		t.Logf("%s stderr: %s", filepath.Base(cmd.Path), stderr.String())
	}
	return out, err
}

func curlAgent(t *testing.T, proxyURL, trust string, r agentRequest) agentReply {
	dir := t.TempDir()
	headersFile, bodyFile := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
	args := []string{"-sS", "--max-time", "30", "--proxy", proxyURL, "-X", r.method,
		"-D", headersFile, "-o", bodyFile, "-w", "%{http_code}"}
	if trust != "" {
		args = append(args, "--cacert", trust)
	}
	for k, v := range r.headers {
		args = append(args, "-H", k+": "+v)
	}
	if r.body != "" {
		args = append(args, "--data-binary", "@-")
	}
	args = append(args, r.url)
	path, _ := exec.LookPath("curl")
	cmd := exec.Command(path, args...)
	cmd.Env = clientEnv()
	cmd.Stdin = strings.NewReader(r.body)
	out, err := runClient(t, cmd)
	if err != nil {
		return agentReply{err: fmt.Sprintf("curl: %v (http_code %s)", err, out)}
	}
	raw, _ := os.ReadFile(headersFile)
	body, _ := os.ReadFile(bodyFile)
	// -D holds the CONNECT answer too; the last block is the ERP's (or the proxy's).
	blocks := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(raw), "\r\n", "\n")), "\n\n")
	h := http.Header{}
	for _, line := range strings.Split(blocks[len(blocks)-1], "\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	var status int
	fmt.Sscanf(string(out), "%d", &status)
	return agentReply{status: status, header: h, body: string(body)}
}

// scriptReply decodes what urlopen.py and fetch.mjs print.
func scriptReply(t *testing.T, name string, out []byte, err error) agentReply {
	var m struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		Error   string            `json:"error"`
	}
	if jerr := json.Unmarshal(out, &m); jerr != nil {
		t.Fatalf("%s printed %q (%v)", name, out, err)
	}
	if m.Error != "" {
		return agentReply{err: m.Error}
	}
	h := http.Header{}
	for k, v := range m.Headers {
		h.Set(k, v)
	}
	return agentReply{status: m.Status, header: h, body: m.Body}
}

func pythonAgent(t *testing.T, proxyURL, trust string, r agentRequest) agentReply {
	return pythonAgentEnv(t, proxyURL, trust, r)
}

// pythonAgentEnv runs urlopen.py; with trust "" the CA may come from env
// (SSL_CERT_FILE=...).
func pythonAgentEnv(t *testing.T, proxyURL, trust string, r agentRequest, env ...string) agentReply {
	arg, _ := json.Marshal(map[string]any{"proxy": proxyURL, "cafile": trust, "method": r.method, "url": r.url,
		"headers": r.headers, "body": r.body})
	script, _ := filepath.Abs("testdata/clients/urlopen.py")
	path, _ := exec.LookPath("python3")
	cmd := exec.Command(path, script, string(arg))
	cmd.Env = clientEnv(env...)
	out, err := runClient(t, cmd)
	return scriptReply(t, "urlopen.py", out, err)
}

var (
	nodeOnce sync.Once
	nodeDir  string
	nodeErr  error
)

// nodeClientDir is where fetch.mjs finds undici: testdata/clients once
// `npm ci` ran there (.ci/run does), else a copy installed in a temp dir.
func nodeClientDir(t *testing.T) string {
	nodeOnce.Do(func() {
		src, _ := filepath.Abs("testdata/clients")
		if _, err := os.Stat(filepath.Join(src, "node_modules", "undici", "package.json")); err == nil {
			nodeDir = src
			return
		}
		dir, err := os.MkdirTemp("", "uapk-node-client-")
		if err != nil {
			nodeErr = err
			return
		}
		for _, f := range []string{"package.json", "package-lock.json", "fetch.mjs"} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
			if err != nil {
				nodeErr = err
				return
			}
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			nodeErr = fmt.Errorf("npm ci for the Node client (run .ci/run, or npm ci in %s): %v: %s", src, err, out)
			return
		}
		nodeDir = dir
	})
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return nodeDir
}

func nodeAgent(t *testing.T, proxyURL, trust string, r agentRequest) agentReply {
	dir := nodeClientDir(t)
	arg, _ := json.Marshal(map[string]any{"proxy": proxyURL, "method": r.method, "url": r.url, "headers": r.headers, "body": r.body})
	path, _ := exec.LookPath("node")
	cmd := exec.Command(path, filepath.Join(dir, "fetch.mjs"), string(arg))
	cmd.Dir = dir
	var env []string
	if trust != "" {
		env = append(env, "NODE_EXTRA_CA_CERTS="+trust)
	}
	cmd.Env = clientEnv(env...)
	out, err := runClient(t, cmd)
	return scriptReply(t, "fetch.mjs", out, err)
}

func requireClient(t *testing.T, c agentClient) {
	t.Helper()
	if c.bin == "" {
		return
	}
	if _, err := exec.LookPath(c.bin); err != nil {
		t.Skipf("%s not installed (.ci/run installs it)", c.bin)
	}
}

// forwardCases are allow, deny and pending, each sent through the forward
// door by a real client and through the sidecar door, which must agree.
var forwardCases = []struct {
	name, method, path, body string
	headers                  map[string]string
	status                   int
	decision                 string
}{
	{"allow", "POST", "/api/v1/reconciliations", reconciliation,
		map[string]string{"Content-Type": "application/json", "X-UAPK-On-Behalf-Of": "accountant@corp.example", "X-UAPK-Justification": "month-end close"},
		200, "allow"},
	{"deny", "PUT", "/api/v1/audit-log/AL-1", `{"note":"tidy up"}`,
		map[string]string{"Content-Type": "application/json"}, 403, "deny"},
	{"pending", "POST", "/api/v1/journal-entries", accrual250k,
		map[string]string{"Content-Type": "application/json", "X-UAPK-Justification": "quarter-end accrual"}, 202, "pending"},
}

var recordNum = regexp.MustCompile(`"record":\d+`)

func TestForwardDoorRealClients(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			fe := newFwdEnv(t, scheme)
			for _, c := range agentClients {
				t.Run(c.name, func(t *testing.T) {
					requireClient(t, c)
					for _, tc := range forwardCases {
						t.Run(tc.name, func(t *testing.T) {
							fe.compareDoors(t, c, tc.method, tc.path, tc.body, tc.headers, tc.status, tc.decision)
						})
					}
				})
			}
			st := fe.erp.Stats()
			if st.LeakedUAPKHeaders != 0 || st.LeakedHopByHop != 0 || st.ForbiddenReached != 0 {
				t.Errorf("ERP stats %+v", st)
			}
			var rep verifier.Report
			if code := fe.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
				t.Errorf("verify %d %+v", code, rep)
			}
		})
	}
}

// compareDoors sends one request through the forward door with client c
// and through the sidecar door, and checks the answers and the ledger
// records agree: same status, verdict, body (but for its record number
// and approval id) and the same request digest.
func (fe *fwdEnv) compareDoors(t *testing.T, c agentClient, method, path, body string, headers map[string]string, status int, decision string) {
	t.Helper()
	hits := fe.erp.Stats().Total
	got := c.do(t, fe.proxy, fe.caPEM, agentRequest{method: method, url: fe.erpURL + path, body: body, headers: headers})
	if got.err != "" {
		t.Fatalf("%s: %s", c.name, got.err)
	}
	var hv []string
	for k, v := range headers {
		hv = append(hv, k, v)
	}
	side := fe.do(method, path, body, hv...)
	if got.status != status || side.status != status {
		t.Fatalf("forward %d %s; sidecar %d %s", got.status, got.body, side.status, side.body)
	}
	for _, h := range []string{"X-UAPK-Decision", "X-UAPK-Action"} {
		if got.header.Get(h) != side.header.Get(h) {
			t.Errorf("%s: forward %q, sidecar %q", h, got.header.Get(h), side.header.Get(h))
		}
	}
	if got.header.Get("X-UAPK-Decision") != decision {
		t.Errorf("decision %q", got.header.Get("X-UAPK-Decision"))
	}
	fseq := seqHeader(t, reply{got.status, got.header, []byte(got.body)})
	sseq := seqHeader(t, side)
	switch decision {
	case "deny":
		want := recordNum.ReplaceAllString(string(side.body), fmt.Sprintf(`"record":%d`, fseq))
		if got.body != want {
			t.Errorf("body\n got %s\nwant %s", got.body, want)
		}
	case "pending":
		var f, s map[string]any
		json.Unmarshal([]byte(got.body), &f)
		json.Unmarshal(side.body, &s)
		if f["approval_id"] == s["approval_id"] || got.header.Get("X-UAPK-Approval-Id") != f["approval_id"] {
			t.Errorf("approval ids: forward %v (header %q), sidecar %v", f["approval_id"], got.header.Get("X-UAPK-Approval-Id"), s["approval_id"])
		}
		delete(f, "approval_id")
		delete(s, "approval_id")
		if fmt.Sprint(f) != fmt.Sprint(s) {
			t.Errorf("pending body\n got %v\nwant %v", f, s)
		}
	case "allow":
		var f, s map[string]any
		json.Unmarshal([]byte(got.body), &f)
		json.Unmarshal(side.body, &s)
		if f["status"] == nil || f["status"] != s["status"] {
			t.Errorf("ERP body: forward %s, sidecar %s", got.body, side.body)
		}
		if n := fe.erp.Stats().Total - hits; n != 2 {
			t.Errorf("ERP reached %d times for two allowed requests", n)
		}
	}
	if decision != "allow" && fe.erp.Stats().Total != hits {
		t.Errorf("a %s request reached the ERP", decision)
	}
	fr, sr := fe.record(fseq), fe.record(sseq)
	wantURL := fe.erpURL + path
	if fr.Kind != "request" || fr.Data["door"] != "forward" || sr.Data["door"] != "sidecar" || fr.Data["url"] != wantURL || sr.Data["url"] != wantURL {
		t.Errorf("records: forward %+v, sidecar %+v", fr, sr)
	}
	if fr.Digest != sr.Digest || fr.Digest != gate.Digest(method, wantURL, []byte(body)) {
		t.Errorf("digest: forward %s, sidecar %s", fr.Digest, sr.Digest)
	}
	if fr.Decision != sr.Decision || fr.Reason != sr.Reason || fr.Action != sr.Action {
		t.Errorf("decision: forward %s/%s/%s, sidecar %s/%s/%s", fr.Decision, fr.Reason, fr.Action, sr.Decision, sr.Reason, sr.Action)
	}
}

// exampleDialer makes the forward door reach example.com (the name in
// httptest's certificate) at the loopback ERP, as DNS would a real ERP, and
// names example.com in erp_hosts.
func exampleDialer(dialed *atomic.Int64) func(*serveOptions) {
	return func(o *serveOptions) {
		withERPHosts("example.com")(o)
		o.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			if host != "example.com" {
				return nil, fmt.Errorf("test dialer: unexpected host %s", host)
			}
			dialed.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		}
	}
}

// Clients configured only through their environment, as the guide in
// docs/forward-proxy.md tells operators: Python with SSL_CERT_FILE, curl
// with HTTPS_PROXY and CURL_CA_BUNDLE, a Go program with HTTPS_PROXY and
// SSL_CERT_FILE. (Go's ProxyFromEnvironment never proxies 127.0.0.1, so
// the ERP is named example.com here.)
func TestForwardDoorClientsTrustTheCAThroughTheirEnvironment(t *testing.T) {
	var dialed atomic.Int64
	fe := newFwdEnv(t, "https", exampleDialer(&dialed))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(fe.erpURL, "https://"))
	u := "https://example.com:" + port + "/api/v1/accounts/1010-Cash/balance"
	t.Run("python SSL_CERT_FILE", func(t *testing.T) {
		if _, err := exec.LookPath("python3"); err != nil {
			t.Skip("python3 not installed")
		}
		if r := pythonAgentEnv(t, fe.proxy, "", agentRequest{method: "GET", url: u}, "SSL_CERT_FILE="+fe.caPEM); r.status != 200 || r.header.Get("X-Uapk-Decision") != "allow" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("curl HTTPS_PROXY CURL_CA_BUNDLE", func(t *testing.T) {
		path, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl not installed")
		}
		cmd := exec.Command(path, "-sS", "-o", "/dev/null", "-w", "%{http_code}", u)
		cmd.Env = clientEnv("HTTPS_PROXY="+fe.proxy, "CURL_CA_BUNDLE="+fe.caPEM)
		if out, err := runClient(t, cmd); err != nil || string(out) != "200" {
			t.Errorf("%v %s", err, out)
		}
	})
	t.Run("go HTTPS_PROXY SSL_CERT_FILE", func(t *testing.T) {
		goBin, err := exec.LookPath("go")
		if err != nil {
			t.Skip("go not on PATH")
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "main.go"), []byte(`package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1]) // http.DefaultTransport: ProxyFromEnvironment, system roots
	if err != nil {
		fmt.Print(err)
		os.Exit(1)
	}
	fmt.Print(resp.StatusCode, " ", resp.Header.Get("X-UAPK-Decision"))
}
`), 0o644)
		build := exec.Command(goBin, "build", "-o", filepath.Join(dir, "agent"), filepath.Join(dir, "main.go"))
		build.Env = clientEnv()
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v %s", err, out)
		}
		cmd := exec.Command(filepath.Join(dir, "agent"), u)
		cmd.Env = clientEnv("HTTPS_PROXY="+fe.proxy, "SSL_CERT_FILE="+fe.caPEM)
		if out, err := runClient(t, cmd); err != nil || string(out) != "200 allow" {
			t.Errorf("%v %s", err, out)
		}
	})
	if dialed.Load() == 0 {
		t.Errorf("the proxy's dialer was not used")
	}
}

// The ERP can be reached by host name: the CONNECT names it, the proxy's
// dialer resolves it (here to the loopback ERP), the leaf is minted for the
// name and the ERP's own certificate is verified for it.
func TestForwardDoorReachesAnERPByHostName(t *testing.T) {
	checkLeaks(t)
	var dialed atomic.Int64
	fe := newFwdEnv(t, "https", exampleDialer(&dialed))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(fe.erpURL, "https://"))
	u := "https://example.com:" + port + "/api/v1/reconciliations"
	for _, c := range agentClients {
		t.Run(c.name, func(t *testing.T) {
			requireClient(t, c)
			before := fe.erp.Stats().Total
			r := c.do(t, fe.proxy, fe.caPEM, agentRequest{method: "POST", url: u, body: reconciliation,
				headers: map[string]string{"Content-Type": "application/json", "X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
			if r.err != "" || r.status != 200 || r.header.Get("X-UAPK-Decision") != "allow" {
				t.Fatalf("%+v", r)
			}
			rec := fe.record(seqHeader(t, reply{r.status, r.header, []byte(r.body)}))
			if rec.Data["url"] != u || rec.Digest != gate.Digest("POST", u, []byte(reconciliation)) {
				t.Errorf("record %+v", rec)
			}
			if fe.erp.Stats().Total != before+1 {
				t.Errorf("ERP not reached once")
			}
		})
	}
	if dialed.Load() == 0 {
		t.Errorf("the proxy's dialer was not used")
	}
}

// A client that does not trust the install's CA fails the TLS handshake;
// nothing is recorded as a request and nothing reaches the ERP.
func TestForwardDoorClientsNotTrustingTheCAFailTheHandshake(t *testing.T) {
	checkLeaks(t)
	fe := newFwdEnv(t, "https")
	head := fe.srv.Ledger().Head().Seq
	for _, c := range agentClients {
		t.Run(c.name, func(t *testing.T) {
			requireClient(t, c)
			r := c.do(t, fe.proxy, "", agentRequest{method: "POST", url: fe.erpURL + "/api/v1/reconciliations", body: reconciliation,
				headers: map[string]string{"X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
			if r.err == "" {
				t.Fatalf("answer without trusting the CA: %+v", r)
			}
			t.Logf("%s: %s", c.name, r.err)
		})
	}
	if st := fe.erp.Stats(); st.Total != 0 {
		t.Errorf("ERP reached: %+v", st)
	}
	if h := fe.srv.Ledger().Head().Seq; h != head {
		t.Errorf("%d records written for failed handshakes", h-head)
	}
	if !strings.Contains(fe.logs.String(), "TLS handshake error") {
		t.Errorf("failed handshakes not logged")
	}
}

// requestAfter is the first request record after seq (a tunnel's end, say,
// may be written in between).
func (fe *fwdEnv) requestAfter(seq uint64) ledger.Record {
	fe.t.Helper()
	for _, r := range fe.records() {
		if r.Seq > seq && r.Kind == "request" {
			return r
		}
	}
	fe.t.Fatalf("no request record after %d", seq)
	return ledger.Record{}
}

// Each client can name its app in the proxy URL's user (sent as
// Proxy-Authorization Basic, on the CONNECT for https); it never reaches
// the ERP.
func TestForwardDoorProxyUserIsTheApp(t *testing.T) {
	fe := newFwdEnv(t, "https")
	pu, _ := url.Parse(fe.proxy)
	for _, c := range agentClients {
		t.Run(c.name, func(t *testing.T) {
			requireClient(t, c)
			for _, tc := range []struct {
				user   string
				status int
			}{{"financial-ai-assistant", 200}, {"other-app", 403}} {
				withUser := *pu
				withUser.User = url.UserPassword(tc.user, "not-checked")
				r := c.do(t, withUser.String(), fe.caPEM, agentRequest{method: "GET", url: fe.erpURL + "/api/v1/accounts/1010-Cash/balance"})
				if r.err != "" || r.status != tc.status {
					t.Fatalf("%s: %+v", tc.user, r)
				}
				if rec := fe.record(seqHeader(t, reply{r.status, r.header, []byte(r.body)})); rec.App != tc.user {
					t.Errorf("%s: record app %q", tc.user, rec.App)
				}
			}
		})
	}
	for _, h := range fe.erp.Hits() {
		for _, name := range h.Headers {
			if strings.EqualFold(name, "Proxy-Authorization") {
				t.Errorf("Proxy-Authorization reached the ERP")
			}
		}
	}
}

// withTunnelHosts adds tool_restrictions.tunnel_hosts to the manifest.
func withTunnelHosts(hosts ...string) func(*serveOptions) {
	return func(o *serveOptions) {
		b, err := os.ReadFile(o.Manifest)
		if err != nil {
			panic(err)
		}
		q, _ := json.Marshal(hosts)
		p := filepath.Join(filepath.Dir(o.Principals), "manifest-tunnels.json")
		if err := os.WriteFile(p, bytes.Replace(b, []byte(`"tool_restrictions": {`), []byte(`"tool_restrictions": {"tunnel_hosts": `+string(q)+`,`), 1), 0o644); err != nil {
			panic(err)
		}
		o.Manifest = p
	}
}

func TestForwardDoorWithoutCA(t *testing.T) {
	checkLeaks(t)
	// The tunnel host is a second TLS server standing in for a bank API.
	bank := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "bank") }))
	bank.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(bank.Close)
	bankHost := strings.TrimPrefix(bank.URL, "https://")
	fe := newFwdEnv(t, "https", withTunnelHosts(bankHost), func(o *serveOptions) { o.CADir = "" })
	bankCA := filepath.Join(t.TempDir(), "bank.pem")
	writePEMCert(t, bankCA, bank.Certificate())

	t.Run("a tunnel_hosts target is tunnelled and recorded by host and port", func(t *testing.T) {
		for _, c := range agentClients {
			t.Run(c.name, func(t *testing.T) {
				requireClient(t, c)
				head := fe.srv.Ledger().Head().Seq
				r := c.do(t, fe.proxy, bankCA, agentRequest{method: "GET", url: bank.URL + "/accounts"})
				if r.err != "" || r.status != 200 || r.body != "bank" {
					t.Fatalf("%+v", r)
				}
				rec := fe.requestAfter(head)
				host, port, _ := net.SplitHostPort(bankHost)
				if rec.Kind != "request" || rec.Decision != "allow" || rec.Reason != "tunnel_host" || rec.Data["host"] != host ||
					rec.Data["port"] != port || rec.Digest != gate.Digest("CONNECT", bankHost, nil) {
					t.Errorf("record %+v", rec)
				}
			})
		}
	})
	t.Run("CONNECT to an unlisted host is denied and recorded", func(t *testing.T) {
		for _, c := range agentClients {
			t.Run(c.name, func(t *testing.T) {
				requireClient(t, c)
				head := fe.srv.Ledger().Head().Seq
				r := c.do(t, fe.proxy, fe.erpCA, agentRequest{method: "POST", url: fe.erpURL + "/api/v1/reconciliations", body: reconciliation,
					headers: map[string]string{"X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
				if r.err == "" && r.status != 403 {
					t.Fatalf("not refused: %+v", r)
				}
				rec := fe.requestAfter(head)
				if rec.Decision != "deny" || rec.Reason != "tunnel_not_allowed" || rec.Data["url"] != strings.TrimPrefix(fe.erpURL, "https://") {
					t.Errorf("record %+v", rec)
				}
			})
		}
		if st := fe.erp.Stats(); st.Total != 0 {
			t.Errorf("ERP reached through a refused tunnel: %+v", st)
		}
	})
	t.Run("the refusal carries the verdict", func(t *testing.T) {
		conn, err := net.Dial("tcp", fe.srv.ProxyAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		target := strings.TrimPrefix(fe.erpURL, "https://")
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		b, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(b), "HTTP/1.1 403") || !strings.Contains(string(b), `"reason":"tunnel_not_allowed"`) ||
			!strings.Contains(string(b), "X-Uapk-Decision: deny") {
			t.Errorf("answer %s", b)
		}
	})
	t.Run("no CA to serve", func(t *testing.T) {
		var m map[string]any
		if code := fe.adminGet("/ca.pem", &m); code != 404 || !strings.Contains(fmt.Sprint(m["message"]), "ca init") {
			t.Errorf("%d %v", code, m)
		}
	})
}

// The proxy never follows its own HTTP_PROXY/HTTPS_PROXY: a trap listening
// where they point sees no connection.
func TestForwardDoorIgnoresItsOwnProxyEnvironment(t *testing.T) {
	trap, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var caught atomic.Int64
	go func() {
		for {
			c, err := trap.Accept()
			if err != nil {
				return
			}
			caught.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { trap.Close() })
	trapURL := "http://" + trap.Addr().String()
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, trapURL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			fe := newFwdEnv(t, scheme)
			if tr := fe.srv.Forward().Transport(); tr.Proxy != nil {
				t.Errorf("the forward door's transport has a Proxy function")
			}
			r := goAgent(t, fe.proxy, fe.caPEM, agentRequest{method: "POST", url: fe.erpURL + "/api/v1/reconciliations", body: reconciliation,
				headers: map[string]string{"X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
			if r.err != "" || r.status != 200 {
				t.Fatalf("%+v", r)
			}
			// And the sidecar door, for good measure.
			if s := fe.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example"); s.status != 200 {
				t.Fatalf("sidecar %d", s.status)
			}
			if st := fe.erp.Stats(); st.Total != 2 {
				t.Errorf("ERP stats %+v", st)
			}
		})
	}
	if n := caught.Load(); n != 0 {
		t.Fatalf("the trap at HTTP(S)_PROXY caught %d connections", n)
	}
}

// A held request inside an intercepted tunnel is forwarded the moment its
// approval completes, once, with the capability token.
func TestForwardDoorHeldRequestInsideATunnel(t *testing.T) {
	checkLeaks(t)
	fe := newFwdEnv(t, "https", withHold("2m"))
	done := make(chan agentReply, 1)
	go func() {
		done <- goAgent(t, fe.proxy, fe.caPEM, agentRequest{method: "POST", url: fe.erpURL + "/api/v1/journal-entries", body: adjust1200k,
			headers: map[string]string{"Content-Type": "application/json", "X-UAPK-Justification": "ASC 606"}})
	}()
	var id string
	waitFor(t, func() bool {
		var list struct{ Approvals []map[string]any }
		fe.adminGet("/v1/approvals?status=pending", &list)
		if len(list.Approvals) == 1 {
			id = list.Approvals[0]["id"].(string)
		}
		return id != ""
	})
	if a := fe.approval(id); a.URL != fe.erpURL+"/api/v1/journal-entries" {
		t.Errorf("approval URL %q", a.URL)
	}
	waitFor(t, func() bool { return fe.srv.Approvals().Held() == 1 })
	for _, who := range [][2]string{{"cfo@corp.example", "cfo"}, {"controller@corp.example", "controller"}} {
		if code, m := fe.decide(id, who[0], who[1], "approve", fe.clock.Now()); code != 200 {
			t.Fatalf("%s: %d %v", who[0], code, m)
		}
	}
	var r agentReply
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("held request not released")
	}
	if r.err != "" || r.status != 201 || r.header.Get("X-UAPK-Decision") != "allow" {
		t.Fatalf("%+v", r)
	}
	if st := fe.erp.Stats(); st.Total != 1 || fe.erp.Hits()[0].Capability == "" {
		t.Errorf("ERP %+v", st)
	}
}

// An agent that hangs up while held leaves the approval usable; its retry
// through the forward door goes through once.
func TestForwardDoorHeldAgentHangsUp(t *testing.T) {
	checkLeaks(t)
	fe := newFwdEnv(t, "http", withHold("2m"))
	ctx, cancel := context.WithCancel(context.Background())
	pu, _ := url.Parse(fe.proxy)
	tr := &http.Transport{Proxy: http.ProxyURL(pu)}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "POST", fe.erpURL+"/api/v1/journal-entries", strings.NewReader(accrual250k))
	errc := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, func() bool { return fe.srv.Approvals().Held() == 1 })
	cancel()
	<-errc
	waitFor(t, func() bool { return fe.srv.Approvals().Held() == 0 }) // its goroutine is free at once
	var list struct{ Approvals []map[string]any }
	fe.adminGet("/v1/approvals?status=pending", &list)
	if len(list.Approvals) != 1 {
		t.Fatalf("approvals %v", list)
	}
	id := list.Approvals[0]["id"].(string)
	if code, m := fe.decide(id, "fm@corp.example", "fm", "approve", fe.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("%d %v", code, m)
	}
	if fe.erp.Stats().Total != 0 {
		t.Fatal("executed for an agent that had hung up")
	}
	r := goAgent(t, fe.proxy, "", agentRequest{method: "POST", url: fe.erpURL + "/api/v1/journal-entries", body: accrual250k,
		headers: map[string]string{"X-UAPK-Approval-Id": id}})
	if r.status != 201 {
		t.Fatalf("retry %+v", r)
	}
	r = goAgent(t, fe.proxy, "", agentRequest{method: "POST", url: fe.erpURL + "/api/v1/journal-entries", body: accrual250k,
		headers: map[string]string{"X-UAPK-Approval-Id": id}})
	if r.status != 409 || !strings.Contains(r.body, "consumed") {
		t.Fatalf("second retry %+v", r)
	}
	if fe.erp.Stats().Total != 1 {
		t.Errorf("ERP %+v", fe.erp.Stats())
	}
}

func TestForwardDoorBodyLimitAndLedgerFailure(t *testing.T) {
	checkLeaks(t)
	fe := newFwdEnv(t, "https", func(o *serveOptions) { o.MaxBody = "1KiB" })
	big := `{"account":"1010-Cash","memo":"` + strings.Repeat("x", 2048) + `"}`
	for _, c := range agentClients {
		t.Run(c.name, func(t *testing.T) {
			requireClient(t, c)
			r := c.do(t, fe.proxy, fe.caPEM, agentRequest{method: "POST", url: fe.erpURL + "/api/v1/reconciliations", body: big,
				headers: map[string]string{"Content-Type": "application/json", "X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
			if r.err != "" || r.status != 413 || !strings.Contains(r.body, "body_too_large") {
				t.Fatalf("%+v", r)
			}
			if rec := fe.record(seqHeader(t, reply{r.status, r.header, []byte(r.body)})); rec.Reason != "body_too_large" || rec.Data["door"] != "forward" {
				t.Errorf("record %+v", rec)
			}
		})
	}
	if fe.erp.Stats().Total != 0 {
		t.Fatal("an oversized body reached the ERP")
	}
	if err := fe.srv.Ledger().Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/reconciliations", "/api/v1/journal-entries"} {
		r := goAgent(t, fe.proxy, fe.caPEM, agentRequest{method: "POST", url: fe.erpURL + path, body: reconciliation,
			headers: map[string]string{"X-UAPK-On-Behalf-Of": "accountant@corp.example"}})
		if r.status != 503 || r.body != `{"error":"ledger_unavailable"}` {
			t.Errorf("%s: %+v", path, r)
		}
	}
	if fe.erp.Stats().Total != 0 {
		t.Fatal("forwarded without a record")
	}
}

func TestCAInitAndServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out bytes.Buffer
	if code := runCLI(t, &out, "ca", "init", "--out", dir); code != 0 || !strings.Contains(out.String(), "sha256 fingerprint") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca.key": 0o600} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v", name, st.Mode(), err)
		}
	}
	if !strings.Contains(string(must(os.ReadFile(filepath.Join(dir, "ca.key")))), "BEGIN PRIVATE KEY") {
		t.Errorf("ca.key is not PKCS#8 PEM")
	}
	out.Reset()
	if code := runCLI(t, &out, "ca", "init", "--out", dir); code != 1 || !strings.Contains(out.String(), "already exist") {
		t.Errorf("second init: exit %d: %s", code, out.String())
	}
	if code := runCLI(t, &out, "ca", "init"); code != 2 {
		t.Errorf("without --out: exit %d", code)
	}

	t.Run("GET /ca.pem serves the certificate", func(t *testing.T) {
		fe := newFwdEnv(t, "http")
		resp, err := http.Get(fe.admin + "/ca.pem")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != string(must(os.ReadFile(fe.caPEM))) || resp.Header.Get("Content-Type") != "application/x-pem-file" {
			t.Errorf("%d %s %s", resp.StatusCode, resp.Header, b)
		}
		// The config record names the CA in force.
		rec := fe.record(1)
		if rec.Kind != "config" || rec.Data["ca_sha256"] == nil || rec.Data["proxy_addr"] != "127.0.0.1:0" {
			t.Errorf("config record %+v", rec)
		}
	})

	t.Run("serve refuses a bad CA, a bad upstream CA, and no door at all", func(t *testing.T) {
		d := t.TempDir()
		os.Chmod(filepath.Join(dir, "ca.key"), 0o644)
		defer os.Chmod(filepath.Join(dir, "ca.key"), 0o600)
		os.WriteFile(filepath.Join(d, "not.pem"), []byte("nothing"), 0o644)
		out.Reset()
		code := runCLI(t, &out, "serve", "--manifest", "../../examples/manifests/sox-financial.json",
			"--ca-dir", dir, "--upstream-ca", filepath.Join(d, "not.pem"), "--proxy-addr", "", "--data-dir", filepath.Join(d, "data"))
		if code != 2 {
			t.Fatalf("exit %d: %s", code, out.String())
		}
		for _, w := range []string{"--ca-dir", "readable by other users", "--upstream-ca", "no PEM certificate", "no door"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("problem %q not listed:\n%s", w, out.String())
			}
		}
	})

	t.Run("the forward door alone needs no --upstream", func(t *testing.T) {
		d := t.TempDir()
		o := &serveOptions{Manifest: "../../examples/manifests/sox-financial.json", ProxyAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			DataDir: filepath.Join(d, "data"), MaxBody: "10MiB", LogLevel: "info"}
		srv, err := startServer(o, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if srv.SidecarAddr != nil || srv.ProxyAddr == nil {
			t.Errorf("doors: sidecar %v, forward %v", srv.SidecarAddr, srv.ProxyAddr)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPythonAgentReadsItsTooLargeAnswerOnTheForwardDoor: the same as on the
// sidecar, for an HTTP_PROXY agent posting plain http.
func TestPythonAgentReadsItsTooLargeAnswerOnTheForwardDoor(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test: %v", err)
	}
	fe := newFwdEnv(t, "http", func(o *serveOptions) { o.MaxBody = "64KiB" })
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(fe.proxy, "http://"))
	script := `import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)
c.request("POST", sys.argv[4] + "/api/v1/journal-entries", body=b"x" * int(sys.argv[3]), headers={"Content-Type": "application/json"})
r = c.getresponse()
print(r.status, r.read().decode())`
	out, err := exec.Command(py, "-c", script, host, port, "4194304", fe.erpURL).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "413 ") {
		t.Errorf("%v\n%s", err, out)
	}
}
