package approvals_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Fixed instants: the approval is created at t0 and decided at now, one hour
// later, well inside its 24h ttl.
var (
	t0  = time.Date(2026, 9, 30, 13, 5, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
)

const (
	testID = "apr_2v3rnlhoyzq6jbvyt5mwx7kdfa"
	// testDigest is the request digest (docs/reference.md#request-digest) of
	// POST https://erp.example.com/api/v1/journal-entries with body {"amount":250000}:
	//   printf 'POST\nhttps://erp.example.com/api/v1/journal-entries\n%s' \
	//     "$(printf '{"amount":250000}' | sha256sum | cut -d' ' -f1)" | sha256sum
	testDigest = "fad508d1225aceb3591ca45aa87040223cacc4379c545e93efdeeaf9284982e7"
	// otherDigest is the digest of another request (same URL, body {"amount":1}).
	otherDigest = "d0e7204eb95c89620a6ad761aefb29a169137e86c579fd977664fcf316d7b5a4"
	otherID     = "apr_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	agentApp    = "finance-agent"
	analyst     = "analyst@corp.example"
	jim         = "jim@corp.example" // holds cfo and controller
)

// person is one entry of a test principals file.
type person struct {
	id    string
	roles []string
	noKey bool // in the file, but cannot sign
}

// The cast. Ids are canonical; tests spell them otherwise on purpose, to
// see such spellings refused.
var cast = []person{
	{id: "cfo@corp.example", roles: []string{"cfo"}},
	{id: "cfo2@corp.example", roles: []string{"cfo"}},
	{id: "controller@corp.example", roles: []string{"controller"}},
	{id: "both@corp.example", roles: []string{"cfo", "controller"}},
	{id: "cfo-fm@corp.example", roles: []string{"cfo", "finance_manager"}},
	{id: "fm@corp.example", roles: []string{"finance_manager"}},
	{id: "clerk@corp.example", roles: []string{"ap_clerk"}},
	{id: "keyless@corp.example", roles: []string{"cfo"}, noKey: true},
	// People who are also the requester: the caller, the app, the override requester.
	{id: analyst, roles: []string{"cfo", "controller"}},
	{id: agentApp, roles: []string{"cfo", "controller"}},
	{id: "ops-lead@corp.example", roles: []string{"cfo"}},
	{id: jim, roles: []string{"cfo", "controller"}},
}

// keyOf derives a person's Ed25519 key from their id, so that signatures,
// and the fuzz corpus built from them, are the same on every run. Any
// spelling of an id that lower-cases to it gets the same key: signed("j\u0130m...")
// is jim signing a statement that names j\u0130m, as in the attack.
func keyOf(id string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("uapk-proxy approvals test key: " + strings.ToLower(id)))
	return ed25519.NewKeyFromSeed(seed[:])
}

// principals parses a principals file for people, through the same parser
// the proxy uses, so the tests see exactly what serve would.
func principals(tb testing.TB, people []person) *rules.Principals {
	tb.Helper()
	type entry struct {
		ID        string   `json:"id"`
		Roles     []string `json:"roles"`
		PublicKey string   `json:"public_key,omitempty"`
	}
	var file struct {
		Principals []entry `json:"principals"`
	}
	for _, p := range people {
		e := entry{ID: p.id, Roles: p.roles}
		if !p.noKey {
			der, err := x509.MarshalPKIXPublicKey(keyOf(p.id).Public())
			if err != nil {
				tb.Fatal(err)
			}
			e.PublicKey = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}
		file.Principals = append(file.Principals, e)
	}
	data, err := json.Marshal(file)
	if err != nil {
		tb.Fatal(err)
	}
	ps, err := rules.ParsePrincipals(data, tb.TempDir())
	if err != nil {
		tb.Fatalf("principals: %v", err)
	}
	return ps
}

// Requirements as the rules engine builds them.
var (
	requireCFOorController = rules.Requirement{Policy: rules.RequireApproval, Slots: [][]string{{"cfo", "controller"}}}
	requireCFO             = rules.Requirement{Policy: rules.RequireApproval, Slots: [][]string{{"cfo"}}}
	dualCFOController      = rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}
	tripleCFOControllerFM  = rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}, {"finance_manager"}}}
)

// pending returns a fresh pending request approval needing req. Each call
// builds a new value, so a test can build the expected one independently.
func pending(req rules.Requirement) *approvals.Approval {
	return &approvals.Approval{
		ID:            testID,
		Kind:          approvals.KindRequest,
		Status:        approvals.StatusPending,
		Action:        "post_journal_entry",
		App:           agentApp,
		Method:        "POST",
		URL:           "https://erp.example.com/api/v1/journal-entries",
		Body:          `{"amount":250000}`,
		Justification: "quarter-end accrual",
		OnBehalfOf:    analyst,
		Digest:        testDigest,
		Amount:        "250000",
		Reason:        rules.ReasonApprovalRequired,
		Requirement:   req,
		RequiredRoles: req.Roles(),
		CreatedAt:     t0,
		ExpiresAt:     t0.Add(24 * time.Hour),
		RequestRecord: 7,
	}
}

// signed is a well-formed submission by who, signed with who's key over
// the approval's statement at signedAt.
func signed(who, decision string, signedAt time.Time) approvals.Submission {
	at := signedAt.UTC().Format(time.RFC3339Nano)
	return approvals.Submission{
		Approver:  who,
		Decision:  decision,
		Reason:    "reviewed the support",
		SignedAt:  at,
		Signature: approvals.Sign(keyOf(who), testID, testDigest, decision, who, at),
	}
}

// rolesOf maps each decision's approver to the role it was counted for.
func rolesOf(a *approvals.Approval) map[string]string {
	m := map[string]string{}
	for _, d := range a.Decisions {
		m[d.Approver] = d.Role
	}
	return m
}
