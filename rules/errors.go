package rules

import (
	"errors"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every *ValidationError: the document
// was read but is not an acceptable manifest or principals file.
var ErrInvalid = errors.New("invalid configuration")

// ErrAmbiguousPath is wrapped by Engine.Classify when a request path could be
// read in more than one way by servers (dot or empty segments, encoded
// slashes, ';' parameters, malformed escapes). Decide denies such requests.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// ErrMCPBody is wrapped by Engine.Classify when a body sent to an MCP path
// (a match rule names mcp_tool) cannot be read the way every MCP server
// reads it, or is a JSON-RPC batch (docs/reference.md#mcp).
var ErrMCPBody = errors.New("unreadable MCP body")

// ErrUnknownHost is wrapped by Engine.Classify when the agent chose the
// target host (Request.AgentChosenHost) and neither a match rule's host nor
// tool_restrictions.erp_hosts names it. Decide denies such requests
// (unknown_host) whatever default_policy says.
var ErrUnknownHost = errors.New("host not named by the manifest")

// Problem is one finding about a manifest or principals file. Path is a JSON
// path into the document such as "actions.journal_entry.match[1].path"; it is
// "" for problems with the document as a whole (syntax errors).
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// String renders the problem as "path: message".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found in a document, in document order.
// Warnings, if any were found before the document was rejected, are carried
// along so that a checker can print them too; they never make a document
// invalid on their own.
type ValidationError struct {
	Problems []Problem
	Warnings []Problem
}

// Error lists the problems one per line, "path: message".
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }
