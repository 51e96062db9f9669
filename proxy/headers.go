package proxy

import (
	"bytes"
	"strings"
)

// Request headers an agent may send (CONTRACT §3). Every X-UAPK-* header is
// removed before a request reaches the ERP; the gate reads these first.
const (
	HeaderApp           = "X-UAPK-App"
	HeaderJustification = "X-UAPK-Justification"
	HeaderOnBehalfOf    = "X-UAPK-On-Behalf-Of"
	HeaderEscalation    = "X-UAPK-Escalation"
	HeaderApprovalID    = "X-UAPK-Approval-Id"
	HeaderCapability    = "X-UAPK-Capability"
	HeaderOverride      = "X-UAPK-Override"

	HeaderDecision = "X-UAPK-Decision"
	HeaderAction   = "X-UAPK-Action"
	HeaderRecord   = "X-UAPK-Record"
)

// hopByHop are the RFC 9110 §7.6.1 connection-specific headers, plus the
// de-facto Proxy-Connection; none of them may cross the proxy.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

var uapkPrefix = []byte("x-uapk-")

// isUAPK reports whether a header name starts with X-UAPK-, in any case.
func isUAPK(name []byte) bool {
	return len(name) >= len(uapkPrefix) && bytes.EqualFold(name[:len(uapkPrefix)], uapkPrefix)
}

// connectionTokens returns the header names listed in a Connection value;
// those headers are hop-by-hop too.
func connectionTokens(v string) []string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
