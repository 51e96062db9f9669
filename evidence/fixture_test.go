package evidence_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

const manifestPath = "../examples/manifests/sox-financial.json"

// fixture is a proxy without doors: the real gate, ledger, approval store
// and tokens in a temporary data directory, driven directly.
type fixture struct {
	t          testing.TB
	dir        string
	l          *ledger.Ledger
	store      *approvalstore.Store
	svc        *approvals.Service
	gate       *gate.Gate
	gw         ed25519.PrivateKey
	people     map[string]ed25519.PrivateKey
	passkeys   map[string]*passkeytest.Authenticator // by principal id
	principals *rules.Principals
	manifest   []byte
	clock      atomic.Int64
}

// Tuesday 2026-11-17 16:00Z is 11:00 in New York: business hours.
var tuesday = time.Date(2026, 11, 17, 16, 0, 0, 0, time.UTC)

// deskRP is the dashboard's relying party in fixtures with passkeys.
var deskRP = passkey.RP{ID: "desk.corp.example", Origin: "https://desk.corp.example"}

func newFixture(t testing.TB) *fixture { return newPasskeyFixture(t, nil) }

// newPasskeyFixture is newFixture whose principals also have the passkeys
// given (by principal id), and whose approvals service takes passkey
// decisions for deskRP.
func newPasskeyFixture(t testing.TB, passkeys map[string]*passkeytest.Authenticator) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), people: map[string]ed25519.PrivateKey{}, passkeys: passkeys}
	f.clock.Store(tuesday.UnixNano())
	var err error
	if f.manifest, err = os.ReadFile(manifestPath); err != nil {
		t.Fatal(err)
	}
	m, err := rules.ParseManifest(f.manifest)
	if err != nil {
		t.Fatal(err)
	}
	var yaml strings.Builder
	yaml.WriteString("principals:\n")
	for _, p := range []struct{ id, roles string }{
		{"cfo@corp.example", "[cfo]"}, {"controller@corp.example", "[controller]"},
		{"fm@corp.example", "[finance_manager]"}, {"fm2@corp.example", "[finance_manager]"},
		{"accountant@corp.example", "[staff_accountant]"},
	} {
		pub, priv, _ := keys.Generate()
		f.people[p.id] = priv
		pem, _ := keys.PublicPEM(pub)
		fmt.Fprintf(&yaml, "  - id: %s\n    roles: %s\n    public_key: |\n      %s\n", p.id, p.roles,
			strings.ReplaceAll(strings.TrimSpace(string(pem)), "\n", "\n      "))
		if au := passkeys[p.id]; au != nil {
			fmt.Fprintf(&yaml, "    webauthn:\n      - credential_id: %s\n        public_key: |\n          %s\n", au.CredentialID(),
				strings.ReplaceAll(strings.TrimSpace(au.PublicKeyPEM()), "\n", "\n          "))
		}
	}
	if f.principals, err = rules.ParsePrincipals([]byte(yaml.String()), f.dir); err != nil {
		t.Fatal(err)
	}
	if f.gw, _, err = keys.LoadOrCreate(filepath.Join(f.dir, "gateway.key")); err != nil {
		t.Fatal(err)
	}
	f.open()
	if _, err := f.l.Append(context.Background(), ledger.Entry{Kind: record.KindConfig, App: m.AppID, Reason: "start", Policy: m.Hash,
		Data: map[string]any{"manifest_file": manifestPath, "manifest_version": m.Version,
			"gateway_key": base64.StdEncoding.EncodeToString(f.gw.Public().(ed25519.PublicKey))}}); err != nil {
		t.Fatal(err)
	}
	issuer, err := tokens.NewIssuer(f.gw)
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, f.principals)
	var rp *passkey.RP
	if passkeys != nil {
		rp = &deskRP
	}
	f.svc, err = approvals.New(approvals.Config{Store: f.store, Ledger: f.l, Tokens: issuer,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: f.now, RP: rp})
	if err != nil {
		t.Fatal(err)
	}
	f.gate, err = gate.New(gate.Config{Engine: eng, Ledger: f.l, Approvals: f.svc, Logger: zerolog.Nop(), Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) open() {
	var err error
	if f.l, err = ledger.Open(filepath.Join(f.dir, "ledger.db"), ledger.Options{}); err != nil {
		f.t.Fatal(err)
	}
	if f.store, err = approvalstore.Open(f.l); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { f.l.Close() })
}

func (f *fixture) now() time.Time { return time.Unix(0, f.clock.Load()).UTC() }

// call is one agent request through the gate; forwarded ones get an ERP
// answer recorded.
func (f *fixture) call(method, path, body string, set ...func(*gate.Call)) *gate.Verdict {
	f.t.Helper()
	c := &gate.Call{Door: "sidecar",
		Req: rules.Request{Method: method, Scheme: "http", Host: "erp.example.com", Path: path, Body: []byte(body),
			ContentType: "application/json", App: "financial-ai-assistant"}}
	for _, s := range set {
		s(c)
	}
	v := f.gate.Check(c)
	if v.Forward() {
		f.gate.Forwarded(v, gate.ERPOutcome{Status: 201, Body: []byte(`{"status":"posted"}`), Duration: time.Millisecond})
	}
	return v
}

func onBehalfOf(who string) func(*gate.Call)  { return func(c *gate.Call) { c.Req.OnBehalfOf = who } }
func withApproval(id string) func(*gate.Call) { return func(c *gate.Call) { c.ApprovalID = id } }
func withToken(tok string) func(*gate.Call)   { return func(c *gate.Call) { c.Capability = tok } }
func withOverride(tok string) func(*gate.Call) {
	return func(c *gate.Call) { c.Override = tok }
}

func (f *fixture) decide(id, who, decision string) *approvals.Refusal {
	f.t.Helper()
	a, err := f.store.Get(id)
	if err != nil {
		f.t.Fatal(err)
	}
	at := f.now().Format(time.RFC3339)
	_, ref, err := f.svc.Decide(id, approvals.Submission{Approver: who, Decision: decision, SignedAt: at, Reason: "reviewed",
		Signature: approvals.Sign(f.people[who], id, a.Digest, decision, who, at)})
	if err != nil {
		f.t.Fatal(err)
	}
	return ref
}

// decideWithPasskey is decide with the approver's passkey: an assertion
// over the statement's SHA-256, made in the dashboard at deskRP, edited by
// edit before it is posted.
func (f *fixture) decideWithPasskey(id, who, decision string, edit ...func(*passkey.Assertion)) *approvals.Refusal {
	f.t.Helper()
	a, err := f.store.Get(id)
	if err != nil {
		f.t.Fatal(err)
	}
	at := f.now().Format(time.RFC3339)
	as := f.passkeys[who].Assert(deskRP, passkey.Challenge(approvals.Statement(id, a.Digest, decision, who, at)))
	for _, e := range edit {
		e(&as)
	}
	_, ref, err := f.svc.Decide(id, approvals.Submission{Approver: who, Decision: decision, SignedAt: at, Reason: "reviewed in the dashboard",
		WebAuthn: &as})
	if err != nil {
		f.t.Fatal(err)
	}
	return ref
}

const (
	accrual  = `{"account":"4000-Revenue","debit":0,"credit":250000,"description":"Q3 product sales accrual"}`
	adjust   = `{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}`
	reconcil = `{"account":"1010-Cash","period":"2026-Q3"}`
)

// ids of the approvals playScenario made.
type ids struct{ accrual, adjust, rejected, report, override string }

// playScenario runs the seed's quarter end through the gate.
func (f *fixture) playScenario() ids {
	f.t.Helper()
	var s ids
	f.call("POST", "/api/v1/reconciliations", reconcil, onBehalfOf("accountant@corp.example"))
	s.accrual = f.call("POST", "/api/v1/journal-entries", accrual).ApprovalID
	f.mustDecide(s.accrual, "fm@corp.example", "approve")
	f.expect(f.call("POST", "/api/v1/journal-entries", accrual, withApproval(s.accrual)), "allow")
	s.adjust = f.call("POST", "/api/v1/journal-entries", adjust).ApprovalID
	f.mustDecide(s.adjust, "cfo@corp.example", "approve")
	f.mustDecide(s.adjust, "controller@corp.example", "approve")
	a, _ := f.store.Get(s.adjust)
	f.expect(f.call("POST", "/api/v1/journal-entries", adjust, withToken(a.Token)), "allow")
	s.rejected = f.call("POST", "/api/v1/journal-entries", strings.Replace(accrual, "250000", "260000", 1), onBehalfOf("fm2@corp.example")).ApprovalID
	if ref := f.decide(s.rejected, "fm2@corp.example", "approve"); ref == nil || ref.Code != "self_approval" {
		f.t.Fatalf("self approval: %v", ref)
	}
	f.mustDecide(s.rejected, "fm@corp.example", "reject")
	s.report = f.call("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`).ApprovalID
	f.mustDecide(s.report, "cfo@corp.example", "approve")
	f.mustDecide(s.report, "controller@corp.example", "approve")
	f.expect(f.call("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`, withApproval(s.report)), "allow")
	ov, err := f.svc.RequestOverride(approvals.OverrideRequest{Action: "financial_report", Duration: "4h",
		Justification: "Q4 10-K filing deadline - SEC required", RequestedBy: "controller@corp.example"})
	if err != nil {
		f.t.Fatal(err)
	}
	s.override = ov.ID
	f.mustDecide(s.override, "cfo@corp.example", "approve")
	o, _ := f.store.Get(s.override)
	f.expect(f.call("POST", "/api/v1/reports/10-K", `{"period":"2026-Q4"}`, withOverride(o.Token)), "allow")
	f.expect(f.call("PUT", "/api/v1/audit-log/AL-1", `{}`), "deny")
	return s
}

func (f *fixture) mustDecide(id, who, decision string) {
	f.t.Helper()
	if ref := f.decide(id, who, decision); ref != nil {
		f.t.Fatalf("%s %s %s: %v", who, decision, id, ref)
	}
}

func (f *fixture) expect(v *gate.Verdict, decision string) {
	f.t.Helper()
	if string(v.Decision()) != decision {
		f.t.Fatalf("decision %s (%s), want %s", v.Decision(), v.Reason, decision)
	}
}

// dirSource closes the live ledger and opens the data directory offline.
func (f *fixture) dirSource() *evidence.Dir {
	f.t.Helper()
	if err := f.l.Close(); err != nil {
		f.t.Fatal(err)
	}
	d, err := evidence.OpenDir(f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { d.Close() })
	return d
}

func (f *fixture) options() evidence.Options {
	return evidence.Options{Framework: "SOX", Principals: f.principals, PrincipalsName: "principals.yaml",
		Manifests: []evidence.ManifestFile{{Name: manifestPath, Data: f.manifest}}}
}

func export(t testing.TB, src evidence.Source, opts evidence.Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := evidence.Export(&buf, src, opts); err != nil {
		t.Fatalf("export: %v", err)
	}
	return buf.Bytes()
}

func verify(t testing.TB, b []byte) evidence.Report {
	t.Helper()
	rep, err := evidence.Verify(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}
