package agenttest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
)

// Proxy is a uapk-proxy process serving the example manifest in front of a
// mock ERP, with approvers whose keys it made with `uapk-proxy keygen`.
type Proxy struct {
	Bin     string // the uapk-proxy binary
	Sidecar string // base URL of the sidecar door
	Admin   string // base URL of the admin API
	Forward string // address of the forward (HTTP_PROXY) door, "" if it does not listen
	ERP     *erpmock.Server
	ERPURL  string // the mock ERP's base URL (the --upstream)
	DataDir string
	KeyDir  string // NAME.key / NAME.pub for cfo, controller, finance-manager
	// AdminToken is the token serve wrote to DATA/admin.token at its first
	// start (no --admin-tokens): every scope.
	AdminToken string

	cmd  *exec.Cmd
	logs *SyncBuffer
	done chan error
}

// Approvers of the example principals file and their key names.
var Approvers = map[string]string{
	"cfo":             "cfo@corp.example",
	"controller":      "controller@corp.example",
	"finance-manager": "fm@corp.example",
}

// Build compiles cmd/uapk-proxy into dir and returns the binary's path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "uapk-proxy")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/uapk-gateway/uapk-proxy/cmd/uapk-proxy")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/uapk-proxy: %v\n%s", err, out)
	}
	return bin
}

// StartProxy builds and starts uapk-proxy with examples/manifests/sox-financial.json
// (found from the repository root, root; its erp_hosts naming the mock ERP
// started here) on loopback ports of its choosing.
// It is stopped with SIGTERM when the test ends.
func StartProxy(t testing.TB, root string) *Proxy {
	t.Helper()
	dir := t.TempDir()
	p := &Proxy{Bin: Build(t, dir), ERP: erpmock.New(), DataDir: filepath.Join(dir, "data"),
		KeyDir: filepath.Join(dir, "keys"), logs: &SyncBuffer{}, done: make(chan error, 1)}
	erp := httptest.NewServer(p.ERP)
	t.Cleanup(erp.Close)
	p.ERPURL = erp.URL

	if err := os.MkdirAll(p.KeyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var principals strings.Builder
	principals.WriteString("principals:\n")
	for _, name := range []string{"cfo", "controller", "finance-manager"} {
		p.run(t, "keygen", "--out", filepath.Join(p.KeyDir, name))
		role := strings.ReplaceAll(name, "-", "_")
		fmt.Fprintf(&principals, "  - id: %s\n    roles: [%s]\n    public_key: keys/%s.pub\n", Approvers[name], role, name)
	}
	principals.WriteString("  - id: accountant@corp.example\n    roles: [staff_accountant]\n")
	pfile := filepath.Join(dir, "principals.yaml")
	if err := os.WriteFile(pfile, []byte(principals.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// The example manifest names the demo's ERP (127.0.0.1:9090) in
	// erp_hosts, for the forward door; this ERP's port is chosen at random.
	example, err := os.ReadFile(filepath.Join(root, "examples/manifests/sox-financial.json"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "sox-financial.json")
	named := bytes.Replace(example, []byte(`"127.0.0.1:9090"]`), []byte(`"`+strings.TrimPrefix(erp.URL, "http://")+`"]`), 1)
	if bytes.Equal(named, example) {
		t.Fatal("the example manifest's erp_hosts does not name 127.0.0.1:9090")
	}
	if err := os.WriteFile(manifest, named, 0o644); err != nil {
		t.Fatal(err)
	}

	p.cmd = exec.Command(p.Bin, "serve",
		"--manifest", manifest,
		"--principals", pfile,
		"--upstream", erp.URL,
		"--sidecar-addr", "127.0.0.1:0",
		"--proxy-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0",
		"--data-dir", p.DataDir)
	// Only what the proxy needs: no UAPK_* or proxy variables of the caller.
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := p.cmd
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.Stop(t) })

	addrs := p.listening(t)
	p.Sidecar, p.Admin, p.Forward = "http://"+addrs["sidecar_addr"], "http://"+addrs["admin_addr"], addrs["proxy_addr"]
	waitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get(p.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "/readyz", p.logs)
	// serve writes the token before it listens; /readyz needs none.
	tok, err := adminauth.ReadTokenFile(filepath.Join(p.DataDir, adminauth.FileName))
	if err != nil {
		t.Fatalf("the admin token serve writes without --admin-tokens: %v; logs:\n%s", err, p.logs)
	}
	p.AdminToken = tok
	return p
}

// listening waits for the log line with the addresses the doors took.
func (p *Proxy) listening(t testing.TB) map[string]string {
	t.Helper()
	var addrs map[string]string
	waitFor(t, 10*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil || line["message"] != "listening" {
				continue
			}
			addrs = map[string]string{}
			for k, v := range line {
				if s, ok := v.(string); ok && strings.HasSuffix(k, "_addr") {
					addrs[k] = s
				}
			}
			return addrs["sidecar_addr"] != "" && addrs["admin_addr"] != ""
		}
		return false
	}, "the listening log line", p.logs)
	return addrs
}

// ForwardListening tells whether the forward door accepts connections.
func (p *Proxy) ForwardListening() bool {
	if p.Forward == "" {
		return false
	}
	c, err := net.DialTimeout("tcp", p.Forward, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// AdminGet sends GET path to the admin API with the proxy's admin token.
// The caller closes the body.
func (p *Proxy) AdminGet(t testing.TB, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.Admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// Pending lists pending approvals via the admin API.
func (p *Proxy) Pending(t testing.TB) []PendingApproval {
	t.Helper()
	resp := p.AdminGet(t, "/v1/approvals?status=pending")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("GET /v1/approvals?status=pending: %s %s", resp.Status, body)
	}
	var res struct{ Approvals []PendingApproval }
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res.Approvals
}

// PendingApproval is the part of an approval the tests look at.
type PendingApproval struct {
	ID            string   `json:"id"`
	Action        string   `json:"action"`
	Amount        string   `json:"amount"`
	RequiredRoles []string `json:"required_roles"`
}

// Approve signs and posts an approval with `uapk-proxy approve`, as an
// approver would; the CLI gets the admin token in UAPK_ADMIN_TOKEN, not on
// its command line.
func (p *Proxy) Approve(t testing.TB, id, keyName string) string {
	t.Helper()
	return p.runEnv(t, []string{"UAPK_ADMIN_TOKEN=" + p.AdminToken}, "approve", id, "--as", Approvers[keyName], "--key", filepath.Join(p.KeyDir, keyName+".key"),
		"--reason", "reviewed in test", "--admin", p.Admin)
}

// VerifyLive checks the running chain with GET /v1/ledger/verify.
func (p *Proxy) VerifyLive(t testing.TB) {
	t.Helper()
	resp := p.AdminGet(t, "/v1/ledger/verify")
	defer resp.Body.Close()
	var v struct {
		OK bool `json:"ok"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 || !v.OK {
		t.Fatalf("GET /v1/ledger/verify: %s ok=%v err=%v", resp.Status, v.OK, err)
	}
}

// Stop sends SIGTERM, wants exit 0 (docs/reference.md#serve: drains and exits 0), then
// checks the stopped ledger offline with `uapk-proxy verify`. Safe to call
// twice.
func (p *Proxy) Stop(t testing.TB) {
	t.Helper()
	if p.cmd == nil {
		return
	}
	cmd := p.cmd
	p.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("uapk-proxy exited with %v after SIGTERM; logs:\n%s", err, p.logs)
			return
		}
	case <-time.After(40 * time.Second):
		_ = cmd.Process.Kill()
		t.Errorf("uapk-proxy did not stop within 40s of SIGTERM; logs:\n%s", p.logs)
		return
	}
	p.run(t, "verify", "--data-dir", p.DataDir)
}

// Logs returns what the proxy wrote to stderr so far.
func (p *Proxy) Logs() string { return p.logs.String() }

func (p *Proxy) run(t testing.TB, args ...string) string {
	t.Helper()
	return p.runEnv(t, nil, args...)
}

// runEnv runs the binary with PATH and env only.
func (p *Proxy) runEnv(t testing.TB, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(p.Bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("uapk-proxy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func waitFor(t testing.TB, within time.Duration, cond func() bool, what string, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; logs:\n%s", within, what, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitFor polls cond every 20ms until it holds, failing the test after within.
func WaitFor(t testing.TB, within time.Duration, cond func() bool, what string) {
	t.Helper()
	waitFor(t, within, cond, what, &SyncBuffer{})
}

// SyncBuffer is a bytes.Buffer safe for a child process's output and a
// test reading it at the same time.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
