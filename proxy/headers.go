package proxy

import (
	"bytes"
	"iter"
	"net/http"
	"strings"
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
		for k, vs := range h {
			for _, v := range vs {
				if !yield([]byte(k), []byte(v)) {
					return
				}
			}
		}
	}
}

// stripHTTP applies the header policy to a net/http header.
func stripHTTP(h http.Header, keep string) { stripHeaders(httpHeader(h), keep) }
