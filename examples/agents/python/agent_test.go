// Package pythonagent tests agent.py, the standard-library Python agent,
// with a real python3: byte-compiled, then run through an HTTP proxy (a fake
// that answers as docs/reference.md#status-codes-and-bodies says) and through the real uapk-proxy.
package pythonagent

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/agents/internal/agenttest"
)

func python(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	return py
}

func TestCompiles(t *testing.T) {
	py := python(t)
	// cfile in a temporary directory: no __pycache__ in the source tree.
	out, err := exec.Command(py, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
		"agent.py", filepath.Join(t.TempDir(), "agent.pyc")).CombinedOutput()
	if err != nil {
		t.Fatalf("py_compile agent.py: %v\n%s", err, out)
	}
}

// start runs agent.py with exactly env (plus PATH) and returns a function
// that waits for its exit status and output.
func start(t *testing.T, env []string, args ...string) func() (int, string) {
	t.Helper()
	py := python(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, py, append([]string{"agent.py"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	go func() {
		defer close(done)
		err := cmd.Wait()
		code = cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			code = -1
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() (int, string) {
		<-done
		cancel()
		return code, out.String()
	}
}

// The ERP's own URL, as in the HTTP_PROXY shape: never resolved, since
// urllib hands the whole URL to the proxy.
const erpURL = "http://erp.internal.example.com"

func fakeProxy(t *testing.T) (*agenttest.Fake, string, string) {
	t.Helper()
	f := agenttest.NewFake()
	door := httptest.NewServer(f)
	admin := httptest.NewServer(f.Admin())
	t.Cleanup(door.Close)
	t.Cleanup(admin.Close)
	return f, door.URL, admin.URL
}

func waitPending(t *testing.T, f *agenttest.Fake, n int) []string {
	t.Helper()
	var ids []string
	agenttest.WaitFor(t, 30*time.Second, func() bool { ids = f.Pending(); return len(ids) == n }, "pending approvals")
	return ids
}

func TestQuarterEndThroughHTTPProxy(t *testing.T) {
	for _, polling := range []bool{true, false} {
		t.Run(map[bool]string{true: "polling the admin API", false: "retrying"}[polling], func(t *testing.T) {
			f, proxyURL, adminURL := fakeProxy(t)
			env := []string{"HTTP_PROXY=" + proxyURL, "ERP_BASE_URL=" + erpURL}
			if polling {
				env = append(env, "UAPK_ADMIN="+adminURL, "UAPK_ADMIN_TOKEN="+agenttest.FakeAdminToken)
			}
			wait := start(t, env, "--poll", "0.05")
			ids := waitPending(t, f, 2)
			for _, id := range ids {
				f.Approve(id)
			}
			code, out := wait()
			if code != 0 {
				t.Fatalf("exit %d, want 0:\n%s", code, out)
			}
			for _, want := range []string{
				"via proxy " + proxyURL,
				"200 allow  action=account_reconciliation",
				"202 pending  approval=" + ids[0] + " action=journal_entry needs=finance_manager",
				"202 pending  approval=" + ids[1] + " action=journal_entry needs=cfo+controller",
				"201 allow  action=journal_entry",
				"done: 3 allowed, 0 failed, 0 still pending",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			// Every ERP call went to the proxy in absolute form, for the
			// ERP's own host; retries carried the approval id and the
			// same bytes as the request that was approved.
			reqs := f.Requests()
			for _, r := range reqs {
				if !r.ViaProxy() || !strings.HasPrefix(r.RequestURI, erpURL+"/api/v1/") {
					t.Errorf("request %s %s did not come as an HTTP proxy request for the ERP", r.Method, r.RequestURI)
				}
			}
			for _, id := range ids {
				if f.Approval(id).Status != "consumed" {
					t.Errorf("approval %s: %s, want consumed by the retry", id, f.Approval(id).Status)
				}
				i := slices.IndexFunc(reqs, func(r agenttest.Request) bool { return r.ApprovalID == id })
				if i < 0 || !slices.ContainsFunc(reqs[:i], func(r agenttest.Request) bool {
					return r.ApprovalID == "" && r.RequestURI == reqs[i].RequestURI && bytes.Equal(r.Body, reqs[i].Body)
				}) {
					t.Errorf("the retry with %s is not byte-identical to the request approved", id)
				}
			}
			if polling && len(reqs) != 5 {
				t.Errorf("%d requests through the proxy, want 5 (polling must not retry blindly)", len(reqs))
			}
			if st := f.ERP.Stats(); st.ByRoute["POST /api/v1/journal-entries"] != 2 || st.ByRoute["POST /api/v1/reconciliations"] != 1 {
				t.Errorf("ERP saw %v", st.ByRoute)
			}
		})
	}
}

func TestRejectionIsReportedAndFails(t *testing.T) {
	f, proxyURL, adminURL := fakeProxy(t)
	wait := start(t, []string{"HTTP_PROXY=" + proxyURL, "ERP_BASE_URL=" + erpURL, "UAPK_ADMIN=" + adminURL},
		"--poll", "0.05", "--admin-token", agenttest.FakeAdminToken)
	ids := waitPending(t, f, 2)
	f.Reject(ids[1], "cfo@corp.example", "contracts not signed")
	f.Approve(ids[0])
	code, out := wait()
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{ids[1] + ": rejected by cfo@corp.example (contracts not signed)", "done: 2 allowed, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// An admin API that refuses the agent (no token, or one it does not know)
// does not leave the agent polling in vain: it says how to pass a token and
// waits by retrying with X-UAPK-Approval-Id, which needs none.
func TestRefusedAdminTokenFallsBackToRetrying(t *testing.T) {
	for name, tc := range map[string]struct {
		env         []string
		warn, wants string
	}{
		"no token":  {nil, "--admin without an admin token", "HTTP 401 (missing_token)"},
		"bad token": {[]string{"UAPK_ADMIN_TOKEN=uapk_not-this-one"}, "", "HTTP 401 (bad_token)"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each case starts a Python process
			f, proxyURL, adminURL := fakeProxy(t)
			wait := start(t, append([]string{"HTTP_PROXY=" + proxyURL, "ERP_BASE_URL=" + erpURL, "UAPK_ADMIN=" + adminURL}, tc.env...),
				"--poll", "0.05")
			ids := waitPending(t, f, 2)
			agenttest.WaitFor(t, 10*time.Second, func() bool {
				return slices.ContainsFunc(f.Requests(), func(r agenttest.Request) bool { return r.ApprovalID == ids[0] })
			}, "a retry")
			for _, id := range ids {
				f.Approve(id)
			}
			code, out := wait()
			if code != 0 {
				t.Fatalf("exit %d, want 0:\n%s", code, out)
			}
			for _, want := range []string{tc.warn, tc.wants, "UAPK_ADMIN_TOKEN or --admin-token", "waiting by retrying with X-UAPK-Approval-Id instead",
				"retry with approval " + ids[1], "done: 3 allowed, 0 failed, 0 still pending"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if n := strings.Count(out, "waiting by retrying"); n != 1 {
				t.Errorf("the fallback is reported %d times, want once:\n%s", n, out)
			}
			if st := f.ERP.Stats(); st.ByRoute["POST /api/v1/journal-entries"] != 2 {
				t.Errorf("ERP saw %v, want each journal entry once", st.ByRoute)
			}
		})
	}
}

func TestNoWaitExits2WithTheApprovalIDs(t *testing.T) {
	f, proxyURL, _ := fakeProxy(t)
	code, out := start(t, []string{"HTTP_PROXY=" + proxyURL, "ERP_BASE_URL=" + erpURL}, "--wait", "0")()
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, out)
	}
	for _, id := range f.Pending() {
		if !strings.Contains(out, "still waits: approval "+id) {
			t.Errorf("output does not name %s:\n%s", id, out)
		}
	}
}

// Without a proxy for the ERP's URL and without the sidecar's loopback URL,
// the agent would call the ERP directly: it refuses before any request.
func TestRefusesToCallTheERPPastTheProxy(t *testing.T) {
	for name, env := range map[string][]string{
		"no proxy":                  {"ERP_BASE_URL=" + erpURL},
		"ERP host in NO_PROXY":      {"ERP_BASE_URL=" + erpURL, "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=erp.internal.example.com"},
		"https without HTTPS_PROXY": {"ERP_BASE_URL=https://erp.internal.example.com", "HTTP_PROXY=http://127.0.0.1:9"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out := start(t, env)()
			if code != 2 || !strings.Contains(out, "past uapk-proxy") {
				t.Fatalf("exit %d, want 2 and a refusal:\n%s", code, out)
			}
		})
	}
}

// An answer without X-UAPK-Decision (here: the ERP itself on loopback)
// stops the agent after that one call.
func TestStopsWhenTheAnswerDidNotComeThroughTheProxy(t *testing.T) {
	f := agenttest.NewFake()
	erp := httptest.NewServer(f.ERP)
	t.Cleanup(erp.Close)
	code, out := start(t, []string{"ERP_BASE_URL=" + erp.URL})()
	if code != 1 || !strings.Contains(out, "did not come through uapk-proxy") {
		t.Fatalf("exit %d, want 1 and a clear message:\n%s", code, out)
	}
	if st := f.ERP.Stats(); st.Total != 1 {
		t.Errorf("ERP saw %d requests; the agent must stop after the first", st.Total)
	}
}

// TestQuarterEndThroughTheRealProxy runs agent.py against uapk-proxy built
// from cmd/uapk-proxy in both deployment shapes: the sidecar URL (as the
// Job example does) and HTTP_PROXY to the forward door, with the ERP's own
// URL. Approvers sign with `uapk-proxy approve`.
func TestQuarterEndThroughTheRealProxy(t *testing.T) {
	python(t)
	if testing.Short() {
		t.Skip("builds and runs uapk-proxy")
	}
	p := agenttest.StartProxy(t, "../../..")
	for _, shape := range []string{"sidecar URL", "HTTP_PROXY"} {
		t.Run(shape, func(t *testing.T) {
			admin := []string{"UAPK_ADMIN=" + p.Admin, "UAPK_ADMIN_TOKEN=" + p.AdminToken}
			env := slices.Concat(admin, []string{"ERP_BASE_URL=" + p.Sidecar})
			if shape == "HTTP_PROXY" {
				if !p.ForwardListening() {
					t.Fatalf("the forward door (--proxy-addr) does not listen; proxy logs:\n%s", p.Logs())
				}
				// The ERP's own URL; urllib sends it to the forward door.
				env = slices.Concat(admin, []string{"HTTP_PROXY=http://" + p.Forward, "ERP_BASE_URL=" + p.ERPURL})
			}
			before := p.ERP.Stats()
			wait := start(t, env, "--poll", "0.05")
			var pending []agenttest.PendingApproval
			agenttest.WaitFor(t, 30*time.Second, func() bool { pending = p.Pending(t); return len(pending) == 2 }, "two pending approvals")
			for _, a := range pending {
				if slices.Equal(a.RequiredRoles, []string{"cfo", "controller"}) {
					p.Approve(t, a.ID, "cfo")
					p.Approve(t, a.ID, "controller")
				} else {
					p.Approve(t, a.ID, "finance-manager")
				}
			}
			code, out := wait()
			t.Logf("agent output:\n%s", out)
			if code != 0 {
				t.Fatalf("exit %d, want 0; proxy logs:\n%s", code, p.Logs())
			}
			// Polled with the proxy's token all along: no fallback to retrying.
			if n := strings.Count(out, ": approved; retrying with X-UAPK-Approval-Id"); n != 2 || strings.Contains(out, "waiting by retrying") {
				t.Errorf("want both approvals seen by polling the admin API with the token (%d seen)", n)
			}
			st := p.ERP.Stats()
			if st.ByRoute["POST /api/v1/journal-entries"]-before.ByRoute["POST /api/v1/journal-entries"] != 2 ||
				st.ByRoute["POST /api/v1/reconciliations"]-before.ByRoute["POST /api/v1/reconciliations"] != 1 ||
				st.LeakedUAPKHeaders != 0 || st.LeakedHopByHop != 0 {
				t.Errorf("ERP stats %+v: want each call exactly once, no proxy header leaked", st)
			}
			p.VerifyLive(t)
		})
	}
	p.Stop(t)
}
