package upstreamauth

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeClock is Config.Now for tests that must not depend on the scheduler.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects zerolog output from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() zerolog.Logger {
	return zerolog.New(l).Level(zerolog.DebugLevel)
}

// assertNoSecret fails if text holds any of the secrets.
func assertNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret %q:\n%s", what, s, text)
		}
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile rotates path the way a careful writer does: a temporary file
// in the same directory renamed over it.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// k8sSecret lays out a directory the way kubelet's atomic writer does for a
// mounted Secret: DIR/KEY -> ..data/KEY, ..data -> ..TIMESTAMP-dir.
type k8sSecret struct {
	dir, key string
	gen      int
	current  string
}

func newK8sSecret(t *testing.T, key, content string) *k8sSecret {
	t.Helper()
	k := &k8sSecret{dir: t.TempDir(), key: key}
	k.update(t, content)
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(k.dir, key)); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *k8sSecret) path() string { return filepath.Join(k.dir, k.key) }

// update writes a new timestamped directory, swaps ..data to it with a
// rename of a new symlink and removes the old directory, as kubelet does.
func (k *k8sSecret) update(t *testing.T, content string) {
	t.Helper()
	k.gen++
	gen := fmt.Sprintf("..2031_03_04_05_06_07.%04d", k.gen)
	if err := os.Mkdir(filepath.Join(k.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(k.dir, gen, k.key), content)
	tmp := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if k.current != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, k.current)); err != nil {
			t.Fatal(err)
		}
	}
	k.current = gen
}

// tokenServer is a client-credentials token endpoint (RFC 6749 section
// 4.4) on 127.0.0.1. It checks the client's id and secret, sent with HTTP
// Basic (form-encoded, RFC 6749 section 2.3.1) or in the form, and counts
// every request it answers.
type tokenServer struct {
	*httptest.Server
	clientID string
	secret   atomic.Pointer[string]

	requests  atomic.Int64
	expiresIn atomic.Int64 // 0: no expires_in
	// answer, if set, replaces the normal answer (for failures and odd
	// shapes); it is given the token it would have issued.
	answer atomic.Pointer[func(w http.ResponseWriter, token string)]

	mu     sync.Mutex
	issued []string
	scopes []string // scope of the last request
}

func newTokenServer(t *testing.T, clientID, secret string, expiresIn int64) *tokenServer {
	t.Helper()
	ts := &tokenServer{clientID: clientID}
	ts.secret.Store(&secret)
	ts.expiresIn.Store(expiresIn)
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) tokenURL() string { return ts.URL + "/oauth2/token" }

func (ts *tokenServer) setSecret(s string) { ts.secret.Store(&s) }

func (ts *tokenServer) setAnswer(f func(w http.ResponseWriter, token string)) {
	if f == nil {
		ts.answer.Store(nil)
		return
	}
	ts.answer.Store(&f)
}

func (ts *tokenServer) tokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.issued...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	n := ts.requests.Add(1)
	token := fmt.Sprintf("tok-%d-%x", n, time.Now().UnixNano())
	if r.Method != http.MethodPost || r.URL.Path != "/oauth2/token" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "invalid_request"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	if f := ts.answer.Load(); f != nil {
		ts.mu.Lock()
		ts.issued = append(ts.issued, token)
		ts.mu.Unlock()
		(*f)(w, token)
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != ts.clientID || secret != *ts.secret.Load() {
		// Echoing what was sent is what makes a body unfit for a log line.
		writeJSON(w, http.StatusUnauthorized, map[string]string{
			"error":             "invalid_client",
			"error_description": "client " + id + " with secret " + secret + " is unknown",
		})
		return
	}
	ts.mu.Lock()
	ts.issued = append(ts.issued, token)
	ts.scopes = strings.Fields(r.PostForm.Get("scope"))
	ts.mu.Unlock()
	body := map[string]any{"access_token": token, "token_type": "Bearer"}
	if e := ts.expiresIn.Load(); e != 0 {
		body["expires_in"] = e
	}
	writeJSON(w, http.StatusOK, body)
}
