package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The JSON-RPC answers to an MCP tools/call the gate did not let through
// (docs/reference.md#mcp). They go with HTTP 200, as MCP clients expect of
// a JSON-RPC answer: a held call is a tool result the model reads (what
// it waits for, and who must approve), a refused one a JSON-RPC error
// whose data is the plain refusal body.

// The JSON-RPC error codes of refusals, in the range JSON-RPC leaves to
// servers (-32000 to -32099).
const (
	mcpCodeDenied       = -32001 // 403 denied: the rules' deny reasons, rejected
	mcpCodeNotUsable    = -32002 // 409 approval_not_usable
	mcpCodeTooMany      = -32003 // 429 too_many_pending
	mcpCodeUnavailable  = -32004 // 503 ledger_unavailable: nothing recorded, nothing sent
	mcpCodeOtherRefusal = -32000 // any other refusal
)

// mcpAnswer is answer for a verdict on a tools/call.
func mcpAnswer(v *gate.Verdict) (int, []byte) {
	id := v.MCP.ID
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	if v.Outcome == rules.Pending {
		expires := v.ExpiresAt.UTC().Format(time.RFC3339)
		text := fmt.Sprintf("Held for approval: %s needs %s; expires %s. The tool %s has not run. "+
			"It runs once the approvers approve: call it again with the same arguments and the HTTP header X-UAPK-Approval-Id: %s.",
			v.ApprovalID, strings.Join(v.RequiredRoles, " + "), expires, v.MCP.Tool, v.ApprovalID)
		return http.StatusOK, jsonBody(mcpResult{JSONRPC: "2.0", ID: id, Result: mcpToolResult{
			Content: []mcpText{{Type: "text", Text: text}},
			Structured: mcpPending{Status: "PENDING_APPROVAL", ApprovalID: v.ApprovalID, Action: v.Action,
				Tool: v.MCP.Tool, Reason: v.Reason, RequiredRoles: v.RequiredRoles, ExpiresAt: expires, Record: v.Record},
			IsError: true,
		}})
	}
	status, body := plainAnswer(v)
	code := mcpCodeOtherRefusal
	switch status {
	case http.StatusForbidden:
		code = mcpCodeDenied
	case http.StatusConflict:
		code = mcpCodeNotUsable
	case http.StatusTooManyRequests:
		code = mcpCodeTooMany
	case http.StatusServiceUnavailable:
		code = mcpCodeUnavailable
	}
	msg := "refused by the gateway: " + string(v.Reason)
	if v.Reason == record.LedgerUnavailable {
		msg = "refused by the gateway: " + errLedger
	}
	if v.Action != "" {
		msg += " (action " + v.Action + ")"
	}
	return http.StatusOK, jsonBody(mcpError{JSONRPC: "2.0", ID: id,
		Error: mcpErrorBody{Code: code, Message: msg, Data: json.RawMessage(body)}})
}

type mcpResult struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  mcpToolResult   `json:"result"`
}

// mcpToolResult is MCP's CallToolResult.
type mcpToolResult struct {
	Content    []mcpText  `json:"content"`
	Structured mcpPending `json:"structuredContent"`
	IsError    bool       `json:"isError"`
}

type mcpText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// mcpPending is the 202 body's fields, with the tool, reason and record.
type mcpPending struct {
	Status        string        `json:"status"`
	ApprovalID    string        `json:"approval_id"`
	Action        string        `json:"action"`
	Tool          string        `json:"tool"`
	Reason        record.Reason `json:"reason"`
	RequiredRoles []string      `json:"required_roles"`
	ExpiresAt     string        `json:"expires_at"`
	Record        uint64        `json:"record"`
}

type mcpError struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   mcpErrorBody    `json:"error"`
}

type mcpErrorBody struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}
