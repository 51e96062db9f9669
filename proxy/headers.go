package proxy

import (
	"bytes"
	"iter"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
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

// headerEditor is what the doors' header types (fasthttp's request and
// response headers, net/http's Header) offer the one header policy.
type headerEditor interface {
	Peek(key string) []byte
	Del(key string)
	All() iter.Seq2[[]byte, []byte]
}

// stripHeaders is the header policy for everything that crosses the proxy,
// either way: every X-UAPK-* header and every hop-by-hop header goes,
// including those the Connection header names; keep names one hop-by-hop
// header the caller's framing manages itself.
func stripHeaders(h headerEditor, keep string) {
	for _, t := range connectionTokens(string(h.Peek("Connection"))) {
		h.Del(t)
	}
	for _, name := range hopByHop {
		if name != keep {
			h.Del(name)
		}
	}
	var uapk []string
	for k := range h.All() {
		if isUAPK(k) {
			uapk = append(uapk, string(k))
		}
	}
	for _, k := range uapk {
		h.Del(k)
	}
}

// httpHeader lets net/http's Header go through stripHeaders.
type httpHeader http.Header

func (h httpHeader) Peek(key string) []byte {
	return []byte(strings.Join(http.Header(h).Values(key), ","))
}

func (h httpHeader) Del(key string) {
	delete(h, key) // a key the parser left as it was sent
	http.Header(h).Del(key)
}

func (h httpHeader) All() iter.Seq2[[]byte, []byte] {
	return func(yield func([]byte, []byte) bool) {
		for k := range h {
			// The policy judges names only; a name that cannot be X-UAPK-*
			// is not even converted.
			if len(k) < len(uapkPrefix) || k[0] != 'X' && k[0] != 'x' {
				continue
			}
			if !yield([]byte(k), nil) {
				return
			}
		}
	}
}

// stripHTTP applies the header policy to a net/http header.
func stripHTTP(h http.Header, keep string) { stripHeaders(httpHeader(h), keep) }

// target is what both doors make of a request target: the path the rules
// classify is fasthttp's decoded, dot-segment-free path, and that same path
// (under the upstream's base path) is what the ERP receives, in url.
type target struct {
	path  string // starts with "/"
	query string // without "?", as sent
	url   string // scheme://host/path[?query], the URL the digest covers
}

// erpTarget builds the target of parsed u for the ERP at scheme://host,
// basePath prefixed ("" for none).
func erpTarget(scheme, host, basePath string, u *fasthttp.URI) target {
	t := target{path: basePath + string(u.Path()), query: string(u.QueryString())}
	out := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(out)
	out.SetScheme(scheme)
	out.SetHost(host)
	out.SetPath(t.path)
	out.SetQueryString(t.query)
	t.url = string(out.FullURI())
	return t
}
