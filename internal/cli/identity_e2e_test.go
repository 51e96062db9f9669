package cli

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	idpIssuer   = "https://login.corp.example/"
	idpAudience = "uapk-proxy"
)

// idp is an identity provider served by the test: a JWK Set over https,
// and the keys to mint tokens with.
type idp struct {
	srv    *httptest.Server
	caFile string
	keys   map[string]idpKey // by kid
	mu     sync.Mutex
}

type idpKey struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func newIDP(t *testing.T) *idp {
	t.Helper()
	rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p := &idp{keys: map[string]idpKey{
		"rsa-1": {jose.RS256, rsaKey}, "ec-1": {jose.ES256, ec}, "ed-1": {jose.EdDSA, ed},
	}}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		var set jose.JSONWebKeySet
		for kid, k := range p.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	p.caFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	writePEMCert(t, p.caFile, p.srv.Certificate())
	return p
}

// token mints a token signed by kid with the standard claims for now and
// the caller's email, changed by edit.
func (p *idp) token(t *testing.T, kid, email string, now time.Time, edit ...func(*jwt.Claims, map[string]any)) string {
	t.Helper()
	p.mu.Lock()
	k := p.keys[kid]
	p.mu.Unlock()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{Issuer: idpIssuer, Audience: jwt.Audience{idpAudience}, Subject: "00u" + kid,
		ID: "jti-" + kid + "-" + email, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	extra := map[string]any{"email": email}
	for _, f := range edit {
		f(&std, extra)
	}
	s, err := jwt.Signed(sig).Claims(std).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withIdentity configures identity against p (its certificate trusted
// through --upstream-ca, as a private IdP's would be).
func withIdentity(p *idp) func(*serveOptions) {
	return func(o *serveOptions) {
		cfg := filepath.Join(filepath.Dir(o.Principals), "uapk-identity.yaml")
		doc := "identity:\n  jwks: " + p.srv.URL + "/jwks.json\n  issuer: " + idpIssuer + "\n  audience: " + idpAudience + "\n"
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			panic(err)
		}
		o.Config, o.UpstreamCA = cfg, p.caFile
	}
}

// TestIdentityProvesTheCaller: with identity, a plain id, no header or any
// bad token is 401 unauthenticated_caller and reaches nothing; a valid
// token of each algorithm passes roles_allowed as its claim; the record
// holds the verified caller and the token's iss, sub and jti, never the
// token; the verified caller is who the self-approval rule excludes.
func TestIdentityProvesTheCaller(t *testing.T) {
	p := newIDP(t)
	e := newEnv(t, withIdentity(p))
	now := e.clock.Now()
	accountant := "accountant@corp.example"
	hmac := func() string { // HS256 with the RSA public key as the secret
		der, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pubPEM}, (&jose.SignerOptions{}).WithHeader("kid", "rsa-1"))
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.Signed(s).Claims(jwt.Claims{Issuer: idpIssuer, Audience: jwt.Audience{idpAudience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Claims(map[string]any{"email": accountant}).Serialize()
		return tok
	}()
	good := p.token(t, "rsa-1", accountant, now)
	parts := strings.Split(good, ".")
	refusals := []struct{ name, header, why string }{
		{"plain id", accountant, "malformed"},
		{"no header", "", "must carry"},
		{"expired", p.token(t, "rsa-1", accountant, now.Add(-20*time.Minute)), "expired"},
		{"not yet valid", p.token(t, "rsa-1", accountant, now, func(c *jwt.Claims, _ map[string]any) { c.NotBefore = jwt.NewNumericDate(now.Add(5 * time.Minute)) }), "not yet valid"},
		{"wrong issuer", p.token(t, "rsa-1", accountant, now, func(c *jwt.Claims, _ map[string]any) { c.Issuer = "https://evil.example/" }), "issuer"},
		{"wrong audience", p.token(t, "rsa-1", accountant, now, func(c *jwt.Claims, _ map[string]any) { c.Audience = jwt.Audience{"other-app"} }), "audience"},
		{"hmac", hmac, "algorithm"},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".", ""},
		{"tampered", "", ""}, // set below
		{"claim not an id", p.token(t, "rsa-1", "two words@corp.example", now), "not a principal id"},
		{"oversized", p.token(t, "rsa-1", accountant, now, func(_ *jwt.Claims, m map[string]any) { m["pad"] = strings.Repeat("x", 9000) }), "too large"},
	}
	// tampered: the RSA token's header with another token's payload and signature.
	tamp := strings.Split(p.token(t, "rsa-1", "cfo@corp.example", now), ".")
	refusals[8].header = parts[0] + "." + tamp[1] + "." + parts[2]
	for _, c := range refusals {
		var hdr []string
		if c.header != "" {
			hdr = []string{"X-UAPK-On-Behalf-Of", c.header}
		}
		r := e.do("POST", "/api/v1/reconciliations", reconciliation, hdr...)
		m := r.json(t)
		if r.status != 401 || m["error"] != "unauthenticated" || m["reason"] != "unauthenticated_caller" ||
			!strings.Contains(m["message"].(string), c.why) {
			t.Errorf("%s: %d %s, want 401 unauthenticated_caller (%s)", c.name, r.status, r.body, c.why)
			continue
		}
		rec := e.record(seqHeader(t, r))
		if rec.Decision != "deny" || rec.Data["caller_verified"] != false || rec.Data["on_behalf_of"] != nil {
			t.Errorf("%s: record %+v", c.name, rec)
		}
	}
	if n := e.erp.Stats().Total; n != 0 {
		t.Fatalf("the ERP saw %d requests from unproven callers", n)
	}

	// A valid token of each algorithm passes as its claim, whatever the
	// case the provider kept.
	for _, kid := range []string{"rsa-1", "ec-1", "ed-1"} {
		tok := p.token(t, kid, "Accountant@Corp.Example", now)
		r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", tok)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", kid, r.status, r.body)
		}
		rec := e.record(seqHeader(t, r))
		if rec.Data["on_behalf_of"] != accountant || rec.Data["caller_verified"] != true || rec.Data["caller_iss"] != idpIssuer ||
			rec.Data["caller_sub"] != "00u"+kid || rec.Data["caller_jti"] != "jti-"+kid+"-Accountant@Corp.Example" {
			t.Errorf("%s: record data %v", kid, rec.Data)
		}
	}
	// A token within the 60 s leeway passes.
	if r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of",
		p.token(t, "rsa-1", accountant, now.Add(-10*time.Minute-30*time.Second))); r.status != 200 {
		t.Errorf("within leeway: %d %s", r.status, r.body)
	}
	// The role comes from the verified caller: a staff accountant's token
	// cannot post what needs a finance manager's role to ask for.
	// And the verified caller is who the self-approval rule excludes: the
	// finance manager asks, and cannot approve her own entry.
	r := e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", p.token(t, "ec-1", "fm@corp.example", now))
	if r.status != 202 {
		t.Fatalf("accrual: %d %s", r.status, r.body)
	}
	id := r.header.Get("X-UAPK-Approval-Id")
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", now); code != 403 || m["reason"] != "self_approval" {
		t.Errorf("the verified requester approving: %d %v, want 403 self_approval", code, m)
	}
	if code, m := e.decide(id, "fm2@corp.example", "fm2", "approve", now); code != 200 || m["status"] != "approved" {
		t.Errorf("another finance manager: %d %v", code, m)
	}

	// No token is kept anywhere.
	raw, _ := json.Marshal(e.records())
	for _, c := range append(refusals, struct{ name, header, why string }{"good", good, ""}) {
		if c.header != "" && strings.Count(c.header, ".") == 2 && (bytes.Contains(raw, []byte(c.header)) || strings.Contains(e.logs.String(), c.header)) {
			t.Errorf("%s: the token is in a record or the log", c.name)
		}
	}
}

// TestIdentityProvesTheOverrideRequester: with identity, an override's
// requested_by must be the caller its token proves.
func TestIdentityProvesTheOverrideRequester(t *testing.T) {
	p := newIDP(t)
	e := newEnv(t, withIdentity(p))
	dir := t.TempDir()
	write := func(name, tok string) string {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(tok+"\n"), 0o600)
		return f
	}
	args := []string{"override", "request", "--action", "journal_entry", "--duration", "4h", "--justification", "close",
		"--requested-by", "accountant@corp.example", "--admin", e.admin, "--admin-token", e.token}
	var out bytes.Buffer
	if code := runCLI(t, &out, args...); code != 1 || !strings.Contains(out.String(), "401") || !strings.Contains(out.String(), "unauthenticated_caller") {
		t.Fatalf("without a token: exit %d %s", code, out.String())
	}
	out.Reset()
	other := write("fm.jwt", p.token(t, "rsa-1", "fm@corp.example", e.clock.Now()))
	if code := runCLI(t, &out, append(args, "--identity-token", other)...); code != 1 || !strings.Contains(out.String(), "requested_by_mismatch") {
		t.Fatalf("someone else's token: exit %d %s", code, out.String())
	}
	out.Reset()
	own := write("accountant.jwt", p.token(t, "ed-1", "accountant@corp.example", e.clock.Now()))
	if code := runCLI(t, &out, append(args, "--identity-token", own)...); code != 0 || !strings.Contains(out.String(), "requested") {
		t.Fatalf("own token: exit %d %s", code, out.String())
	}
}

// TestWithoutIdentityCallersAreAsserted: without identity, serve warns once
// and every request record says caller_verified false.
func TestWithoutIdentityCallersAreAsserted(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if rec := e.record(seqHeader(t, r)); rec.Data["caller_verified"] != false || rec.Data["on_behalf_of"] != "accountant@corp.example" {
		t.Errorf("record data %v", rec.Data)
	}
	if n := strings.Count(e.logs.String(), "no identity configured"); n != 1 {
		t.Errorf("the warning appears %d times", n)
	}
}

// TestOversizedHeadersAreNotEchoed: headers over the sidecar door's bound
// get 400 saying so, and the answer never quotes what was sent (a token
// among it).
func TestOversizedHeadersAreNotEchoed(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/api/v1/accounts/1010/balance", "", "Authorization", "Bearer "+strings.Repeat("SECRETTOKEN", 500))
	if r.status != 400 || bytes.Contains(r.body, []byte("SECRETTOKEN")) || !bytes.Contains(r.body, []byte("over 4096 bytes")) {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// TestIdentityHeldRequestIsReleased: a request held on the agent's
// connection keeps the caller its token proved: when the approval
// completes it goes through once, not refused as unauthenticated (its
// token is not asked for again and may expire meanwhile).
func TestIdentityHeldRequestIsReleased(t *testing.T) {
	p := newIDP(t)
	e := newEnv(t, withHold("2m"), withIdentity(p))
	now := e.clock.Now()
	tok := p.token(t, "rsa-1", "accountant@corp.example", now, func(c *jwt.Claims, _ map[string]any) {
		c.Expiry = jwt.NewNumericDate(now.Add(2 * time.Minute))
	})
	done := make(chan reply, 1)
	go func() { done <- e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", tok) }()
	var id string
	for i := 0; i < 200 && id == ""; i++ {
		var list struct{ Approvals []struct{ ID string } }
		e.adminGet("/v1/approvals?status=pending", &list)
		if len(list.Approvals) == 1 {
			id = list.Approvals[0].ID
		}
		time.Sleep(10 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("no pending approval")
	}
	e.clock.Add(5 * time.Minute) // the token has expired by the time the approval completes
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("fm: %d %v", code, m)
	}
	r := <-done
	if r.status != 201 {
		t.Fatalf("held request: %d %s", r.status, r.body)
	}
	rec := e.record(seqHeader(t, r))
	if rec.Decision != "allow" || rec.Data["on_behalf_of"] != "accountant@corp.example" || rec.Data["caller_verified"] != true {
		t.Errorf("release record %+v", rec)
	}
	if n := e.erp.Stats().Total; n != 1 {
		t.Errorf("the ERP saw %d requests", n)
	}
}

// TestMalformedRequestsLeakNoSecrets: requests the sidecar cannot read are
// answered 400 without quoting them, and nothing of them reaches the log:
// their headers carry tokens and credentials.
func TestMalformedRequestsLeakNoSecrets(t *testing.T) {
	e := newEnv(t)
	heads := []string{
		"POST /api/v1/reconciliations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETAUTH1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST /api/v1/reconciliations HTTP/1.1\r\nHost: x\r\nX-UAPK-Capability: v4.public.SECRETCAP2\r\nContent-Length: zz\r\n\r\n",
		"GET /api/v1/accounts/1010/balance HTTP/9.9\r\nHost: x\r\nX-UAPK-On-Behalf-Of: eyJ.SECRETJWT3.sig\r\n\r\n",
		"GET /api/v1/accounts/1010/balance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETAUTH4\r\nX-Bad: a\x00b\r\n\r\n",
		"POST /api/v1/reconciliations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETAUTH5\r\nTransfer-Encoding: gzip\r\n\r\n",
	}
	for i, h := range heads {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.sidecar, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(h))
		got, _ := io.ReadAll(c)
		c.Close()
		if bytes.Contains(got, []byte("SECRET")) {
			t.Errorf("request %d: the answer quotes it: %q", i, got)
		}
	}
	time.Sleep(100 * time.Millisecond) // fasthttp logs after the connection ends
	if strings.Contains(e.logs.String(), "SECRET") {
		t.Errorf("the log quotes a malformed request:\n%s", e.logs.String())
	}
}
