package pgstore

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

var deskRP = passkey.RP{ID: "desk.corp.example", Origin: "https://desk.corp.example"}

// services are n approvals services, the proxies of one fleet, on one
// database: each its own store and ledger, one token key, the CFO with a
// passkey.
func services(t *testing.T, n int, cfo *passkeytest.Authenticator) ([]*approvals.Service, []*fakeLedger) {
	t.Helper()
	return servicesOn(t, server.NewDB(t), n, cfo)
}

// servicesOn is services on database dsn.
func servicesOn(t *testing.T, dsn string, n int, cfo *passkeytest.Authenticator) ([]*approvals.Service, []*fakeLedger) {
	t.Helper()
	m, err := rules.LoadManifest("../../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	type cred struct {
		ID  string `json:"credential_id"`
		Key string `json:"public_key"`
	}
	file := map[string]any{"principals": []any{
		map[string]any{"id": "cfo@corp.example", "roles": []string{"cfo"}, "webauthn": []cred{{cfo.CredentialID(), cfo.PublicKeyPEM()}}},
	}}
	data, _ := json.Marshal(file)
	ps, err := rules.ParsePrincipals(data, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, ps)
	_, gw, _ := ed25519.GenerateKey(nil)
	var svcs []*approvals.Service
	var ls []*fakeLedger
	for i := range n {
		iss, _ := tokens.NewIssuer(gw)
		s, l := proxy(t, dsn, fmt.Sprint("proxy-", i))
		svc, err := approvals.New(approvals.Config{Store: s, Ledger: l, Tokens: iss, RP: &deskRP,
			Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: func() time.Time { return time.Now() }})
		if err != nil {
			t.Fatal(err)
		}
		svcs, ls = append(svcs, svc), append(ls, l)
	}
	return svcs, ls
}

func hold(t *testing.T, svc *approvals.Service) *approvals.Approval {
	t.Helper()
	a := svc.NewPending(approvals.Pending{App: "finance-agent", Method: "POST", URL: "https://erp.example.com/api/v1/journal-entries",
		Body: []byte(`{"amount":250000}`), OnBehalfOf: "analyst@corp.example", Digest: strings.Repeat("ab", 32),
		Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry", Reason: record.ApprovalRequired,
			Requirement: requireCFO, ApprovalTTL: 24 * time.Hour}})
	if _, err := svc.Hold(a, ledger.Entry{Kind: record.KindRequest, Decision: record.Pending, ApprovalID: a.ID}); err != nil {
		t.Fatal(err)
	}
	return a
}

func cfoSub(cfo *passkeytest.Authenticator, a *approvals.Approval, counter uint32) approvals.Submission {
	at := time.Now().UTC().Format(time.RFC3339)
	as := cfo.AssertWith(deskRP.ID, deskRP.Origin, passkey.Challenge(approvals.Statement(a.ID, a.Digest, approvals.Approve, "cfo@corp.example", at)), passkeytest.UP, counter)
	return approvals.Submission{Approver: "cfo@corp.example", Decision: approvals.Approve, SignedAt: at, WebAuthn: &as}
}

// TestServiceAcrossProxies: the approvals service as it runs today, on the
// shared store: a request held at one proxy is approved with a passkey at
// another (the decision's record in that proxy's ledger, with its seq),
// and the approval is used once across them; two decisions racing at two
// proxies with one passkey counter are one counted, one refused.
func TestServiceAcrossProxies(t *testing.T) {
	cfo := passkeytest.New("ES256")
	svcs, ls := services(t, 2, cfo)
	a := hold(t, svcs[0])
	got, ref, err := svcs[1].Decide(a.ID, cfoSub(cfo, a, 5))
	if err != nil || ref != nil || got.Status != approvals.StatusApproved || got.Token == "" {
		t.Fatalf("decide at the other proxy: %+v %v %v", got, ref, err)
	}
	var signed ledger.Record
	for _, r := range ls[1].Records() {
		if r.Kind == record.KindApproval && r.Reason == record.Signed {
			signed = r
		}
	}
	if len(got.Decisions) != 1 || signed.Seq == 0 || got.Decisions[0].Record != signed.Seq {
		t.Errorf("decision record %d, signature record %+v", got.Decisions[0].Record, signed)
	}
	seen, err := svcs[0].Get(a.ID)
	if err != nil || seen.Status != approvals.StatusApproved || seen.TokenID != got.TokenID {
		t.Fatalf("the holding proxy sees %+v, %v", seen, err)
	}

	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = svcs[i].Consume(a.ID, got.TokenID, ledger.Entry{Kind: record.KindRequest, Decision: record.Allow,
				Reason: record.Approved, ApprovalID: a.ID})
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !approvals.IsRefusal(errors2(errs)) {
		t.Errorf("two proxies consuming one approval: %v", errs)
	}

	b, c := hold(t, svcs[0]), hold(t, svcs[1])
	refs := make([]*approvals.Refusal, 2)
	for i, ap := range []*approvals.Approval{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, refs[i], errs[i] = svcs[i].Decide(ap.ID, cfoSub(cfo, ap, 6))
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || (refs[0] == nil) == (refs[1] == nil) {
		t.Errorf("two decisions with one counter at two proxies: refusals %v %v, errors %v", refs[0], refs[1], errs)
	}
	for _, r := range refs {
		if r != nil && r.Code != approvals.RefuseBadSignature {
			t.Errorf("refused with %s, want %s", r.Code, approvals.RefuseBadSignature)
		}
	}
}

// errors2 is the one error of two, nil or not.
func errors2(errs []error) error {
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}
