package approvals_test

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

var desk = passkey.RP{ID: "desk.corp.example", Origin: "https://desk.corp.example"}

// passkeyService is the approvals service whose CFO and controller have
// passkeys (the CFO's ES256, the controller's EdDSA) and no Ed25519 key.
func passkeyService(t *testing.T, store *approvalstest.Store, l *approvalstest.Ledger, cfo, ctl *passkeytest.Authenticator) *approvals.Service {
	t.Helper()
	m, err := rules.LoadManifest("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	type cred struct {
		ID  string `json:"credential_id"`
		Key string `json:"public_key"`
	}
	file := map[string]any{"principals": []any{
		map[string]any{"id": "cfo@corp.example", "roles": []string{"cfo"}, "webauthn": []cred{{cfo.CredentialID(), cfo.PublicKeyPEM()}}},
		map[string]any{"id": "controller@corp.example", "roles": []string{"controller"}, "webauthn": []cred{{ctl.CredentialID(), ctl.PublicKeyPEM()}}},
	}}
	data, _ := json.Marshal(file)
	ps, err := rules.ParsePrincipals(data, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, ps)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	svc, err := approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: iss, RP: &desk,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func passkeySub(a *approvals.Approval, who, decision string, au *passkeytest.Authenticator, rp passkey.RP) approvals.Submission {
	at := now.UTC().Format(time.RFC3339)
	as := au.Assert(rp, passkey.Challenge(approvals.Statement(a.ID, a.Digest, decision, who, at)))
	return approvals.Submission{Approver: who, Decision: decision, SignedAt: at, WebAuthn: &as}
}

// TestPasskeyDecisions: the CFO and the controller approve the dual
// approval with passkeys; the records keep each assertion whole with the
// relying party. Forged assertions are refused with the approval rules'
// codes: another approval's challenge, another origin, another person's
// credential, a replayed counter (also after a restart).
func TestPasskeyDecisions(t *testing.T) {
	cfo, ctl := passkeytest.New("ES256"), passkeytest.New("EdDSA")
	l := &approvalstest.Ledger{}
	store := approvalstest.NewStore(l)
	svc := passkeyService(t, store, l, cfo, ctl)
	a := hold(t, svc, dualCFOController)
	other := hold(t, svc, dualCFOController)

	refusals := []struct {
		name string
		sub  approvals.Submission
		code record.Reason
	}{
		{"another approval's challenge", func() approvals.Submission {
			s := passkeySub(other, "cfo@corp.example", approvals.Approve, cfo, desk)
			return s
		}(), approvals.RefuseBadSignature},
		{"another origin", passkeySub(a, "cfo@corp.example", approvals.Approve, cfo, passkey.RP{ID: desk.ID, Origin: "https://evil.example"}), approvals.RefuseBadSignature},
		{"another relying party", passkeySub(a, "cfo@corp.example", approvals.Approve, cfo, passkey.RP{ID: "evil.example", Origin: desk.Origin}), approvals.RefuseBadSignature},
		{"the controller's credential as the cfo", passkeySub(a, "cfo@corp.example", approvals.Approve, ctl, desk), approvals.RefuseUnknown},
		{"both a signature and an assertion", func() approvals.Submission {
			s := passkeySub(a, "cfo@corp.example", approvals.Approve, cfo, desk)
			s.Signature = "AAAA"
			return s
		}(), approvals.RefuseBadRequest},
	}
	// The first refusal signs another approval's statement but is posted to a.
	for _, r := range refusals {
		_, ref, err := svc.Decide(a.ID, r.sub)
		if err != nil || ref == nil || ref.Code != r.code {
			t.Errorf("%s: %v %v, want %s", r.name, ref, err, r.code)
		}
	}
	// The CFO approves.
	s := passkeySub(a, "cfo@corp.example", approvals.Approve, cfo, desk)
	if _, ref, err := svc.Decide(a.ID, s); ref != nil || err != nil {
		t.Fatalf("cfo: %v %v", ref, err)
	}
	// A copy of the CFO's authenticator, its counter behind, signs the other approval.
	replay := cfo.AssertWith(desk.ID, desk.Origin, passkey.Challenge(approvals.Statement(other.ID, other.Digest, approvals.Approve, "cfo@corp.example", s.SignedAt)), passkeytest.UP|passkeytest.UV, 1)
	_, ref, _ := svc.Decide(other.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: s.SignedAt, WebAuthn: &replay})
	if ref == nil || ref.Code != approvals.RefuseBadSignature || !strings.Contains(ref.Detail, "counter") {
		t.Errorf("replayed counter: %v", ref)
	}
	// After a restart the counters are known again.
	svc2 := passkeyService(t, store, l, cfo, ctl)
	if _, ref, _ := svc2.Decide(other.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: s.SignedAt, WebAuthn: &replay}); ref == nil || !strings.Contains(ref.Detail, "counter") {
		t.Errorf("replayed counter after a restart: %v", ref)
	}
	// The controller completes it.
	if got, ref, err := svc2.Decide(a.ID, passkeySub(a, "controller@corp.example", approvals.Approve, ctl, desk)); ref != nil || err != nil || got.Status != approvals.StatusApproved {
		t.Fatalf("controller: %v %v %+v", ref, err, got)
	}
	n := 0
	for _, r := range l.Records() {
		if r.Kind != record.KindApproval || r.Reason != record.Signed {
			continue
		}
		n++
		w, _ := r.Data["webauthn"].(map[string]any)
		if r.Data["signature"] != "" || w["rp_id"] != desk.ID || w["origin"] != desk.Origin || w["authenticator_data"] == "" || w["client_data_json"] == "" {
			t.Errorf("signature record %v", r.Data)
		}
	}
	if n != 2 {
		t.Errorf("%d signed records, want 2", n)
	}
	// Without a relying party configured, no passkey decision counts.
	svc3, _ := service(t)
	b := hold(t, svc3, requireCFO)
	if _, ref, _ := svc3.Decide(b.ID, passkeySub(b, "cfo@corp.example", approvals.Approve, cfo, desk)); ref == nil || ref.Code != approvals.RefuseBadSignature {
		t.Errorf("no ui.url: %v", ref)
	}
}

// TestPasskeyCounterOneSpellingAndOneWinner: a credential id sent padded
// is the same passkey as unpadded, so a replayed counter cannot pass by
// spelling; and of two decisions racing with one counter on two
// approvals, one counts and the other is refused.
func TestPasskeyCounterOneSpellingAndOneWinner(t *testing.T) {
	cfo, ctl := passkeytest.New("ES256"), passkeytest.New("EdDSA")
	l := &approvalstest.Ledger{}
	svc := passkeyService(t, l2store(l), l, cfo, ctl)
	a, b, c := hold(t, svc, requireCFO), hold(t, svc, requireCFO), hold(t, svc, requireCFO)
	at := now.UTC().Format(time.RFC3339)
	assert := func(ap *approvals.Approval, counter uint32) *passkey.Assertion {
		as := cfo.AssertWith(desk.ID, desk.Origin, passkey.Challenge(approvals.Statement(ap.ID, ap.Digest, approvals.Approve, "cfo@corp.example", at)), passkeytest.UP, counter)
		return &as
	}
	first := assert(a, 5)
	first.CredentialID += "=="
	if _, ref, err := svc.Decide(a.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: at, WebAuthn: first}); ref != nil || err != nil {
		t.Fatalf("first: %v %v", ref, err)
	}
	if _, ref, _ := svc.Decide(b.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: at, WebAuthn: assert(b, 5)}); ref == nil || ref.Code != approvals.RefuseBadSignature {
		t.Fatalf("the same counter, spelt without padding: %v", ref)
	}
	// Two at once with counter 6: one wins.
	results := make(chan *approvals.Refusal, 2)
	for _, ap := range []*approvals.Approval{b, c} {
		go func() {
			_, ref, _ := svc.Decide(ap.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: at, WebAuthn: assert(ap, 6)})
			results <- ref
		}()
	}
	refused := 0
	for range 2 {
		if r := <-results; r != nil {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d of two racing decisions with one counter refused, want 1", refused)
	}
}

func l2store(l *approvalstest.Ledger) *approvalstest.Store { return approvalstest.NewStore(l) }

// TestPasskeyCounterZeroAfterCounting: once a passkey has shown a counter,
// an assertion with counter 0 is a clone's (or a forger's) and is refused.
func TestPasskeyCounterZeroAfterCounting(t *testing.T) {
	cfo, ctl := passkeytest.New("ES256"), passkeytest.New("EdDSA")
	l := &approvalstest.Ledger{}
	svc := passkeyService(t, approvalstest.NewStore(l), l, cfo, ctl)
	a, b := hold(t, svc, requireCFO), hold(t, svc, requireCFO)
	at := now.UTC().Format(time.RFC3339)
	for i, c := range []struct {
		ap      *approvals.Approval
		counter uint32
		ok      bool
	}{{a, 41, true}, {b, 0, false}} {
		as := cfo.AssertWith(desk.ID, desk.Origin, passkey.Challenge(approvals.Statement(c.ap.ID, c.ap.Digest, approvals.Approve, "cfo@corp.example", at)), passkeytest.UP, c.counter)
		if c.counter == 0 {
			as = cfo.AssertCounter(desk.ID, desk.Origin, passkey.Challenge(approvals.Statement(c.ap.ID, c.ap.Digest, approvals.Approve, "cfo@corp.example", at)), passkeytest.UP, 0)
		}
		_, ref, err := svc.Decide(c.ap.ID, approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: at, WebAuthn: &as})
		if (ref == nil && err == nil) != c.ok {
			t.Errorf("%d: counter %d: %v %v", i, c.counter, ref, err)
		}
	}
}
