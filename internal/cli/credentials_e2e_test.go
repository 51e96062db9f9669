package cli

import (
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

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
)

// credentialERP is an ERP that notes the credential headers of every
// request it receives, then answers like the mock ERP.
type credentialERP struct {
	mu    sync.Mutex
	seen  []string // "Authorization=VALUE|X-Api-Key=VALUE" per request
	inner *erpmock.Server
}

func (c *credentialERP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.seen = append(c.seen, "Authorization="+strings.Join(r.Header.Values("Authorization"), ",")+"|X-Api-Key="+strings.Join(r.Header.Values("X-Api-Key"), ","))
	c.mu.Unlock()
	c.inner.ServeHTTP(w, r)
}

func (c *credentialERP) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

// withUpstreamAuth points the proxy at a credential-noting ERP and writes
// a config file whose upstream_auth section is section.
func withUpstreamAuth(erp *credentialERP, section string) func(*serveOptions) {
	return func(o *serveOptions) {
		srv := httptest.NewServer(erp)
		o.Upstream = srv.URL
		p := filepath.Join(filepath.Dir(o.Principals), "uapk.yaml")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(section, "{{UPSTREAM}}", srv.URL)), 0o600); err != nil {
			panic(err)
		}
		o.Config = p
	}
}

// writeSecret swaps a Kubernetes-style mounted Secret: the value lives in
// a timestamped directory, ..data points at it, and the file is a symlink
// through ..data.
func writeSecret(t *testing.T, dir, name, value string, n int) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..2026_12_01_%03d", n))
	if err := os.MkdirAll(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, name), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, name)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUpstreamCredentialFromAFileRotatedUnderLoad: with upstream_auth the
// ERP gets the proxy's credential and never the agent's, through both
// doors; the record says which header was removed, never a value; a
// Secret rotated while requests flow is picked up without a torn value.
func TestUpstreamCredentialFromAFileRotatedUnderLoad(t *testing.T) {
	secrets := filepath.Join(t.TempDir(), "erp-secret")
	writeSecret(t, secrets, "api-key", "proxy-key-1", 1)
	erp := &credentialERP{inner: erpmock.New()}
	// A server the agent runs itself, on a host:port the manifest names as
	// an ERP's (the attack: the agent binds the port an erp_hosts entry
	// names, on the pod's loopback).
	var evilSaw []string
	var evilMu sync.Mutex
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilMu.Lock()
		evilSaw = append(evilSaw, "Authorization="+r.Header.Get("Authorization")+"|X-Api-Key="+r.Header.Get("X-Api-Key"))
		evilMu.Unlock()
		w.Write([]byte(`{"balance":"0"}`))
	}))
	defer evil.Close()
	section := "upstream_auth:\n  header: X-Api-Key\n  value_file: " + filepath.Join(secrets, "api-key") + "\n  origins: [\"{{UPSTREAM}}\"]\n"
	e := newEnv(t, withUpstreamAuth(erp, section), func(o *serveOptions) {
		o.ProxyAddr = "127.0.0.1:0"
		// The forward door may reach both.
		withERPHosts(strings.TrimPrefix(o.Upstream, "http://"), strings.TrimPrefix(evil.URL, "http://"))(o)
	})

	r := e.do("POST", "/api/v1/reconciliations", reconciliation, "Authorization", "Bearer agent-stolen", "X-Api-Key", "agent-key", "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 200 {
		t.Fatalf("reconciliation: %d %s", r.status, r.body)
	}
	if got := erp.received(); len(got) != 1 || got[0] != "Authorization=|X-Api-Key=proxy-key-1" {
		t.Fatalf("the ERP received %q", got)
	}
	rec := e.record(seqHeader(t, r))
	if rec.Data["upstream_credential"] != "header" || rec.Data["agent_credential_removed"] != "Authorization,X-Api-Key" {
		t.Errorf("record data %v", rec.Data)
	}
	// The forward door too.
	fwd := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: e.srv.ProxyAddr.String()})}}
	req, _ := http.NewRequest("POST", e.opts.Upstream+"/api/v1/reconciliations", strings.NewReader(reconciliation))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic YWdlbnQ6c2VjcmV0")
	req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
	resp, err := fwd.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := erp.received(); resp.StatusCode != 200 || len(got) != 2 || got[1] != "Authorization=|X-Api-Key=proxy-key-1" {
		t.Fatalf("forward door: %d, the ERP received %q", resp.StatusCode, got)
	}
	// The agent's own server, though the manifest names its host:port,
	// is no origin of the credential: it gets neither the proxy's nor the
	// agent's.
	req, _ = http.NewRequest("GET", evil.URL+"/api/v1/accounts/1010/balance", nil)
	req.Header.Set("Authorization", "Bearer agent-own")
	req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
	resp, err = fwd.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	evilMu.Lock()
	saw := append([]string(nil), evilSaw...)
	evilMu.Unlock()
	if resp.StatusCode != 200 || len(saw) != 1 || saw[0] != "Authorization=|X-Api-Key=" {
		t.Fatalf("the agent's server: %d, received %q", resp.StatusCode, saw)
	}

	// Rotate under load: every request carries exactly one good value.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && !stop.Load(); i++ {
				req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/reconciliations", strings.NewReader(reconciliation))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Api-Key", "agent-key")
				req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				sent.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	writeSecret(t, secrets, "api-key", "proxy-key-2", 2)
	// The file is looked at at most once a second: wait for the new
	// value to show, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-Api-Key", "agent-key", "X-UAPK-On-Behalf-Of", "accountant@corp.example")
		if r.status != 200 {
			t.Fatalf("during the rotation: %d %s", r.status, r.body)
		}
		got := erp.received()
		if got[len(got)-1] == "Authorization=|X-Api-Key=proxy-key-2" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	counts := map[string]int{}
	for _, h := range erp.received() {
		counts[h]++
	}
	if counts["Authorization=|X-Api-Key=proxy-key-2"] == 0 || len(counts) != 2 {
		t.Fatalf("after %d requests the ERP received %v; want only proxy-key-1 then proxy-key-2", sent.Load(), counts)
	}
	// No record holds a credential value.
	raw, _ := json.Marshal(e.records())
	for _, v := range []string{"proxy-key-1", "proxy-key-2", "agent-key", "agent-stolen"} {
		if strings.Contains(string(raw), v) {
			t.Errorf("a record contains %q", v)
		}
	}
	for _, v := range []string{"proxy-key-1", "proxy-key-2"} {
		if strings.Contains(e.logs.String(), v) {
			t.Errorf("the log contains %q", v)
		}
	}
}

// tokenEndpoint is an OAuth2 token endpoint (client credentials) that
// counts the tokens it issues and can be made to fail.
type tokenEndpoint struct {
	issued  atomic.Int64
	failing atomic.Bool
	ttl     int // expires_in, seconds
}

func (te *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		http.Error(w, `{"error":"unsupported_grant_type"}`, 400)
		return
	}
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	w.Header().Set("Content-Type", "application/json")
	if te.failing.Load() || id != "uapk-proxy" || secret != "s3cret-client" {
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"invalid_client","error_description":"client s3cret-client unknown"}`))
		return
	}
	n := te.issued.Add(1)
	fmt.Fprintf(w, `{"access_token":"erp-token-%d","token_type":"Bearer","expires_in":%d}`, n, te.ttl)
}

// TestUpstreamCredentialByOAuth2: a real token endpoint served by the test;
// many requests share one token per lifetime; when the endpoint fails the
// proxy is not ready and, once the token runs out, sends nothing (502
// upstream_unavailable, not delivered), never the agent's credential.
func TestUpstreamCredentialByOAuth2(t *testing.T) {
	te := &tokenEndpoint{ttl: 3600}
	ts := httptest.NewServer(te)
	defer ts.Close()
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	os.WriteFile(secretFile, []byte("s3cret-client\n"), 0o600)
	erp := &credentialERP{inner: erpmock.New()}
	section := "upstream_auth:\n  oauth2:\n    token_url: " + ts.URL + "/token\n    client_id: uapk-proxy\n    client_secret_file: " + secretFile + "\n    scopes: [gl.write]\n"
	e := newEnv(t, withUpstreamAuth(erp, section))
	for i := 0; i < 50; i++ {
		if r := e.do("POST", "/api/v1/reconciliations", reconciliation, "Authorization", "Bearer agent-stolen", "X-UAPK-On-Behalf-Of", "accountant@corp.example"); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	if n := te.issued.Load(); n != 1 {
		t.Fatalf("%d tokens fetched for 50 requests, want 1", n)
	}
	for _, h := range erp.received() {
		if h != "Authorization=Bearer erp-token-1|X-Api-Key=" {
			t.Fatalf("the ERP received %q", h)
		}
	}
	var ready map[string]any
	if code := e.adminGet("/readyz", &ready); code != 200 {
		t.Fatalf("readyz %d %v", code, ready)
	}
	raw, _ := json.Marshal(e.records())
	if strings.Contains(string(raw), "erp-token") || strings.Contains(string(raw), "s3cret") || strings.Contains(e.logs.String(), "erp-token") {
		t.Error("a record or the log holds the credential")
	}
}

// TestUpstreamCredentialOAuth2Expiry: tokens with a short life are fetched
// again before they run out, once per lifetime, not per request; an
// endpoint that fails turns /readyz not ready with the status and code,
// and once the token has run out requests are not sent.
func TestUpstreamCredentialOAuth2Expiry(t *testing.T) {
	te := &tokenEndpoint{ttl: 2}
	ts := httptest.NewServer(te)
	defer ts.Close()
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	os.WriteFile(secretFile, []byte("s3cret-client\n"), 0o600)
	erp := &credentialERP{inner: erpmock.New()}
	section := "upstream_auth:\n  oauth2:\n    token_url: " + ts.URL + "/token\n    client_id: uapk-proxy\n    client_secret_file: " + secretFile + "\n"
	e := newEnv(t, withUpstreamAuth(erp, section))
	// About three token lifetimes of steady traffic, bounded in count.
	start := time.Now()
	n := 0
	for ; n < 3000 && time.Since(start) < 5*time.Second; n++ {
		if r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example"); r.status != 200 {
			t.Fatalf("request %d: %d %s", n, r.status, r.body)
		}
		time.Sleep(2 * time.Millisecond)
	}
	lifetimes := int(time.Since(start)/(2*time.Second)) + 1
	if got := int(te.issued.Load()); got < 2 || got > lifetimes+1 || got*20 > n {
		t.Fatalf("%d tokens for %d requests over %d lifetimes; want about one per lifetime", got, n, lifetimes)
	}

	te.failing.Store(true)
	time.Sleep(2500 * time.Millisecond) // the token in hand runs out
	var ready struct {
		Status string
		Checks map[string]string
	}
	// A probe starts a fetch when one is due; the next one sees its
	// failure. Probe as a load balancer does, bounded.
	for i := 0; i < 50; i++ {
		e.adminGet("/readyz", &ready)
		if strings.Contains(ready.Checks["upstream_auth"], "401") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ready.Status != "not_ready" || !strings.Contains(ready.Checks["upstream_auth"], "401") || !strings.Contains(ready.Checks["upstream_auth"], "invalid_client") ||
		strings.Contains(ready.Checks["upstream_auth"], "s3cret") {
		t.Fatalf("readyz while the token endpoint fails: %+v", ready)
	}
	before := len(erp.received())
	r := e.do("POST", "/api/v1/reconciliations", reconciliation, "Authorization", "Bearer agent-stolen", "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 502 || r.json(t)["error"] != "upstream_unavailable" || r.json(t)["delivered"] != false {
		t.Fatalf("without a credential: %d %s", r.status, r.body)
	}
	if len(erp.received()) != before {
		t.Fatal("a request reached the ERP without the proxy's credential")
	}
}

// TestUpstreamAuthConfigProblems: a bad section stops serve before it
// listens, each problem named; a token endpoint that refuses at start too.
func TestUpstreamAuthConfigProblems(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ section, want string }{
		{"upstream_auth:\n  header: X-Api-Key\n", "value_file"},
		{"upstream_auth:\n  header: X-Api-Key\n  value_file: " + filepath.Join(dir, "missing") + "\n", "upstream_auth.value_file"},
		{"upstream_auth:\n  oauth2:\n    token_url: http://erp.example.com/token\n    client_id: x\n    client_secret_file: " + filepath.Join(dir, "missing") + "\n", "token_url"},
		{"upstream_auth:\n  header: X-Api-Key\n  valuefile: x\n", "field valuefile not found"},
		{"upstream_auth:\n  header: X-Api-Key\n  value_file: x\n  origins: [\"https://erp.example.com/api\"]\n", "upstream_auth.origins[0]"},
	}
	for _, c := range cases {
		o := &serveOptions{Manifest: "../../examples/manifests/sox-financial.json", Upstream: "http://127.0.0.1:1", SidecarAddr: "127.0.0.1:0",
			AdminAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), MaxBody: "10MiB", LogLevel: "info"}
		p := filepath.Join(dir, "uapk.yaml")
		os.WriteFile(p, []byte(c.section), 0o600)
		o.Config = p
		_, err := startServer(o, &syncBuffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.section, err, c.want)
		}
		if _, serr := os.Stat(filepath.Join(dir, "data")); serr == nil {
			t.Errorf("%q: the data directory was created", c.section)
		}
	}
	te := &tokenEndpoint{ttl: 60}
	te.failing.Store(true)
	ts := httptest.NewServer(te)
	defer ts.Close()
	secretFile := filepath.Join(dir, "client-secret")
	os.WriteFile(secretFile, []byte("s3cret-client\n"), 0o600)
	o := &serveOptions{Manifest: "../../examples/manifests/sox-financial.json", Upstream: "http://127.0.0.1:1", SidecarAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), MaxBody: "10MiB", LogLevel: "info"}
	p := filepath.Join(dir, "uapk.yaml")
	os.WriteFile(p, []byte("upstream_auth:\n  oauth2:\n    token_url: "+ts.URL+"\n    client_id: uapk-proxy\n    client_secret_file: "+secretFile+"\n"), 0o600)
	o.Config = p
	_, err := startServer(o, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("refusing token endpoint at start: %v", err)
	}
}
