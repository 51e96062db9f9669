package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/agents/internal/agenttest"
)

// agentRun runs the agent in the background with an empty environment and
// returns a function that waits for its exit status and output.
func agentRun(t *testing.T, args ...string) func() (int, string) {
	t.Helper()
	return agentRunEnv(t, nil, args...)
}

// agentRunEnv is agentRun with env as the agent's environment.
func agentRunEnv(t *testing.T, env map[string]string, args ...string) func() (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	out := &agenttest.SyncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, out, out) }()
	var once sync.Once
	var code int
	wait := func() (int, string) {
		once.Do(func() {
			code = <-done
			cancel()
		})
		return code, out.String()
	}
	t.Cleanup(func() { cancel(); wait() })
	return wait
}

func fakeServers(t *testing.T) (*agenttest.Fake, string, string) {
	t.Helper()
	f := agenttest.NewFake()
	door := httptest.NewServer(f)
	admin := httptest.NewServer(f.Admin())
	t.Cleanup(door.Close)
	t.Cleanup(admin.Close)
	return f, door.URL, admin.URL
}

func waitPending(t *testing.T, pending func() []string, n int) []string {
	t.Helper()
	var ids []string
	agenttest.WaitFor(t, 20*time.Second, func() bool { ids = pending(); return len(ids) == n }, "pending approvals")
	return ids
}

func TestQuarterEndWithApprovalsPolled(t *testing.T) {
	f, door, admin := fakeServers(t)
	wait := agentRun(t, "-erp", door, "-admin", admin, "-admin-token", agenttest.FakeAdminToken, "-poll", "10ms")
	ids := waitPending(t, f.Pending, 2)
	for _, id := range ids {
		f.Approve(id)
	}
	code, out := wait()
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	for _, want := range []string{
		"200 allow  action=account_reconciliation",
		"202 pending  approval=" + ids[0] + " action=journal_entry needs=finance_manager",
		"202 pending  approval=" + ids[1] + " action=journal_entry needs=cfo+controller",
		ids[0] + ": approved; retrying with X-UAPK-Approval-Id",
		"201 allow  action=journal_entry",
		"done: 3 allowed, 0 failed, 0 still pending",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Polling, not retrying: one first try per call, one retry per approval,
	// each retry byte-identical to the request that was approved.
	reqs := f.Requests()
	if len(reqs) != 5 {
		t.Fatalf("door saw %d requests, want 5", len(reqs))
	}
	for _, id := range ids {
		var first, retry *agenttest.Request
		for i := range reqs {
			if reqs[i].ApprovalID == id {
				retry = &reqs[i]
			}
		}
		if retry == nil {
			t.Fatalf("no retry with approval %s", id)
		}
		for i := range reqs {
			if reqs[i].ApprovalID == "" && reqs[i].Path == retry.Path && bytes.Equal(reqs[i].Body, retry.Body) {
				first = &reqs[i]
			}
		}
		if first == nil {
			t.Errorf("retry with %s is not byte-identical to a first request", id)
		}
		if f.Approval(id).Status != "consumed" {
			t.Errorf("approval %s: %s, want consumed", id, f.Approval(id).Status)
		}
	}
	if st := f.ERP.Stats(); st.ByRoute["POST /api/v1/journal-entries"] != 2 || st.ByRoute["POST /api/v1/reconciliations"] != 1 {
		t.Errorf("ERP saw %v", st.ByRoute)
	}
}

func TestRetriesWithoutAdminUntilApproved(t *testing.T) {
	f, door, _ := fakeServers(t)
	wait := agentRun(t, "-erp", door, "-poll", "10ms")
	ids := waitPending(t, f.Pending, 2)
	// Let the agent be told not_approved a few times first.
	agenttest.WaitFor(t, 10*time.Second, func() bool { return countRetries(f, ids[0]) >= 3 }, "retries")
	f.Approve(ids[0])
	f.Approve(ids[1])
	code, out := wait()
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	if st := f.ERP.Stats(); st.ByRoute["POST /api/v1/journal-entries"] != 2 {
		t.Errorf("ERP saw %v, want each journal entry once", st.ByRoute)
	}
}

func countRetries(f *agenttest.Fake, id string) int {
	n := 0
	for _, r := range f.Requests() {
		if r.ApprovalID == id {
			n++
		}
	}
	return n
}

func TestRejectedAndExpiredApprovalsFail(t *testing.T) {
	for _, admin := range []bool{true, false} {
		t.Run(map[bool]string{true: "polling", false: "retrying"}[admin], func(t *testing.T) {
			f, door, adminURL := fakeServers(t)
			args := []string{"-erp", door, "-poll", "10ms"}
			var env map[string]string
			if admin {
				// The token from the environment, as a Job would pass it.
				args = append(args, "-admin", adminURL)
				env = map[string]string{"UAPK_ADMIN_TOKEN": agenttest.FakeAdminToken}
			}
			wait := agentRunEnv(t, env, args...)
			ids := waitPending(t, f.Pending, 2)
			f.Reject(ids[0], "fm@corp.example", "wrong period")
			f.Expire(ids[1])
			code, out := wait()
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			want := []string{"done: 1 allowed, 2 failed, 0 still pending"}
			if admin {
				want = append(want, ids[0]+": rejected by fm@corp.example (wrong period)", ids[1]+": expired")
			} else {
				want = append(want, "403 deny  error=denied reason=rejected", "409 deny  error=approval_not_usable reason=expired")
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if st := f.ERP.Stats(); st.ByRoute["POST /api/v1/journal-entries"] != 0 {
				t.Errorf("a journal entry reached the ERP: %v", st.ByRoute)
			}
		})
	}
}

// An admin API that refuses the agent (no token, or one it does not know)
// does not leave the agent polling in vain: it says how to pass a token and
// waits by retrying with X-UAPK-Approval-Id, which needs none.
func TestRefusedAdminTokenFallsBackToRetrying(t *testing.T) {
	for name, tc := range map[string]struct {
		args        []string
		warn, wants string
	}{
		"no token":  {nil, "-admin without an admin token", "401 Unauthorized (missing_token)"},
		"bad token": {[]string{"-admin-token", "uapk_not-this-one"}, "", "401 Unauthorized (bad_token)"},
	} {
		t.Run(name, func(t *testing.T) {
			f, door, admin := fakeServers(t)
			wait := agentRun(t, append([]string{"-erp", door, "-admin", admin, "-poll", "10ms"}, tc.args...)...)
			ids := waitPending(t, f.Pending, 2)
			agenttest.WaitFor(t, 10*time.Second, func() bool { return countRetries(f, ids[0]) >= 1 }, "a retry")
			for _, id := range ids {
				f.Approve(id)
			}
			code, out := wait()
			if code != 0 {
				t.Fatalf("exit %d, want 0:\n%s", code, out)
			}
			for _, want := range []string{tc.warn, tc.wants, "UAPK_ADMIN_TOKEN or -admin-token", "waiting by retrying with X-UAPK-Approval-Id instead",
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

func TestNoWaitLeavesApprovalsPending(t *testing.T) {
	f, door, admin := fakeServers(t)
	code, out := agentRun(t, "-erp", door, "-admin", admin, "-admin-token", agenttest.FakeAdminToken, "-wait", "0")()
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, out)
	}
	for _, id := range f.Pending() {
		if !strings.Contains(out, "still waits: approval "+id) {
			t.Errorf("output does not name %s:\n%s", id, out)
		}
	}
}

// An answer without X-UAPK-Decision means the call went past the proxy:
// the agent stops before anything else reaches the ERP.
func TestStopsWhenTheAnswerDidNotComeThroughTheProxy(t *testing.T) {
	f := agenttest.NewFake()
	erp := httptest.NewServer(f.ERP)
	t.Cleanup(erp.Close)
	code, out := agentRun(t, "-erp", erp.URL)()
	if code != 1 || !strings.Contains(out, "did not come through uapk-proxy") {
		t.Fatalf("exit %d, want 1 and a clear message:\n%s", code, out)
	}
	if st := f.ERP.Stats(); st.Total != 1 {
		t.Errorf("ERP saw %d requests; the agent must stop after the first", st.Total)
	}
}

// TestQuarterEndThroughTheRealProxy runs the agent against uapk-proxy
// built from cmd/uapk-proxy, in front of the mock ERP: the approvers sign
// with `uapk-proxy approve`, the agent's retries go through once each, and
// the chain verifies live and, after SIGTERM, offline.
func TestQuarterEndThroughTheRealProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs uapk-proxy")
	}
	p := agenttest.StartProxy(t, "../../..")
	wait := agentRun(t, "-erp", p.Sidecar, "-admin", p.Admin, "-admin-token", p.AdminToken, "-poll", "50ms")

	var pending []agenttest.PendingApproval
	agenttest.WaitFor(t, 20*time.Second, func() bool { pending = p.Pending(t); return len(pending) == 2 }, "two pending approvals")
	for _, a := range pending {
		switch {
		case slices.Equal(a.RequiredRoles, []string{"finance_manager"}):
			p.Approve(t, a.ID, "finance-manager")
		case slices.Equal(a.RequiredRoles, []string{"cfo", "controller"}):
			p.Approve(t, a.ID, "cfo")
			p.Approve(t, a.ID, "controller")
		default:
			t.Fatalf("approval %s needs %v", a.ID, a.RequiredRoles)
		}
	}
	code, out := wait()
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s\nproxy logs:\n%s", code, out, p.Logs())
	}
	t.Logf("agent output:\n%s", out)
	if !regexp.MustCompile(`202 pending  approval=\S+ action=journal_entry needs=cfo\+controller`).MatchString(out) {
		t.Errorf("output lacks the escalated pending line:\n%s", out)
	}
	// Polled with the proxy's token all along: no fallback to retrying.
	if n := strings.Count(out, ": approved; retrying with X-UAPK-Approval-Id"); n != 2 || strings.Contains(out, "waiting by retrying") {
		t.Errorf("want both approvals seen by polling the admin API with the token (%d seen):\n%s", n, out)
	}
	st := p.ERP.Stats()
	if st.ByRoute["POST /api/v1/journal-entries"] != 2 || st.ByRoute["POST /api/v1/reconciliations"] != 1 ||
		st.LeakedUAPKHeaders != 0 || st.Total != 3 {
		t.Errorf("ERP stats %+v: want each call exactly once, no X-UAPK-* header leaked", st)
	}
	p.VerifyLive(t)
	p.Stop(t)
}

// The token from the environment is not a flag default: -help would print it.
func TestHelpDoesNotShowTheToken(t *testing.T) {
	var out bytes.Buffer
	getenv := func(k string) string { return map[string]string{"UAPK_ADMIN_TOKEN": "uapk_secret-from-env"}[k] }
	if code := run(context.Background(), []string{"-help"}, getenv, &out, &out); code != 2 {
		t.Errorf("-help: exit %d, want 2", code)
	}
	if !strings.Contains(out.String(), "-admin-token") || strings.Contains(out.String(), "uapk_secret-from-env") {
		t.Errorf("-help output shows the token, or no -admin-token:\n%s", out.String())
	}
}
