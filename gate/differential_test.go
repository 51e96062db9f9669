package gate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"path"
	"strings"
	"testing"
)

// pathVectors are targets of the kinds path-normalisation suites (Envoy's,
// the double-decoding and path-parameter tricks of Tomcat and Spring) use.
var pathVectors = []string{
	"/api/v1/accounts/1010/balance", "/api/v1/accounts/a%20b", "/api/v1/accounts/%E2%82%AC", "/api/v1/accounts/",
	"/a/../b", "/a/./b", "/a/..", "/..", "/.", "//a", "/a//b", "/a/b//",
	"/a/%2e%2e/b", "/a/%2E%2E/b", "/a/.%2e/b", "/a/%2e./b", "/a/%2e/b",
	"/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", `/a\b`, `/a\..\b`,
	"/a;b", "/a/..;/b", "/a;jsessionid=1/b", "/a/%3b/b", "/a%3B/b",
	"/a/%252e%252e/b", "/a/%252f", "/a/..%252f..%252f", "/%2561",
	"/%61", "/%7e", "/%5F", "/%2D",
	"/a/%", "/a/%4", "/a/%zz", "/a/%%32%65",
	"/a/b#c", "/a/%23", "/a/%3F", "/a b", "/a/{b}", "/a|b",
	"/api/v1/reconciliations/../records/JE-1", "/api/v1/accounts/..%253B/..%253B/payroll/export",
}

// TestPathsAgainstServerParsers: every target the gate accepts is, to two
// real servers' path handling — Go's net/http (url.Parse, then path.Clean
// as ServeMux routes) and Python's (unquote, then posixpath.normpath) — the
// same path, segment for segment, as the gate classifies. A target either
// could read otherwise must be refused.
func TestPathsAgainstServerParsers(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test: %v", err)
	}
	var in bytes.Buffer
	for _, p := range pathVectors {
		b, _ := json.Marshal(p)
		in.Write(append(b, '\n'))
	}
	cmd := exec.Command(py, "testdata/route.py")
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("route.py: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for i, p := range pathVectors {
		if !sc.Scan() {
			t.Fatalf("route.py answered %d lines for %d paths", i, len(pathVectors))
		}
		var pyView [2]string
		if err := json.Unmarshal(sc.Bytes(), &pyView); err != nil {
			t.Fatal(err)
		}
		if ambiguousTarget(p, "") != "" {
			continue // refused: nothing is forwarded, whatever a server would make of it
		}
		// The gate classifies the raw path; decoded once it is what both
		// servers must see, and cleaning must change nothing.
		u, err := url.ParseRequestURI(p)
		if err != nil {
			t.Errorf("%q accepted, but Go cannot parse it: %v", p, err)
			continue
		}
		goPath := u.Path
		if c := path.Clean(goPath); c != strings.TrimSuffix(goPath, "/") && c != goPath {
			t.Errorf("%q accepted, but Go's ServeMux routes %q as %q", p, goPath, c)
		}
		if pyView[0] != goPath || pyView[1] != pyView[0] {
			t.Errorf("%q accepted, but Python routes %q (normalised %q) and Go %q", p, pyView[0], pyView[1], goPath)
		}
		if strings.Count(goPath, "/") != strings.Count(p, "/") {
			t.Errorf("%q accepted, but decodes to %q: a segment appeared", p, goPath)
		}
		// And a real ServeMux routes it where the gate's classification
		// would: the pattern of its first segments.
		mux := http.NewServeMux()
		routed := ""
		mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) { routed = "/" })
		r, _ := http.NewRequest("GET", "http://erp"+p, nil)
		if _, pattern := mux.Handler(r); pattern != "/" || routed != "" {
			t.Errorf("%q: ServeMux redirects or routes it as %q", p, pattern)
		}
	}
}
