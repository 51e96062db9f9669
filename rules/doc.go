// Package rules holds the policy of uapk-proxy: the manifest (docs/reference.md#manifest),
// the principals file (docs/reference.md#principals), and the decision on one request. It knows nothing
// of HTTP libraries: doors convert their native request into a Request and
// get back a Decision value.
//
// # Manifest
//
// ParseManifest takes JSON (first non-space byte '{') or YAML. Decoding is
// strict: unknown keys, wrong types and every rule of the manifest reference are checked, and all
// problems are returned together in a *ValidationError, each with a JSON path
// such as "actions.journal_entry.match[1].path". Findings that do not make a
// manifest invalid but likely betray a mistake (a denylist entry naming no
// action, an action without match rules, amount_cap without amount paths)
// are warnings: Manifest.Warnings, or ValidationError.Warnings when the
// manifest is also invalid. The seed manifest of the contract has such
// warnings and loads.
//
// Key order in the actions object is kept: the first action, in manifest
// order, with a matching rule classifies a request.
//
// # Matching
//
// A match rule has a method (case-insensitive; "" or "*" for any), an
// optional host pattern and a path glob. Host patterns compare the host name
// case-insensitively, label by label ('*' within one label); a pattern with a
// port also requires that port (the scheme's default when the request names
// none). In path globs '*' is one non-empty segment (or part of one, as in
// path.Match) and a final "**" is zero or more segments. The query is
// ignored.
//
// A rule without a host applies to whatever host the door sends to. That
// is safe where the door's target is fixed (the sidecar's --upstream) but
// not where the agent names it (the forward door, Request.AgentChosenHost):
// there such rules apply only to hosts in tool_restrictions.erp_hosts, and a
// host that neither erp_hosts nor any rule's host names is refused
// (unknown_host) before classification, so that an allowed action cannot be
// sent to a host of the agent's choosing.
//
// Request paths are compared in a canonical form: unreserved percent escapes
// decoded, ASCII lower-cased, one trailing slash dropped. Paths that servers
// may read in more than one way (dot or empty segments, encoded '/', '\' or
// NUL, ';' parameters, malformed escapes) are never classified and always
// denied, so that a denylisted endpoint cannot be reached by spelling it
// differently. Patterns are compiled at load; classifying allocates nothing.
//
// # Amounts
//
// Amount paths are a strict subset of gjson paths (no modifiers, pipes or
// queries, one wildcard per segment), but they are read as the most lenient
// ERP binds a body: keys compared after Unicode case folding (fold.go), a
// wildcard selecting every key it matches. Each path gives the larger of
// the sum of the positive and of the negative values it selects, the
// amount is the largest over the paths, all in exact decimals. One pass
// over the body (body.go) reads the amount and judges the body: a body sent
// as JSON that is not strict UTF-8 JSON, nests deeper than 128 levels, or
// has two keys of one object equal after case folding is denied as
// ambiguous_body; any other body that fails, or has a non-numeric value at
// an amount path, has no readable amount: with amount_cap set, such a
// request is held for the escalated approval, never run automatically.
// The reading is checked against Go's encoding/json and Python's json
// (differential_test.go).
//
// # Decision
//
// Engine.Decide documents the order of the checks. An Engine is immutable
// and safe for concurrent use; it never reads the clock (Request.Time is the
// gate's) nor the network.
package rules
