// Command agent is a stand-in for an AI finance agent that reaches the ERP
// through uapk-proxy's sidecar door: it posts the seed's quarter-end entries
// to ERP_BASE_URL (the sidecar, http://127.0.0.1:8081), prints each
// decision, waits for the approvers and retries each approved entry once
// with X-UAPK-Approval-Id. Standard library only.
//
//	go run ./examples/agents/go                                  # sidecar on 127.0.0.1:8081
//	UAPK_ADMIN_TOKEN=$(cat agent-read.token) \
//	  go run ./examples/agents/go -admin http://127.0.0.1:8090   # poll approvals instead of retrying
//
// Polling needs an admin token with scope read (-admin-token, or better env
// UAPK_ADMIN_TOKEN, which ps does not show). An agent should normally hold
// no admin token at all: without -admin it retries with X-UAPK-Approval-Id,
// which needs none. If the admin API refuses the token (401 or 403), the
// agent says so and falls back to retrying.
//
// Exit status: 0 every call went through, 1 something was denied, rejected,
// expired or failed, 2 approvals were still pending when it stopped waiting.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// call is one ERP request the agent wants to make. The body is kept as
// bytes: a retry must be byte-identical, since the approval is bound to the
// request digest SHA-256(METHOD \n URL \n SHA-256(body)).
type call struct {
	Title   string
	Method  string
	Path    string
	Body    []byte
	Headers map[string]string
}

// quarterEnd is the seed's scenario: a routine reconciliation, the $250k
// accrual a finance manager must approve, and the $1.2M ASC 606 adjustment
// that passes the $1M cap and needs the CFO and the controller.
var quarterEnd = []call{
	{
		Title:   "reconcile 1010-Cash for 2026-Q3",
		Method:  http.MethodPost,
		Path:    "/api/v1/reconciliations",
		Body:    []byte(`{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`),
		Headers: map[string]string{"X-UAPK-On-Behalf-Of": "accountant@corp.example"},
	},
	{
		Title:   "$250,000 Q3 product sales accrual",
		Method:  http.MethodPost,
		Path:    "/api/v1/journal-entries",
		Body:    []byte(`{"account":"4000-Revenue","debit":0,"credit":250000,"description":"Q3 product sales accrual","supporting_docs":["sales_report_q3.pdf"]}`),
		Headers: map[string]string{"X-UAPK-Justification": "AI detected revenue recognition timing difference"},
	},
	{
		Title:   "$1,200,000 ASC 606 revenue recognition adjustment",
		Method:  http.MethodPost,
		Path:    "/api/v1/journal-entries",
		Body:    []byte(`{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}`),
		Headers: map[string]string{"X-UAPK-Justification": "contracts meet ASC 606 criteria before quarter end"},
	},
}

type config struct {
	erp      string        // base URL the agent calls: the sidecar door
	admin    string        // uapk-proxy admin API, for polling approvals; "" retries instead
	token    string        // admin token (scope read) for polling
	wait     time.Duration // how long to wait for approvers in all
	poll     time.Duration // between two looks at a pending approval
	timeout  time.Duration // one HTTP request
	calls    []call
	out, err io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := config{calls: quarterEnd, out: stdout, err: stderr}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.erp, "erp", envOr(getenv, "ERP_BASE_URL", "http://127.0.0.1:8081"), "ERP base URL: uapk-proxy's sidecar door (env ERP_BASE_URL)")
	fs.StringVar(&c.admin, "admin", getenv("UAPK_ADMIN"), "uapk-proxy admin API to poll approvals; empty: retry with X-UAPK-Approval-Id instead (env UAPK_ADMIN)")
	// The default is not the environment's token: -help would print it.
	fs.StringVar(&c.token, "admin-token", "", "with -admin: admin token with scope read, sent as Authorization: Bearer (default env UAPK_ADMIN_TOKEN, which ps does not show)")
	fs.DurationVar(&c.wait, "wait", 15*time.Minute, "how long to wait for approvers (0: do not wait)")
	fs.DurationVar(&c.poll, "poll", 2*time.Second, "interval between looks at a pending approval")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "timeout of one request (keep above the actions' hold)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := url.ParseRequestURI(c.erp); err != nil {
		fmt.Fprintf(stderr, "agent: -erp %q: %v\n", c.erp, err)
		return 2
	}
	if c.token == "" {
		c.token = getenv("UAPK_ADMIN_TOKEN")
	}
	c.token = strings.TrimSpace(c.token)
	if c.admin != "" && c.token == "" {
		fmt.Fprintln(stderr, "agent: -admin without an admin token: the admin API will refuse; pass a read-scoped token with UAPK_ADMIN_TOKEN or -admin-token, or leave -admin out to retry with X-UAPK-Approval-Id")
	}
	return c.run(ctx)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// result is what uapk-proxy answered.
type result struct {
	status   int
	decision string // X-UAPK-Decision: allow, deny, pending; "" if absent
	action   string
	record   string
	body     map[string]any
	raw      []byte
}

func (r result) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

type outcome int

const (
	allowed outcome = iota
	pending
	failed
)

// tracked is a call that got 202 and waits for its approvers.
type tracked struct {
	n          int
	call       call
	approvalID string
}

func (c *config) run(ctx context.Context) int {
	// The sidecar is the URL: never let an HTTP_PROXY variable route these
	// calls elsewhere.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	client := &http.Client{Transport: tr, Timeout: c.timeout}
	mode := "retrying with X-UAPK-Approval-Id"
	if c.admin != "" {
		mode = "polling " + c.admin
	}
	fmt.Fprintf(c.out, "quarter-end agent: ERP %s; approvals: %s\n", c.erp, mode)

	var waiting []tracked
	failures := 0
	for i, cl := range c.calls {
		n := i + 1
		fmt.Fprintf(c.out, "[%d] %s (%s %s)\n", n, cl.Title, cl.Method, cl.Path)
		res, err := c.send(ctx, client, cl, "")
		if err != nil {
			fmt.Fprintf(c.out, "    error: %v\n", err)
			if errors.Is(err, errUnguarded) {
				return 1 // stop at once: nothing else may go past the proxy
			}
			failures++
			continue
		}
		switch c.report(res) {
		case pending:
			waiting = append(waiting, tracked{n: n, call: cl, approvalID: res.str("approval_id")})
		case failed:
			failures++
		}
	}

	if len(waiting) > 0 && c.wait > 0 {
		fmt.Fprintf(c.out, "waiting up to %s for %d approval(s); approvers: uapk-proxy pending, then uapk-proxy approve ID --as ... --key ...\n", c.wait, len(waiting))
		deadline := time.Now().Add(c.wait)
		for len(waiting) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			var still []tracked
			for _, w := range waiting {
				switch c.settle(ctx, client, w) {
				case pending:
					still = append(still, w)
				case failed:
					failures++
				}
			}
			waiting = still
			if len(waiting) > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(c.poll):
				}
			}
		}
	}
	allowedN := len(c.calls) - failures - len(waiting)
	fmt.Fprintf(c.out, "done: %d allowed, %d failed, %d still pending\n", allowedN, failures, len(waiting))
	for _, w := range waiting {
		fmt.Fprintf(c.out, "    [%d] %s still waits: approval %s\n", w.n, w.call.Title, w.approvalID)
	}
	switch {
	case failures > 0:
		return 1
	case len(waiting) > 0:
		return 2
	}
	return 0
}

// settle looks once at a pending call: via the admin API when there is
// one, else by retrying it. It returns pending while the approvers have not
// finished.
func (c *config) settle(ctx context.Context, client *http.Client, w tracked) outcome {
	if c.admin != "" {
		status, note, err := c.approvalStatus(ctx, client, w.approvalID)
		var refused *adminRefused
		switch {
		case errors.As(err, &refused):
			// Polling cannot work with this token; retrying needs none.
			fmt.Fprintf(c.err, "agent: %v; pass a token with scope read in UAPK_ADMIN_TOKEN or -admin-token; waiting by retrying with X-UAPK-Approval-Id instead\n", err)
			c.admin = ""
			return c.settle(ctx, client, w)
		case err != nil:
			fmt.Fprintf(c.err, "agent: approval %s: %v (will look again)\n", w.approvalID, err)
			return pending
		case status == "pending":
			return pending
		case status != "approved":
			fmt.Fprintf(c.out, "[%d] %s: %s%s\n", w.n, w.approvalID, status, note)
			return failed
		}
		fmt.Fprintf(c.out, "[%d] %s: approved; retrying with X-UAPK-Approval-Id\n", w.n, w.approvalID)
	}
	res, err := c.send(ctx, client, w.call, w.approvalID)
	if err != nil {
		fmt.Fprintf(c.out, "[%d] retry: error: %v\n", w.n, err)
		return failed
	}
	if c.admin == "" && res.status == http.StatusConflict && res.str("reason") == "not_approved" {
		return pending // the approvers are not done yet
	}
	if c.admin == "" {
		fmt.Fprintf(c.out, "[%d] retry with approval %s:\n", w.n, w.approvalID)
	}
	if c.report(res) == allowed {
		return allowed
	}
	return failed
}

// approvalStatus reads GET /v1/approvals/{id}: its status and, for a
// rejection, who rejected it and why.
func (c *config) approvalStatus(ctx context.Context, client *http.Client, id string) (string, string, error) {
	u := strings.TrimRight(c.admin, "/") + "/v1/approvals/" + url.PathEscape(id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", "", err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		var e struct{ Reason string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return "", "", &adminRefused{url: u, status: resp.Status, reason: e.Reason}
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	var a struct {
		Status    string `json:"status"`
		Decisions []struct {
			Approver string `json:"approver"`
			Decision string `json:"decision"`
			Reason   string `json:"reason"`
		} `json:"decisions"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a); err != nil {
		return "", "", fmt.Errorf("GET %s: %w", u, err)
	}
	note := ""
	for _, d := range a.Decisions {
		if d.Decision == "reject" {
			note = fmt.Sprintf(" by %s (%s)", d.Approver, d.Reason)
		}
	}
	return a.Status, note, nil
}

// adminRefused is a 401 or 403 from the admin API: no token, a token it
// does not know, or one without scope read.
type adminRefused struct{ url, status, reason string }

func (e *adminRefused) Error() string {
	if e.reason == "" {
		return fmt.Sprintf("GET %s: %s", e.url, e.status)
	}
	return fmt.Sprintf("GET %s: %s (%s)", e.url, e.status, e.reason)
}

// errUnguarded means a success answer did not come from uapk-proxy: the
// call reached the ERP without a decision or a record.
var errUnguarded = errors.New("the answer has no X-UAPK-Decision header: it did not come through uapk-proxy; ERP_BASE_URL must be the sidecar door")

func (c *config) send(ctx context.Context, client *http.Client, cl call, approvalID string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, cl.Method, strings.TrimRight(c.erp, "/")+cl.Path, bytes.NewReader(cl.Body))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range cl.Headers {
		req.Header.Set(k, v)
	}
	if approvalID != "" {
		req.Header.Set("X-UAPK-Approval-Id", approvalID)
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return result{}, err
	}
	res := result{
		status:   resp.StatusCode,
		decision: resp.Header.Get("X-UAPK-Decision"),
		action:   resp.Header.Get("X-UAPK-Action"),
		record:   resp.Header.Get("X-UAPK-Record"),
		raw:      raw,
	}
	_ = json.Unmarshal(raw, &res.body) // the ERP's or the proxy's JSON; may be neither
	if res.decision == "" && resp.StatusCode < 300 {
		return res, errUnguarded
	}
	if approvalID := resp.Header.Get("X-UAPK-Approval-Id"); approvalID != "" && res.str("approval_id") == "" {
		if res.body == nil {
			res.body = map[string]any{}
		}
		res.body["approval_id"] = approvalID
	}
	return res, nil
}

// report prints one answer and classifies it.
func (c *config) report(r result) outcome {
	switch {
	case r.decision == "pending":
		var roles []string
		if rs, ok := r.body["required_roles"].([]any); ok {
			for _, x := range rs {
				roles = append(roles, fmt.Sprint(x))
			}
		}
		fmt.Fprintf(c.out, "    %d pending  approval=%s action=%s needs=%s expires=%s\n",
			r.status, r.str("approval_id"), r.str("action"), strings.Join(roles, "+"), r.str("expires_at"))
		return pending
	case r.decision == "allow" && r.status < 300:
		fmt.Fprintf(c.out, "    %d allow  action=%s record=%s erp=%s\n", r.status, r.action, r.record, erpSummary(r.body))
		return allowed
	default:
		reason := r.str("reason")
		if reason == "" {
			reason = strings.TrimSpace(string(r.raw))
		}
		fmt.Fprintf(c.out, "    %d %s  error=%s reason=%s action=%s record=%v\n",
			r.status, orDash(r.decision), orDash(r.str("error")), reason, r.str("action"), r.body["record"])
		return failed
	}
}

func erpSummary(body map[string]any) string {
	if body == nil {
		return "-"
	}
	id, _ := body["id"].(string)
	status, _ := body["status"].(string)
	return orDash(strings.Trim(id+"/"+status, "/"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
