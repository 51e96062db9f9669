package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/gate"
)

// hopByHop are the RFC 9110 §7.6.1 connection-specific headers, plus the
// de-facto Proxy-Connection; none of them may cross the proxy.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// connectionTokens returns the header names listed in a Connection value;
// those headers are hop-by-hop too.
func connectionTokens(v string) []string {
	if v == "" {
		return nil // the common case, without splitting
	}
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// dropName is the header policy by name: whether a header so named never
// crosses the proxy. Every X-UAPK-* header goes, both ways. Towards the ERP
// also every name with an underscore (CGI, WSGI and PHP fold "_" into "-",
// so X_UAPK_Capability would arrive as X-UAPK-Capability) and the agent's
// Forwarded and X-Forwarded-* (the proxy sets its own).
func dropName[T ~string | ~[]byte](name T, toERP bool) bool {
	if hasPrefixFold(name, "x-uapk-") {
		return true
	}
	if !toERP {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '_' {
			return true
		}
	}
	return len(name) == len("forwarded") && hasPrefixFold(name, "forwarded") || hasPrefixFold(name, "x-forwarded-")
}

// hasPrefixFold reports whether name starts with the lower-case ASCII
// prefix, in any case.
func hasPrefixFold[T ~string | ~[]byte](name T, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// fastHeader is what fasthttp's request and response headers share.
type fastHeader interface {
	Peek(key string) []byte
	Del(key string)
	All() iter.Seq2[[]byte, []byte]
}

// stripFast applies the header policy to a fasthttp header: the names
// dropName refuses, and every hop-by-hop header, including those the
// Connection header names; keep names one hop-by-hop header the caller's
// framing manages itself.
func stripFast(h fastHeader, keep string, toERP bool) {
	for _, t := range connectionTokens(string(h.Peek("Connection"))) {
		if !endToEnd(t) {
			h.Del(t)
		}
	}
	for _, name := range hopByHop {
		if name != keep {
			h.Del(name)
		}
	}
	var drop []string
	for k := range h.All() {
		if dropName(k, toERP) {
			drop = append(drop, string(k))
		}
	}
	for _, k := range drop {
		h.Del(k)
	}
}

// stripHTTP applies the same policy to a net/http header (or trailer).
func stripHTTP(h http.Header, keep string, toERP bool) {
	for _, v := range h.Values("Connection") {
		for _, t := range connectionTokens(v) {
			if !endToEnd(t) {
				h.Del(t)
			}
		}
	}
	for _, name := range hopByHop {
		if name != keep {
			h.Del(name)
		}
	}
	for k := range h {
		if dropName(k, toERP) {
			delete(h, k)
		}
	}
}

// endToEnd reports whether a header must reach the other side even when
// Connection names it: those that say what the body and the request are
// (an approval binds Content-Type and Content-Encoding; the decision was
// made with them).
func endToEnd(name string) bool {
	for _, h := range []string{"Content-Type", "Content-Encoding", "Content-Length", "Host", "Authorization"} {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// forwardedHeaders are the proxy's own Forwarded and X-Forwarded-* values
// for an agent at remote ("host:port") that spoke proto to the proxy.
func forwardedHeaders(remote, proto string) (forwarded, xff string) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	node := host
	if strings.Contains(host, ":") {
		node = "[" + host + "]"
	}
	return `for="` + node + `";proto=` + proto, host
}

// target is what both doors make of a request target: exactly the bytes
// received. The rules classify that path, the ERP receives that target
// (under the upstream's base path), and the digest covers that URL; no
// layer decodes it (the gate refuses what a server could decode into
// another path).
type target struct {
	path  string // as received, still percent-encoded
	query string // without "?", as received
	url   string // scheme://host + path [+ "?" + query], the URL the digest covers
}

// erpTarget builds the target for the ERP at scheme://host of an
// origin-form request target ("/path?query"), basePath prefixed.
func erpTarget(scheme, host, basePath, requestURI string) target {
	if !strings.HasPrefix(requestURI, "/") {
		basePath = "" // not origin-form ("*", an absolute URI): the gate refuses it as it came
	}
	path, query, _ := strings.Cut(requestURI, "?")
	return target{path: basePath + path, query: query, url: scheme + "://" + host + basePath + requestURI}
}

// originForm is the path-and-query part of a request target as received:
// an absolute-form one ("http://host:port/path?q", as HTTP_PROXY clients
// send) loses its scheme and authority, byte for byte otherwise.
func originForm(requestURI string) string {
	i := strings.Index(requestURI, "://")
	if i < 0 || strings.HasPrefix(requestURI, "/") {
		return requestURI
	}
	rest := requestURI[i+3:]
	j := strings.IndexAny(rest, "/?")
	if j < 0 {
		return "/"
	}
	if rest[j] == '?' {
		return "/" + rest[j:]
	}
	return rest[j:]
}

// rewrites returns which of gate.RewriteHeaders peek finds (nil: none).
func rewrites(peek func(string) bool) []string {
	var out []string
	for _, name := range gate.RewriteHeaders {
		if peek(name) {
			out = append(out, name)
		}
	}
	return out
}

// bodyHeaders are the headers that change what a body means; sent twice,
// parsers disagree on which counts.
var bodyHeaders = [len(bodyHeadersLower)]string{"Content-Type", "Content-Encoding", "Content-Length"}

// repeatedIn returns which of bodyHeaders occur more than once in a raw
// header block ("Name: value\r\n" lines), in any case.
func repeatedIn(raw []byte) []string {
	var seen [len(bodyHeadersLower)]int
	for line := range bytes.SplitSeq(raw, []byte("\n")) {
		for i, name := range bodyHeadersLower {
			if len(line) > len(name) && line[len(name)] == ':' && hasPrefixFold(line, name) {
				seen[i]++
			}
		}
	}
	var out []string
	for i, n := range seen {
		if n > 1 {
			out = append(out, bodyHeaders[i])
		}
	}
	return out
}

// bodyHeadersLower is bodyHeaders in lower case, as hasPrefixFold wants.
var bodyHeadersLower = [...]string{"content-type", "content-encoding", "content-length"}

// repeatedHTTP is repeatedIn for a parsed net/http header.
func repeatedHTTP(h http.Header) []string {
	var out []string
	for _, name := range bodyHeaders {
		if len(h.Values(name)) > 1 {
			out = append(out, name)
		}
	}
	return out
}

// Credential is the ERP credential the proxy holds and sets on every
// forwarded request (internal/upstreamauth). Its value never reaches a
// record, a log line or an error.
type Credential interface {
	Header() string // canonical header name
	Value(ctx context.Context) (string, error)
	Kind() string // "header" or "oauth2", for records
}

// agentCredential names the credential headers the agent sent that the
// proxy removes for its own: Authorization and the credential's header.
func agentCredential(cred Credential, has func(name string) bool) string {
	if cred == nil {
		return ""
	}
	var names []string
	for _, n := range []string{"Authorization", cred.Header()} {
		if has(n) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

// credentialTimeout bounds fetching a credential (an OAuth2 token) before
// a forwarded request.
const credentialTimeout = 10 * time.Second

// errCredential: the proxy's ERP credential could not be had, so the
// request was not sent (upstream_unavailable, an approval stays usable).
var errCredential = errors.New("the proxy's ERP credential is unavailable (see /readyz)")

// credentialValue fetches the credential for one forwarded request.
func credentialValue(cred Credential) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), credentialTimeout)
	defer cancel()
	v, err := cred.Value(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errCredential, err)
	}
	return v, nil
}

// CredentialOrigin reads an upstream_auth.origins entry,
// scheme://host[:port], into the one form the forward door compares:
// lower-case scheme and host, the port always written.
func CredentialOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("origin %q: want http(s)://host[:port] and nothing else", raw)
	}
	return originKey(strings.ToLower(u.Scheme), u.Host), nil
}

// originKey is scheme://host:port with the default port filled in.
func originKey(scheme, hostport string) string {
	h := strings.ToLower(hostport)
	if _, _, err := net.SplitHostPort(h); err != nil {
		h = net.JoinHostPort(strings.Trim(h, "[]"), map[string]string{"http": "80", "https": "443"}[scheme])
	}
	return scheme + "://" + h
}
