package erpmock

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/internal/mockhttp"
)

const (
	// maxHits is how many recent requests Hits and /_mock/requests keep.
	maxHits = 1000
	// maxBody is larger than the proxy's default --max-body (10 MiB) so that
	// the proxy, not the mock, is what refuses big bodies in tests.
	maxBody = 32 << 20

	unmatched = "unmatched"
)

// Stats counts the requests the mock has served since it started or was last
// reset. Introspection requests (/_mock/*) are never counted.
type Stats struct {
	Total   int            `json:"total"`
	ByRoute map[string]int `json:"by_route"` // key: route pattern, e.g. "POST /api/v1/journal-entries"
	// LeakedUAPKHeaders counts requests carrying an X-UAPK-* header other
	// than X-UAPK-Capability.
	LeakedUAPKHeaders int `json:"leaked_uapk_headers"`
	// LeakedHopByHop counts requests carrying a hop-by-hop header.
	LeakedHopByHop int `json:"leaked_hop_by_hop"`
	// ForbiddenReached counts requests that reached an audit-log or
	// record-destruction route, which the proxy's denylist must stop.
	ForbiddenReached int `json:"forbidden_reached"`
}

// Hit is one request as the mock received it.
type Hit struct {
	Time       time.Time `json:"time"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Query      string    `json:"query"`
	Route      string    `json:"route"`       // matched pattern, or "unmatched"
	BodySHA256 string    `json:"body_sha256"` // hex
	BodySize   int       `json:"body_size"`
	Headers    []string  `json:"headers"` // every header name received, canonical, sorted
	Capability string    `json:"capability,omitempty"`
	// The offending header names, if any.
	LeakedUAPK     []string `json:"leaked_uapk,omitempty"`
	LeakedHopByHop []string `json:"leaked_hop_by_hop,omitempty"`
	Forbidden      bool     `json:"forbidden,omitempty"`
}

// Server is the mock ERP. The zero value is not usable; call New.
type Server struct {
	// Logger, if set before the server starts serving, receives one line per
	// request.
	Logger *log.Logger

	mux *http.ServeMux

	mu        sync.Mutex
	stats     Stats
	hits      []Hit // ring of at most maxHits, oldest at hitsStart once full
	hitsStart int
	store     store
}

// New returns a mock ERP with its chart of accounts seeded and no requests
// recorded.
func New() *Server {
	s := &Server{mux: http.NewServeMux()}
	s.routes()
	s.resetLocked()
	return s
}

// forbiddenRoutes are the routes a correctly configured proxy never forwards.
var forbiddenRoutes = map[string]bool{
	"PUT /api/v1/audit-log/{id}":       true,
	"PATCH /api/v1/audit-log/{id}":     true,
	"DELETE /api/v1/audit-log/{id...}": true,
	"DELETE /api/v1/records/{id...}":   true,
}

// ServeHTTP records the request, then answers it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_mock" || strings.HasPrefix(r.URL.Path, "/_mock/") {
		sw := &mockhttp.StatusWriter{ResponseWriter: w, Status: http.StatusOK}
		s.introspect(sw, r)
		s.logf("%s %s -> %d (introspection)", r.Method, r.URL.RequestURI(), sw.Status)
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	_, route := s.mux.Handler(r)
	if route == "" || route == "/" { // "/" is the JSON 404 catch-all
		route = unmatched
	}
	hit := inspect(r, body, route)

	s.mu.Lock()
	s.count(hit)
	s.mu.Unlock()

	sw := &mockhttp.StatusWriter{ResponseWriter: w, Status: http.StatusOK}
	switch {
	case err != nil:
		writeError(sw, http.StatusBadRequest, "bad_body", "reading request body: "+err.Error())
	case len(body) > maxBody:
		writeError(sw, http.StatusRequestEntityTooLarge, "too_large", "request body over 32 MiB")
	default:
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.mux.ServeHTTP(sw, r)
	}
	s.logHit(hit, sw.Status)
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByRoute = make(map[string]int, len(s.stats.ByRoute))
	for k, v := range s.stats.ByRoute {
		st.ByRoute[k] = v
	}
	return st
}

// Hits returns the last 1000 requests received, oldest first.
func (s *Server) Hits() []Hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Hit, 0, len(s.hits))
	out = append(out, s.hits[s.hitsStart:]...)
	return append(out, s.hits[:s.hitsStart]...)
}

// Reset forgets every request, counter and business record, and reseeds the
// chart of accounts. Identifiers start again from 000001.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Server) resetLocked() {
	s.stats = Stats{ByRoute: map[string]int{}}
	s.hits = nil
	s.hitsStart = 0
	s.store = newStore()
}

func (s *Server) count(h Hit) {
	s.stats.Total++
	s.stats.ByRoute[h.Route]++
	if len(h.LeakedUAPK) > 0 {
		s.stats.LeakedUAPKHeaders++
	}
	if len(h.LeakedHopByHop) > 0 {
		s.stats.LeakedHopByHop++
	}
	if h.Forbidden {
		s.stats.ForbiddenReached++
	}
	if len(s.hits) < maxHits {
		s.hits = append(s.hits, h)
		return
	}
	s.hits[s.hitsStart] = h
	s.hitsStart = (s.hitsStart + 1) % maxHits
}

// hopByHop are the headers (canonical form) that belong to one connection and
// that a proxy must not forward (RFC 9110 §7.6.1, plus the de facto
// Proxy-Connection and Keep-Alive).
var hopByHop = []string{"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Upgrade"}

func inspect(r *http.Request, body []byte, route string) Hit {
	sum := sha256.Sum256(body)
	h := Hit{
		Time:       time.Now().UTC(),
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		Route:      route,
		BodySHA256: hex.EncodeToString(sum[:]),
		BodySize:   len(body),
		Capability: r.Header.Get("X-UAPK-Capability"),
		Forbidden:  forbiddenRoutes[route],
	}

	// net/http moves some received headers out of r.Header; put their names
	// back so that Headers is everything that arrived.
	names := make([]string, 0, len(r.Header)+3)
	for name := range r.Header {
		names = append(names, name)
	}
	if r.Host != "" {
		names = append(names, "Host")
	}
	if len(r.TransferEncoding) > 0 {
		names = append(names, "Transfer-Encoding")
	}
	if len(r.Trailer) > 0 && r.Header["Trailer"] == nil { // chunked bodies lose it
		names = append(names, "Trailer")
	}
	slices.Sort(names)
	h.Headers = slices.Compact(names)

	for _, name := range h.Headers {
		if strings.HasPrefix(name, "X-Uapk-") && name != "X-Uapk-Capability" {
			h.LeakedUAPK = append(h.LeakedUAPK, name)
		}
		if slices.Contains(hopByHop, name) {
			h.LeakedHopByHop = append(h.LeakedHopByHop, name)
		}
	}
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			name := http.CanonicalHeaderKey(strings.TrimSpace(tok))
			if name != "" && r.Header[name] != nil && !slices.Contains(h.LeakedHopByHop, name) {
				h.LeakedHopByHop = append(h.LeakedHopByHop, name)
			}
		}
	}
	return h
}

func (s *Server) logf(format string, args ...any) {
	if s.Logger != nil {
		s.Logger.Printf(format, args...)
	}
}

func (s *Server) logHit(h Hit, status int) {
	if s.Logger == nil {
		return
	}
	target := h.Path
	if h.Query != "" {
		target += "?" + h.Query
	}
	s.Logger.Printf("%s %s -> %d route=%q body=%dB capability=%t%s",
		h.Method, target, status, h.Route, h.BodySize, h.Capability != "", warnings(h))
}

func warnings(h Hit) string {
	var w string
	if h.Forbidden {
		w += " !! FORBIDDEN ROUTE REACHED: the proxy let a denylisted call through"
	}
	if len(h.LeakedUAPK) > 0 {
		w += " !! LEAKED X-UAPK HEADERS: " + strings.Join(h.LeakedUAPK, ",")
	}
	if len(h.LeakedHopByHop) > 0 {
		w += " !! LEAKED HOP-BY-HOP HEADERS: " + strings.Join(h.LeakedHopByHop, ",")
	}
	return w
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	mockhttp.Introspect(w, r, func() any { return s.Stats() }, func() any { return s.Hits() }, s.Reset)
}
