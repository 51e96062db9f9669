package rules

import (
	"encoding/json"
	"strings"
	"testing"
)

func mcpReq(body string) *Request {
	r := req("POST", "/mcp", body)
	r.ContentType = "application/json"
	return r
}

func toolsCall(name, args string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":` + name + `,"arguments":` + args + `}}`
}

func TestMCPDecide(t *testing.T) {
	e := loadEngine(t, "testdata/mcp.json")
	tests := []struct {
		name   string
		method string // POST when empty
		path   string // /mcp when empty
		body   string
		want   Decision // Outcome, Reason, Action, Amount compared
		tool   string   // the MCPCall's tool; "" no MCPCall
	}{
		{name: "initialize is the session", body: `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "mcp_session"}},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "mcp_session"}},
		{name: "tools/list", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`,
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "mcp_session"}},
		{name: "a response to the server", body: `{"jsonrpc":"2.0","id":1,"result":{}}`,
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "mcp_session"}},
		{name: "GET stream, no body", method: "GET",
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "mcp_session"}},
		{name: "small entry", body: toolsCall(`"post_journal_entry"`, `{"amount":1200,"account":"4000"}`),
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "journal_entry", Amount: "1200"}, tool: "post_journal_entry"},
		{name: "over the cap", body: toolsCall(`"post_journal_entry"`, `{"amount":1200000}`),
			want: Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Amount: "1200000"}, tool: "post_journal_entry"},
		{name: "amount as a string", body: toolsCall(`"post_journal_entry"`, `{"amount":" 1200000.50 "}`),
			want: Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Amount: "1200000.5"}, tool: "post_journal_entry"},
		{name: "lines summed", body: toolsCall(`"post_journal_entry"`, `{"lines":[{"amount":900000},{"amount":"900000"}]}`),
			want: Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Amount: "1800000"}, tool: "post_journal_entry"},
		{name: "amount in another case is read", body: toolsCall(`"post_journal_entry"`, `{"AMOUNT":2000000}`),
			want: Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Amount: "2000000"}, tool: "post_journal_entry"},
		{name: "amount outside arguments is not read", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry","arguments":{"memo":"x"},"_meta":{"amount":5}}}`,
			want: Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry"}, tool: "post_journal_entry"},
		{name: "no arguments", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry"}}`,
			want: Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry"}, tool: "post_journal_entry"},
		{name: "null arguments", body: toolsCall(`"post_journal_entry"`, `null`),
			want: Decision{Outcome: Pending, Reason: ReasonAmountUnreadable, Action: "journal_entry"}, tool: "post_journal_entry"},
		{name: "escaped name resolved", body: toolsCall(`"post_jour\u006eal_entry"`, `{"amount":5}`),
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "journal_entry", Amount: "5"}, tool: "post_journal_entry"},
		{name: "escaped method resolved", body: `{"jsonrpc":"2.0","id":7,"method":"tools\/c\u0061ll","params":{"name":"post_journal_entry","arguments":{"amount":5000000}}}`,
			want: Decision{Outcome: Pending, Reason: ReasonAmountOverCap, Action: "journal_entry", Amount: "5000000"}, tool: "post_journal_entry"},
		{name: "denylisted tool", body: toolsCall(`"delete_audit_log"`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "audit_log_delete"}, tool: "delete_audit_log"},
		{name: "denylisted tool by GET too", method: "GET", body: toolsCall(`"delete_audit_log"`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "audit_log_delete"}, tool: "delete_audit_log"},
		{name: "tool named by a POST rule, sent by PUT: no rule", method: "PUT", body: toolsCall(`"post_journal_entry"`, `{"amount":1}`),
			want: Decision{Outcome: Deny, Reason: ReasonUnclassified}, tool: "post_journal_entry"},
		{name: "unknown tool denied despite RECORD_AND_ALLOW", body: toolsCall(`"wire_transfer"`, `{"amount":1}`),
			want: Decision{Outcome: Deny, Reason: ReasonUnclassified}, tool: "wire_transfer"},
		{name: "tool name in another case is another tool", body: toolsCall(`"POST_JOURNAL_ENTRY"`, `{"amount":1}`),
			want: Decision{Outcome: Deny, Reason: ReasonUnclassified}, tool: "POST_JOURNAL_ENTRY"},
		{name: "empty tool name never the session", body: toolsCall(`""`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonUnclassified}, tool: ""},
		{name: "a plain path is not MCP", method: "GET", path: "/api/v1/ledger/1", body: toolsCall(`"delete_audit_log"`, `{}`),
			want: Decision{Outcome: Allow, Reason: ReasonAutoApprove, Action: "ledger_read"}},
		{name: "MCP path in another case", path: "/MCP/", body: toolsCall(`"delete_audit_log"`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonDenylisted, Action: "audit_log_delete"}, tool: "delete_audit_log"},

		// Refused: servers could read these otherwise.
		{name: "batch", body: `[` + toolsCall(`"post_journal_entry"`, `{"amount":1}`) + `]`,
			want: Decision{Outcome: Deny, Reason: "mcp_batch"}},
		{name: "batch of session messages", body: ` [{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`,
			want: Decision{Outcome: Deny, Reason: "mcp_batch"}},
		{name: "duplicate name", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry","name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "name and NAME", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry","NAME":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "Name alone", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"Name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "escaped name key in another case", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"n\u0041me":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "duplicate method", body: `{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "Method in another case", body: `{"jsonrpc":"2.0","id":7,"Method":"tools/call","params":{"name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "method value in another case", body: `{"jsonrpc":"2.0","id":7,"method":"Tools/Call","params":{"name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "Params", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","Params":{"name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "non-string name", body: toolsCall(`["post_journal_entry"]`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "null name", body: toolsCall(`null`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "non-string method", body: `{"jsonrpc":"2.0","id":7,"method":null,"params":{"name":"delete_audit_log"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "params an array", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["delete_audit_log"]}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "params missing", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call"}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "arguments an array", body: toolsCall(`"post_journal_entry"`, `[{"amount":1}]`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "duplicate amount", body: toolsCall(`"post_journal_entry"`, `{"amount":1,"amount":5000000}`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "amount and Amount", body: toolsCall(`"post_journal_entry"`, `{"amount":1,"Amount":5000000}`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "extra member on a tools/call", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","result":{},"params":{"name":"post_journal_entry"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "id an object", body: `{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{"name":"post_journal_entry"}}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "trailing data", body: toolsCall(`"post_journal_entry"`, `{"amount":1}`) + `{}`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "not an object", body: `"tools/call"`,
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "only white space", body: "  ",
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
		{name: "lone surrogate in the name", body: toolsCall(`"post_journal_entry\ud800"`, `{}`),
			want: Decision{Outcome: Deny, Reason: ReasonAmbiguousBody}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mcpReq(tt.body)
			if tt.method != "" {
				r.Method = tt.method
			}
			if tt.path != "" {
				r.Path = tt.path
			}
			for _, ct := range []string{"application/json", "text/plain"} { // judged whatever Content-Type says
				r.ContentType = ct
				d := e.Decide(r)
				if d.Outcome != tt.want.Outcome || d.Reason != tt.want.Reason || d.Action != tt.want.Action || d.Amount != tt.want.Amount {
					t.Fatalf("%s: got %v %s %q amount %q (%s), want %v %s %q amount %q", ct, d.Outcome, d.Reason, d.Action, d.Amount, d.Detail,
						tt.want.Outcome, tt.want.Reason, tt.want.Action, tt.want.Amount)
				}
				switch {
				case tt.tool == "" && d.MCP != nil && tt.want.Reason != ReasonUnclassified:
					t.Fatalf("unexpected MCPCall %+v", d.MCP)
				case tt.tool != "" && (d.MCP == nil || d.MCP.Tool != tt.tool):
					t.Fatalf("MCPCall %+v, want tool %q", d.MCP, tt.tool)
				}
				if d.Outcome == Pending && d.Reason == ReasonAmountOverCap {
					if got := strings.Join(d.Requirement.Roles(), ","); got != "cfo,controller" {
						t.Fatalf("roles %s", got)
					}
				}
			}
		})
	}
}

// The digest covers params in one canonical form: the JSON-RPC id and the
// members' order do not change it; any change of the arguments does.
func TestMCPCanonicalParams(t *testing.T) {
	e := loadEngine(t, "testdata/mcp.json")
	params := func(body string) string {
		t.Helper()
		d := e.Decide(mcpReq(body))
		if d.MCP == nil {
			t.Fatalf("no MCPCall for %s: %s %s", body, d.Reason, d.Detail)
		}
		return string(d.MCP.Params)
	}
	a := params(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry","arguments":{"amount":1200000,"memo":"Q4 <close>"}}}`)
	b := params(`{"params":{"arguments":{"memo":"Q4 \u003cclose\u003e","amount":1200000},"name":"post_journal_entry"},"id":"other","method":"tools/call","jsonrpc":"2.0"}`)
	if a != b {
		t.Fatalf("canonical params differ:\n%s\n%s", a, b)
	}
	if want := `{"arguments":{"amount":1200000,"memo":"Q4 <close>"},"name":"post_journal_entry"}`; a != want {
		t.Fatalf("canonical params %s, want %s", a, want)
	}
	c := params(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"post_journal_entry","arguments":{"amount":1200001,"memo":"Q4 <close>"}}}`)
	if c == a {
		t.Fatal("another amount, same canonical params")
	}
	d := e.Decide(mcpReq(`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"post_journal_entry","arguments":{"amount":1}}}`))
	if string(d.MCP.ID) != `"x"` {
		t.Fatalf("id %s", d.MCP.ID)
	}
	d = e.Decide(mcpReq(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"post_journal_entry","arguments":{"amount":1}}}`))
	if string(d.MCP.ID) != `null` {
		t.Fatalf("id %s", d.MCP.ID)
	}
}

func TestMCPManifest(t *testing.T) {
	for _, tt := range []struct{ name, actions, problem string }{
		{"mixed rules", `"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/mcp","mcp_tool":"t"},{"path":"/x"}]}`, "actions.a.match"},
		{"bad tool name", `"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/mcp","mcp_tool":"a b"}]}`, "actions.a.match[0].mcp_tool"},
		{"empty tool name", `"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/mcp","mcp_tool":""}]}`, "actions.a.match[0].mcp_tool"},
		{"tool name not a string", `"a":{"approval_policy":"AUTO_APPROVE","match":[{"path":"/mcp","mcp_tool":5}]}`, "actions.a.match[0].mcp_tool"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(`{"app_id":"x","actions":{` + tt.actions + `}}`))
			if err == nil || !strings.Contains(err.Error(), tt.problem) {
				t.Fatalf("got %v, want a problem at %s", err, tt.problem)
			}
		})
	}
	m := mustLoad(t, "testdata/mcp.json")
	if a, _ := m.Action("journal_entry"); a.Match[0].MCPTool != "post_journal_entry" {
		t.Fatalf("mcp_tool %q", a.Match[0].MCPTool)
	}
}

// FuzzMCP: whenever the gate reads a body on an MCP path, encoding/json
// (case-insensitive member names, as a Go server binding structs reads it)
// and an exact-name reading (the Go SDK's, Python's, TypeScript's) find the
// same method and tool name.
func FuzzMCP(f *testing.F) {
	for _, s := range []string{
		toolsCall(`"post_journal_entry"`, `{"amount":1}`),
		`{"jsonrpc":"2.0","id":7,"Method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"NAME":"x","name":"y"}}`,
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"n\u0061me":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		call, err := readMCP(body)
		if err != nil || len(body) == 0 {
			return
		}
		var folded struct {
			Method *string
			Params json.RawMessage
		}
		var exact map[string]json.RawMessage
		if json.Unmarshal(body, &folded) != nil || json.Unmarshal(body, &exact) != nil {
			t.Fatalf("admitted a body encoding/json refuses: %q", body)
		}
		var method string
		if raw, ok := exact["method"]; ok {
			_ = json.Unmarshal(raw, &method)
		}
		if (folded.Method != nil && *folded.Method == MCPMethodToolsCall) != (method == MCPMethodToolsCall) {
			t.Fatalf("method read two ways: %q", body)
		}
		if call == nil {
			if method == MCPMethodToolsCall {
				t.Fatalf("a tools/call not read as one: %q", body)
			}
			return
		}
		var params map[string]json.RawMessage
		_ = json.Unmarshal(exact["params"], &params)
		var name string
		_ = json.Unmarshal(params["name"], &name)
		var foldedParams struct{ Name *string }
		if err := json.Unmarshal(folded.Params, &foldedParams); err != nil {
			t.Fatalf("params encoding/json refuses (%v): %q", err, body)
		}
		if foldedParams.Name == nil || *foldedParams.Name != call.Tool || name != call.Tool {
			t.Fatalf("tool %q, encoding/json %v, exact %q: %q", call.Tool, foldedParams.Name, name, body)
		}
	})
}

// TestMCPOffPath: under RECORD_AND_ALLOW, a tools/call sent to a path no
// mcp_tool rule matches (an MCP server mounted at /, or at /mcp/x) is
// denied, not let through unread; other bodies there are allowed as
// before, and the manifest is warned about.
func TestMCPOffPath(t *testing.T) {
	e := loadEngine(t, "testdata/mcp.json")
	for _, path := range []string{"/", "/mcp/x", "/sse"} {
		for _, tool := range []string{`"delete_audit_log"`, `"post_journal_entry"`, `"anything"`} {
			r := req("POST", path, toolsCall(tool, `{"amount":900000000}`))
			r.ContentType = "application/json"
			if d := e.Decide(r); d.Outcome != Deny || d.Reason != ReasonUnclassified {
				t.Errorf("tools/call %s on %s: %v %s", tool, path, d.Outcome, d.Reason)
			}
		}
		r := req("POST", path, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		r.ContentType = "application/json"
		if d := e.Decide(r); d.Outcome != Allow || d.Reason != ReasonRecordAndAllow {
			t.Errorf("tools/list on %s: %v %s", path, d.Outcome, d.Reason)
		}
	}
	warned := false
	for _, w := range e.Manifest().Warnings() {
		warned = warned || w.Path == "default_policy" && strings.Contains(w.Message, "RECORD_AND_ALLOW with mcp_tool rules")
	}
	if !warned {
		t.Error("no warning for RECORD_AND_ALLOW with mcp_tool rules")
	}
}
