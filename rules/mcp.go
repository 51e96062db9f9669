package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MCP (docs/reference.md#mcp): a match rule that names mcp_tool makes its
// path an MCP endpoint (the streamable HTTP transport: JSON-RPC messages
// POSTed to one path). On such a path the body is read as one JSON-RPC
// message, the way the MCP server reads it (the Go SDK: encoding/json
// semantics with case-sensitive member names; other servers with
// case-insensitive ones), and every reading on which they could differ is
// refused:
//
//   - the body must be one unambiguous JSON document (scanBody: no keys
//     equal after case folding, strict UTF-8, ...), whatever Content-Type
//     says, and a JSON object: a batch (an array) is refused, mcp_batch;
//   - a member whose name folds to a JSON-RPC one (jsonrpc, id, method,
//     params, result, error) or, in params, to name or arguments, must be
//     spelled exactly so: "Method" is read as method by a case-insensitive
//     server and ignored by a case-sensitive one;
//   - method, when present, must be a JSON string; one that folds to
//     tools/call must be tools/call exactly;
//   - a tools/call has only jsonrpc, id, method and params; params is an
//     object whose name is a string; arguments, when present and not null,
//     is an object; id is absent, a string or a number.
//
// Escapes are resolved before anything is compared ("jour\u006eal" is
// "journal"), since every JSON parser resolves them.

// MCPCall is a JSON-RPC tools/call read from a request to an MCP path.
type MCPCall struct {
	// ID is the request's id as sent (a JSON string or number), "null"
	// when it has none; the proxy's own answer carries it back.
	ID json.RawMessage
	// Tool is params.name, unescaped.
	Tool string
	// Params is params in one canonical form (members in byte order of
	// their names at every level, strings escaped only where JSON requires,
	// numbers as written): what the request digest covers instead of the
	// body, so that a retry with a new JSON-RPC id has the approved digest.
	Params []byte

	args json.RawMessage // params.arguments as sent; nil when absent or null
}

// MCPMethodToolsCall is the JSON-RPC method classified by mcp_tool.
const MCPMethodToolsCall = "tools/call"

// errMCPBatch is a JSON-RPC batch on an MCP path.
var errMCPBatch = errors.New("a JSON-RPC batch (a JSON array) on an MCP path is refused: each tools/call must be a request of its own")

// maxToolName bounds an mcp_tool name in the manifest (the MCP spec's
// 128).
const maxToolName = 128

// validToolName reports whether s is a tool name the manifest may name: 1
// to 128 of [A-Za-z0-9_.-] (the MCP specification's tool name characters;
// the spec allows / and others in some versions, which the gate does not
// need).
func validToolName(s string) bool {
	if len(s) == 0 || len(s) > maxToolName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// readMCP reads body, sent to an MCP path. It returns the tools/call, nil
// when the body is empty or another JSON-RPC message (a session message:
// initialize, notifications, tools/list, a response to the server), or an
// error when the body is not one the gate can read the way every server
// does (errMCPBatch, or why it is ambiguous).
func readMCP(body []byte) (*MCPCall, error) {
	if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		if len(body) == 0 {
			return nil, nil
		}
		return nil, errors.New("the body is only white space")
	}
	if res := scanBody(body, nil); res.invalid != "" {
		return nil, errors.New(res.invalid)
	}
	switch bytes.TrimLeft(body, " \t\r\n")[0] {
	case '[':
		return nil, errMCPBatch
	case '{':
	default:
		return nil, errors.New("a JSON-RPC message on an MCP path must be a JSON object")
	}
	// scanBody admitted the body: no two keys of an object fold alike, so
	// this map holds every member, each as the only one of its name.
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, err
	}
	if err := exactNames(msg, "", "jsonrpc", "id", "method", "params", "result", "error"); err != nil {
		return nil, err
	}
	rawMethod, ok := msg["method"]
	if !ok {
		return nil, nil // a response or no request at all: not a tools/call
	}
	var method string
	if err := strictString(rawMethod, &method); err != nil {
		return nil, fmt.Errorf("JSON-RPC method: %v", err)
	}
	if method != MCPMethodToolsCall {
		if foldString(method) == foldString(MCPMethodToolsCall) {
			return nil, fmt.Errorf("JSON-RPC method %q is tools/call in another case: servers may read it either way", clipName(method))
		}
		return nil, nil
	}
	for k := range msg {
		switch k {
		case "jsonrpc", "id", "method", "params":
		default:
			return nil, fmt.Errorf("a tools/call with member %q: only jsonrpc, id, method and params are read", clipName(k))
		}
	}
	call := &MCPCall{ID: json.RawMessage("null")}
	if id, ok := msg["id"]; ok {
		id = bytes.TrimSpace(id)
		if len(id) == 0 || !(id[0] == '"' || id[0] == '-' || id[0] >= '0' && id[0] <= '9') {
			return nil, errors.New("a tools/call id must be a string or a number")
		}
		call.ID = id
	}
	rawParams := bytes.TrimSpace(msg["params"])
	if len(rawParams) == 0 || rawParams[0] != '{' {
		return nil, errors.New("a tools/call must have params, a JSON object")
	}
	var params map[string]json.RawMessage
	if err := json.Unmarshal(rawParams, &params); err != nil {
		return nil, err
	}
	if err := exactNames(params, "params.", "name", "arguments", "_meta"); err != nil {
		return nil, err
	}
	rawName, ok := params["name"]
	if !ok {
		return nil, errors.New("a tools/call without params.name")
	}
	if err := strictString(rawName, &call.Tool); err != nil {
		return nil, fmt.Errorf("params.name: %v", err)
	}
	if args, ok := params["arguments"]; ok {
		args = bytes.TrimSpace(args)
		switch {
		case string(args) == "null":
		case len(args) > 0 && args[0] == '{':
			call.args = args
		default:
			return nil, errors.New("params.arguments must be a JSON object")
		}
	}
	var canon any
	dec := json.NewDecoder(bytes.NewReader(rawParams))
	dec.UseNumber()
	if err := dec.Decode(&canon); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	writeJSON(&b, canon)
	call.Params = b.Bytes()
	return call, nil
}

// exactNames fails when a member of obj folds to one of names without
// being spelled as it.
func exactNames(obj map[string]json.RawMessage, prefix string, names ...string) error {
	for k := range obj {
		fk := foldString(k)
		for _, n := range names {
			if k != n && fk == foldString(n) {
				return fmt.Errorf("member %s%q is %s%s in another spelling: servers may read it either way", prefix, clipName(k), prefix, n)
			}
		}
	}
	return nil
}

// strictString decodes raw, which must be a JSON string, into s.
func strictString(raw json.RawMessage, s *string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("must be a JSON string")
	}
	return json.Unmarshal(raw, s)
}

func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
