package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// POST /v1/execute on the sidecar door (docs/reference.md#execute): the
// agent names an action and its parameters, the proxy makes the ERP call
// from the action's execute template and puts it through the gate exactly
// as the plain call would go: the same decision, records, approvals, hold
// and forwarding. What it builds is the request a plain call would be, so
// it has the same digest.

// ExecutePath is the sidecar door's own path: it is never forwarded.
const ExecutePath = "/v1/execute"

const viaExecute = "execute"

// The answer's status words.
const (
	statusExecuted = "EXECUTED"
	statusPending  = "PENDING_APPROVAL"
	statusDenied   = "DENIED"
)

// executeFields are the members of an execute call's body; any other is a
// 400.
var executeFields = map[string]bool{
	"action": true, "parameters": true, "justification": true, "escalation_level": true, "override_token": true,
}

// isExecute reports whether the request is for the door itself: its
// target's path is exactly /v1/execute (byte for byte, any query).
func isExecute(ctx *fasthttp.RequestCtx) bool {
	path, _, _ := strings.Cut(string(ctx.Request.Header.RequestURI()), "?")
	return path == ExecutePath
}

// executeCall is an execute call's body, read.
type executeCall struct {
	action, justification, escalation, override string
	params                                      map[string]json.RawMessage
}

// readExecute reads an execute call's body strictly: one unambiguous JSON
// object (the rules of ambiguous_body), only the known members, each of
// its type.
func readExecute(body []byte) (*executeCall, error) {
	if len(body) == 0 {
		return nil, errors.New(`the body must be a JSON object {"action", "parameters", ...}`)
	}
	if why := rules.CheckJSON(body); why != "" {
		return nil, fmt.Errorf("the body is not one unambiguous JSON document: %s", why)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, errors.New(`the body must be a JSON object {"action", "parameters", ...}`)
	}
	x := &executeCall{}
	for k, raw := range top {
		if !executeFields[k] {
			return nil, fmt.Errorf("unknown field %q (action, parameters, justification, escalation_level, override_token)", k)
		}
		if string(raw) == "null" {
			continue
		}
		var err error
		switch k {
		case "action":
			err = json.Unmarshal(raw, &x.action)
		case "justification":
			err = json.Unmarshal(raw, &x.justification)
		case "escalation_level":
			err = json.Unmarshal(raw, &x.escalation)
		case "override_token":
			err = json.Unmarshal(raw, &x.override)
		case "parameters":
			if raw[0] != '{' {
				err = errors.New("not an object")
			} else {
				err = json.Unmarshal(raw, &x.params)
			}
		}
		if err != nil {
			want := "a string"
			if k == "parameters" {
				want = "an object"
			}
			return nil, fmt.Errorf("%s must be %s", k, want)
		}
	}
	if x.action == "" {
		return nil, errors.New("action is required")
	}
	return x, nil
}

// oneOf is a value the execute body and a header may both give: when both
// do they must agree.
func oneOf(field, name, header, headerName string) (string, error) {
	switch {
	case field == "":
		return header, nil
	case header != "" && header != field:
		return "", fmt.Errorf("%s and the %s header differ", name, headerName)
	}
	return field, nil
}

// execute answers POST /v1/execute.
func (s *Sidecar) execute(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	if string(h.Method()) != fasthttp.MethodPost {
		ctx.Response.Header.Set("Allow", fasthttp.MethodPost)
		writeFast(ctx, fasthttp.StatusMethodNotAllowed, nil, badRequest(ExecutePath+" takes POST only"))
		return
	}
	if strings.Contains(string(h.RequestURI()), "?") {
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(ExecutePath+" takes no query; parameters go in the body"))
		return
	}
	if ce := h.ContentEncoding(); len(ce) > 0 {
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest("the execute body must not be encoded (Content-Encoding)"))
		return
	}
	x, err := readExecute(ctx.Request.Body())
	if err != nil {
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(err.Error()))
		return
	}
	a, ok := s.gate.Engine().Manifest().Action(x.action)
	switch {
	case !ok:
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(fmt.Sprintf("no action %q in the manifest", clipText(x.action))))
		return
	case a.Execute == nil:
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(fmt.Sprintf("action %s has no execute template; call the ERP through the door instead", a.Name)))
		return
	}
	path, body, err := a.Execute.Build(x.params)
	if err != nil {
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(err.Error()))
		return
	}
	justification, err1 := oneOf(x.justification, "justification", string(h.Peek(gate.HeaderJustification)), gate.HeaderJustification)
	escalation, err2 := oneOf(x.escalation, "escalation_level", string(h.Peek(gate.HeaderEscalation)), gate.HeaderEscalation)
	override, err3 := oneOf(x.override, "override_token", string(h.Peek(gate.HeaderOverride)), gate.HeaderOverride)
	if err := errors.Join(err1, err2, err3); err != nil {
		writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(strings.ReplaceAll(err.Error(), "\n", "; ")))
		return
	}

	// The templated request takes the execute call's place: its other
	// headers (the caller, the app, an approval id or capability token,
	// anything for the ERP) apply as to a plain call; the body and what
	// frames it are the proxy's.
	// An app signature covers the execute call as the app sent it, not
	// the request made from it: read it before the rewrite.
	proof := appProof(func(name string) string { return string(h.Peek(name)) }, string(h.Method()),
		string(h.RequestURI()), append([]byte(nil), ctx.Request.Body()...))
	req := &ctx.Request
	h.SetMethod(a.Execute.Method)
	req.SetRequestURI(path)
	h.Del("Content-Encoding")
	h.Del("Content-Length") // the envelope's; fasthttp sets the body's when it writes one
	if body != nil {
		req.SetBody(body)
		h.SetContentType("application/json")
	} else {
		req.ResetBody()
		h.Del("Content-Type")
		h.SetNoDefaultContentType(true)
	}
	c := s.call(ctx)
	c.AppProof = proof
	c.Via, c.ExecuteAction = viaExecute, a.Name
	c.Justification, c.Req.Escalation, c.Override = justification, escalation, override
	s.decide(ctx, c, answerExecute)
}

// answerExecute answers an execute call's verdict.
func answerExecute(s *Sidecar, ctx *fasthttp.RequestCtx, c *gate.Call, v *gate.Verdict) {
	if !v.Forward() {
		writeExecuteVerdict(ctx, v)
		return
	}
	if !s.forward(ctx, c, v) {
		return // the 502 or 504 of a plain call, written
	}
	resp := &ctx.Response
	res := &executeResult{Status: resp.StatusCode(), ContentType: string(resp.Header.ContentType())}
	res.Body = erpJSON(resp.Body())
	resp.Reset()
	writeFast(ctx, fasthttp.StatusOK, v, jsonBody(executeAnswer{Status: statusExecuted, ApprovalID: v.ApprovalID,
		Reason: v.Reason, Action: v.Action, Record: v.Record, Result: res}))
}

// erpJSON is the ERP's body for the answer's result: itself when it is
// JSON, null when empty, else a JSON string of its text.
func erpJSON(b []byte) json.RawMessage {
	switch {
	case len(bytes.TrimSpace(b)) == 0:
		return json.RawMessage("null")
	case json.Valid(b):
		return json.RawMessage(bytes.Clone(b))
	}
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	out, _ := json.Marshal(s)
	return out
}

// writeExecuteVerdict answers a verdict that forwards nothing: 202
// PENDING_APPROVAL, or DENIED with the status a plain call gets.
func writeExecuteVerdict(ctx *fasthttp.RequestCtx, v *gate.Verdict) {
	ans := executeAnswer{ApprovalID: v.ApprovalID, Reason: v.Reason, Action: v.Action, Record: v.Record}
	status := http.StatusAccepted
	if v.Outcome == rules.Pending {
		ans.Status, ans.RequiredRoles = statusPending, v.RequiredRoles
		ans.ExpiresAt = v.ExpiresAt.Format(time.RFC3339)
	} else {
		ans.Status, ans.Message = statusDenied, v.Message
		status, ans.Error = refusal(v.Reason)
	}
	writeFast(ctx, status, v, jsonBody(ans))
}

// executeAnswer is the body of every decided execute call. status,
// approval_id, reason and result are always present.
type executeAnswer struct {
	Status        string         `json:"status"`
	ApprovalID    string         `json:"approval_id"`
	Reason        record.Reason  `json:"reason"`
	Result        *executeResult `json:"result"`
	Action        string         `json:"action"`
	Record        uint64         `json:"record,omitempty"`
	RequiredRoles []string       `json:"required_roles,omitempty"`
	ExpiresAt     string         `json:"expires_at,omitempty"`
	// DENIED: the error word of the plain call's refusal, and what to fix.
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// executeResult is what the ERP answered.
type executeResult struct {
	Status      int             `json:"status"`
	ContentType string          `json:"content_type,omitempty"`
	Body        json.RawMessage `json:"body"`
}

// clipText bounds untrusted text quoted in an answer.
func clipText(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
