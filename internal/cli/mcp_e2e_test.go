package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// mcpManifest: the ERP's MCP endpoint /mcp. Session messages (initialize,
// notifications, tools/list) POSTed to it and the session's DELETE pass;
// the standalone GET stream is not listed (denied, which MCP clients take
// as "no stream"); post_journal_entry runs up to 1,000,000 and above it
// needs the CFO and the controller; delete_audit_log is denylisted; any
// other tool is denied.
const mcpManifest = `{
  "app_id": "financial-ai-assistant",
  "actions": {
    "mcp_session": {
      "approval_policy": "AUTO_APPROVE",
      "match": [{"method": "POST", "path": "/mcp"}, {"method": "DELETE", "path": "/mcp"}]
    },
    "journal_entry": {
      "approval_policy": "AUTO_APPROVE",
      "amount_cap": 1000000,
      "amount": ["amount"],
      "escalation": {"approval_policy": "DUAL_APPROVAL", "roles_required": ["cfo", "controller"]},
      "hold": "HOLD",
      "match": [{"method": "POST", "path": "/mcp", "mcp_tool": "post_journal_entry"}]
    },
    "audit_log_delete": {
      "approval_policy": "AUTO_APPROVE",
      "match": [{"method": "POST", "path": "/mcp", "mcp_tool": "delete_audit_log"}]
    }
  },
  "tool_restrictions": {"denylist": ["audit_log_delete"]},
  "default_policy": "DENY"
}`

// mcpERP is the ERP side: the official Go SDK's MCP server behind its
// streamable HTTP handler, counting the tool calls it runs.
type mcpERP struct {
	mu      sync.Mutex
	entries []float64 // amounts of the journal entries posted
	deletes atomic.Int32
}

type journalIn struct {
	Account string  `json:"account"`
	Amount  float64 `json:"amount"`
}

func (m *mcpERP) handler() http.Handler {
	srv := mcp.NewServer(&mcp.Implementation{Name: "erp", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "post_journal_entry", Description: "post a journal entry"},
		func(_ context.Context, _ *mcp.CallToolRequest, in journalIn) (*mcp.CallToolResult, any, error) {
			m.mu.Lock()
			m.entries = append(m.entries, in.Amount)
			n := len(m.entries)
			m.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "posted entry " + strings.Repeat("#", n)}}}, nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "delete_audit_log", Description: "delete the audit log"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			m.deletes.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted"}}}, nil, nil
		})
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	return mux
}

func (m *mcpERP) posted() []float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float64(nil), m.entries...)
}

// newMCPEnv starts the MCP server as the ERP behind the sidecar, with the
// manifest above (journal_entry's hold set to hold).
func newMCPEnv(t *testing.T, hold string) (*env, *mcpERP) {
	erp := &mcpERP{}
	srv := httptest.NewServer(erp.handler())
	t.Cleanup(srv.Close)
	e := newEnv(t, func(o *serveOptions) {
		p := filepath.Join(filepath.Dir(o.Principals), "manifest-mcp.json")
		if err := os.WriteFile(p, []byte(strings.Replace(mcpManifest, "HOLD", hold, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		o.Manifest, o.Upstream = p, srv.URL
	})
	return e, erp
}

// headerRT adds headers to every request of an MCP client's transport.
type headerRT struct {
	mu sync.Mutex
	h  http.Header
}

func (rt *headerRT) set(k, v string) { rt.mu.Lock(); rt.h.Set(k, v); rt.mu.Unlock() }

func (rt *headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	rt.mu.Lock()
	for k, v := range rt.h {
		r.Header[k] = v
	}
	rt.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func mcpConnect(t *testing.T, e *env, rt *headerRT) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.sidecar + "/mcp", HTTPClient: &http.Client{Transport: rt}}, nil)
	if err != nil {
		t.Fatalf("connect through the sidecar: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func callTool(s *mcp.ClientSession, name string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func (e *env) pendingApproval(t *testing.T) approvals.Approval {
	t.Helper()
	var list struct{ Approvals []approvals.Approval }
	waitFor(t, func() bool { e.adminGet("/v1/approvals?status=pending", &list); return len(list.Approvals) > 0 })
	return list.Approvals[0]
}

// mcpRecords returns the request records of tools/calls, by tool.
func (e *env) mcpRecords() map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, r := range e.records() {
		if r.Kind != "request" {
			continue
		}
		data := map[string]any{}
		for k, v := range r.Data {
			data[k] = v
		}
		if tool, _ := data["mcp_tool"].(string); tool != "" {
			data["_decision"], data["_reason"], data["_action"] = string(r.Decision), string(r.Reason), r.Action
			out[tool] = append(out[tool], data)
		}
	}
	return out
}

// The test: an MCP client's tools/call for a journal entry over
// the cap is held for the CFO and the controller and released on their
// approval; a denylisted tool is refused with a JSON-RPC error.
func TestMCPThroughTheSidecar(t *testing.T) {
	e, erp := newMCPEnv(t, "2m")
	s := mcpConnect(t, e, &headerRT{h: http.Header{}})

	tools, err := s.ListTools(context.Background(), nil)
	if err != nil || len(tools.Tools) != 2 {
		t.Fatalf("tools/list: %v %+v", err, tools)
	}

	r, err := callTool(s, "post_journal_entry", map[string]any{"account": "4000", "amount": 1200})
	if err != nil || r.IsError || resultText(r) != "posted entry #" {
		t.Fatalf("small entry: %v %+v", err, r)
	}

	// Over the cap: held on the connection until both approve.
	done := make(chan error, 1)
	var held *mcp.CallToolResult
	go func() {
		var err error
		held, err = callTool(s, "post_journal_entry", map[string]any{"account": "4000", "amount": 1200000})
		done <- err
	}()
	a := e.pendingApproval(t)
	if got := strings.Join(a.RequiredRoles, ","); got != "cfo,controller" || a.Action != "journal_entry" {
		t.Fatalf("approval %+v", a)
	}
	if code, m := e.decide(a.ID, "cfo@corp.example", "cfo", "approve", e.clock.Now()); code != 200 {
		t.Fatalf("cfo: %d %v", code, m)
	}
	select {
	case err := <-done:
		t.Fatalf("released on one approval of two: %v %+v", err, held)
	case <-time.After(300 * time.Millisecond):
	}
	if code, m := e.decide(a.ID, "controller@corp.example", "controller", "approve", e.clock.Now()); code != 200 {
		t.Fatalf("controller: %d %v", code, m)
	}
	if err := <-done; err != nil || held.IsError || resultText(held) != "posted entry ##" {
		t.Fatalf("held entry after approval: %v %+v", err, held)
	}
	if got := erp.posted(); len(got) != 2 || got[1] != 1200000 {
		t.Fatalf("the ERP posted %v", got)
	}

	// Denylisted: a JSON-RPC error the client surfaces; the ERP never runs it.
	_, err = callTool(s, "delete_audit_log", nil)
	var we *jsonrpc.Error
	if !errors.As(err, &we) || we.Code != -32001 || !strings.Contains(we.Message, "denylisted") {
		t.Fatalf("denylisted tool: %v", err)
	}
	var data map[string]any
	if json.Unmarshal(we.Data, &data) != nil || data["reason"] != "denylisted" || data["action"] != "audit_log_delete" || data["record"] == nil {
		t.Fatalf("error data %s", we.Data)
	}
	// An unknown tool: denied by default.
	_, err = callTool(s, "wire_transfer", map[string]any{"amount": 1})
	if !errors.As(err, &we) || we.Code != -32001 || !strings.Contains(we.Message, "unclassified") {
		t.Fatalf("unknown tool: %v", err)
	}
	if erp.deletes.Load() != 0 {
		t.Fatal("the denylisted tool ran")
	}

	// The session still works after the refusals.
	if r, err := callTool(s, "post_journal_entry", map[string]any{"account": "4000", "amount": 5}); err != nil || resultText(r) != "posted entry ###" {
		t.Fatalf("after the refusals: %v %+v", err, r)
	}

	recs := e.mcpRecords()
	je := recs["post_journal_entry"]
	// small allow; over-cap pending; its release on approval; the last allow.
	want := []string{"allow/auto_approve", "pending/amount_over_cap", "allow/approved", "allow/auto_approve"}
	if len(je) != len(want) {
		t.Fatalf("journal entry records %v", je)
	}
	for i, w := range want {
		if got := je[i]["_decision"].(string) + "/" + je[i]["_reason"].(string); got != w {
			t.Errorf("record %d: %s, want %s", i, got, w)
		}
	}
	if je[1]["amount"] != "1200000" {
		t.Errorf("amount recorded %v", je[1]["amount"])
	}
	if d := recs["delete_audit_log"]; len(d) != 1 || d[0]["_reason"] != "denylisted" {
		t.Errorf("denylisted records %v", d)
	}
	if d := recs["wire_transfer"]; len(d) != 1 || d[0]["_reason"] != "unclassified" {
		t.Errorf("unknown tool records %v", d)
	}
}

// Without hold, a held tools/call is answered with a tool result the
// model reads (approval id, roles, expiry); once approved, the same call
// again with X-UAPK-Approval-Id runs once, although its JSON-RPC id is
// another: the digest covers the call's params, not the body.
func TestMCPHeldCallRetriedWithApprovalID(t *testing.T) {
	e, erp := newMCPEnv(t, "0s")
	rt := &headerRT{h: http.Header{}}
	s := mcpConnect(t, e, rt)
	args := map[string]any{"account": "4000", "amount": 2500000}
	r, err := callTool(s, "post_journal_entry", args)
	if err != nil || !r.IsError {
		t.Fatalf("held call: %v %+v", err, r)
	}
	sc, _ := json.Marshal(r.StructuredContent)
	var p struct {
		Status        string   `json:"status"`
		ApprovalID    string   `json:"approval_id"`
		RequiredRoles []string `json:"required_roles"`
		ExpiresAt     string   `json:"expires_at"`
	}
	json.Unmarshal(sc, &p)
	if p.Status != "PENDING_APPROVAL" || !strings.HasPrefix(p.ApprovalID, "apr_") || strings.Join(p.RequiredRoles, ",") != "cfo,controller" || p.ExpiresAt == "" {
		t.Fatalf("structuredContent %s", sc)
	}
	if txt := resultText(r); !strings.Contains(txt, p.ApprovalID) || !strings.Contains(txt, "cfo + controller") || !strings.Contains(txt, p.ExpiresAt) {
		t.Fatalf("text %q", txt)
	}
	if len(erp.posted()) != 0 {
		t.Fatal("a held call reached the ERP")
	}
	for _, who := range []string{"cfo", "controller"} {
		if code, m := e.decide(p.ApprovalID, who+"@corp.example", who, "approve", e.clock.Now()); code != 200 {
			t.Fatalf("%s: %d %v", who, code, m)
		}
	}
	rt.set("X-UAPK-Approval-Id", p.ApprovalID)
	// Other arguments do not use the approval.
	if _, err := callTool(s, "post_journal_entry", map[string]any{"account": "4000", "amount": 2500001}); err == nil {
		t.Fatal("another amount ran on the approval")
	} else if we := (*jsonrpc.Error)(nil); !errors.As(err, &we) || we.Code != -32002 || !strings.Contains(we.Message, "digest_mismatch") {
		t.Fatalf("another amount: %v", err)
	}
	r, err = callTool(s, "post_journal_entry", args)
	if err != nil || r.IsError || resultText(r) != "posted entry #" {
		t.Fatalf("retry with the approval: %v %+v", err, r)
	}
	// Once only.
	if _, err := callTool(s, "post_journal_entry", args); err == nil || !strings.Contains(err.Error(), "consumed") {
		t.Fatalf("second retry: %v", err)
	}
	if got := erp.posted(); len(got) != 1 || got[0] != 2500000 {
		t.Fatalf("the ERP posted %v", got)
	}
}
