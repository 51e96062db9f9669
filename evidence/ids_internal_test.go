package evidence

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The verifier compares principal ids as the proxy does: canonical ids
// (rules.CheckID) as bytes, the requester's ids in ASCII lower case.

const jimDotted = "j\u0130m@corp.example" // strings.ToLower makes it jim@corp.example

// principalsVerifier reads keys/principals.json holding entries, as Verify does.
func principalsVerifier(t *testing.T, entries []PrincipalEntry) (*bundleVerifier, *Problem) {
	t.Helper()
	data, err := json.Marshal(PrincipalsFile{Format: "uapk-principals/1", Source: "test", Principals: entries})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, _ := w.Create(FilePrincipals)
	f.Write(data)
	w.Close()
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	v := &bundleVerifier{files: map[string]*zip.File{}}
	for _, zf := range zr.File {
		v.files[zf.Name] = zf
	}
	return v, v.readPrincipals()
}

func pubPEM(t *testing.T, k ed25519.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestVerifyPrincipalIDs(t *testing.T) {
	pub, _, _ := keys.Generate()
	cases := []struct {
		name string
		e    PrincipalEntry
		ok   bool
	}{
		{"canonical", PrincipalEntry{ID: "jim@corp.example", Roles: []string{"cfo"}, PublicKey: pubPEM(t, pub)}, true},
		{"upper case", PrincipalEntry{ID: "Jim@corp.example", Roles: []string{"cfo"}}, false},
		{"dotted capital I", PrincipalEntry{ID: jimDotted, Roles: []string{"cfo"}}, false},
		{"space", PrincipalEntry{ID: "jim @corp.example", Roles: []string{"cfo"}}, false},
		{"all-zero public key", PrincipalEntry{ID: "zero@corp.example", Roles: []string{"cfo"}, PublicKey: pubPEM(t, make([]byte, 32))}, false},
		{"a passkey", PrincipalEntry{ID: "jim@corp.example", Roles: []string{"cfo"},
			WebAuthn: []record.PasskeyCredential{{CredentialID: "AQID", PublicKey: pubPEM(t, pub)}}}, true},
		{"a passkey credential id not base64url", PrincipalEntry{ID: "jim@corp.example", Roles: []string{"cfo"},
			WebAuthn: []record.PasskeyCredential{{CredentialID: "AQ+/", PublicKey: pubPEM(t, pub)}}}, false},
		{"a passkey without a key", PrincipalEntry{ID: "jim@corp.example", Roles: []string{"cfo"},
			WebAuthn: []record.PasskeyCredential{{CredentialID: "AQID"}}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, p := principalsVerifier(t, []PrincipalEntry{c.e})
			if c.ok != (p == nil) {
				t.Fatalf("problem %v, want ok = %v", p, c.ok)
			}
			if p != nil && p.Code != ProblemBadPrincipals {
				t.Errorf("problem %s, want %s", p.Code, ProblemBadPrincipals)
			}
		})
	}
}

// TestVerifyStatementByNonCanonicalID: a statement naming jimDotted,
// signed with jim's key, is nobody's. (The old verifier folded it to jim.)
func TestVerifyStatementByNonCanonicalID(t *testing.T) {
	pub, priv, _ := keys.Generate()
	v, p := principalsVerifier(t, []PrincipalEntry{{ID: "jim@corp.example", Roles: []string{"cfo", "controller"}, PublicKey: pubPEM(t, pub)}})
	if p != nil {
		t.Fatal(p)
	}
	at := time.Date(2026, 11, 17, 16, 0, 0, 0, time.UTC).Format(time.RFC3339)
	digest := requestDigest("POST", "http://erp.example.com/api/v1/reports/10-K", nil)
	for _, who := range []string{jimDotted, "JIM@corp.example", "jim@corp.example"} {
		t.Run(who, func(t *testing.T) {
			text := string(approvals.Statement("apr_x", digest, approvals.Approve, who, at))
			a := &ApprovalEntry{ID: "apr_x", Kind: approvals.KindRequest, Method: "POST", URL: "http://erp.example.com/api/v1/reports/10-K", Digest: digest,
				Statements: []Statement{{Approver: who, Role: "cfo", Decision: approvals.Approve, SignedAt: at, Record: 5, Statement: text,
					Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(text)))}}}
			p := v.checkApproval(a)
			if who == "jim@corp.example" {
				if p != nil {
					t.Fatalf("jim's own statement: %v", p)
				}
				return
			}
			if p == nil || p.Code != ProblemApprovalSignature {
				t.Fatalf("problem %v, want %s", p, ProblemApprovalSignature)
			}
		})
	}
}

func TestVerifyCompletenessComparesRequesters(t *testing.T) {
	v := &bundleVerifier{principals: map[string][]*principal{}}
	for _, p := range []*principal{
		{id: "jim@corp.example", roles: []string{"cfo", "controller"}},
		{id: "cfo@corp.example", roles: []string{"cfo"}},
		{id: "controller@corp.example", roles: []string{"controller"}},
		{id: "financial-ai-assistant", roles: []string{"cfo"}},
	} {
		v.principals[p.id] = []*principal{p}
	}
	approved := func(onBehalfOf, app string, by ...string) *ApprovalEntry {
		a := &ApprovalEntry{ID: "apr_x", Kind: approvals.KindRequest, Status: approvals.StatusApproved, App: app, OnBehalfOf: onBehalfOf,
			Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}}
		roles := []string{"cfo", "controller"}
		for i, who := range by {
			a.Statements = append(a.Statements, Statement{Approver: who, Role: roles[i], Decision: approvals.Approve})
		}
		return a
	}
	cases := []struct {
		name string
		a    *ApprovalEntry
		want string // in the problem; "" for complete
	}{
		{"two others", approved("accountant@corp.example", "financial-ai-assistant", "cfo@corp.example", "controller@corp.example"), ""},
		{"jim for his own request", approved("jim@corp.example", "financial-ai-assistant", "jim@corp.example", "controller@corp.example"), "self-approval"},
		{"jim for Jim@Corp.Example's request", approved("Jim@Corp.Example", "financial-ai-assistant", "jim@corp.example", "controller@corp.example"), "self-approval"},
		{"the app, its id in another case", approved("", "Financial-AI-Assistant", "financial-ai-assistant", "controller@corp.example"), "self-approval"},
		// Fullwidth j: ToLower leaves it, so the old verifier let jim count.
		{"jim for \uFF4Aim's request", approved("\uFF4Aim@corp.example", "financial-ai-assistant", "jim@corp.example", "controller@corp.example"), "no principal id"},
		{"others for j\u0130m's request", approved(jimDotted, "financial-ai-assistant", "cfo@corp.example", "controller@corp.example"), "no principal id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := v.completeness(c.a)
			if c.want == "" {
				if p != nil {
					t.Fatalf("incomplete: %v", p)
				}
				return
			}
			if p == nil || p.Code != ProblemIncompleteApproval || !strings.Contains(p.Message, c.want) {
				t.Fatalf("problem %v, want %s saying %q", p, ProblemIncompleteApproval, c.want)
			}
		})
	}
}

// TestReportShowsBidiControls: a right-to-left override in what an agent
// wrote reaches report.html as visible text, never as the character.
func TestReportShowsBidiControls(t *testing.T) {
	in := []byte("<td>memo \u202e0001 and \u2066x\u2069</td>")
	got := string(showBidi(in))
	if strings.ContainsFunc(got, isBidi) || !strings.Contains(got, "[U+202E]0001") || !strings.Contains(got, "[U+2066]x[U+2069]") {
		t.Errorf("showBidi = %q", got)
	}
	plain := []byte("<td>Zürich €1,200,000</td>")
	if string(showBidi(plain)) != string(plain) {
		t.Error("text without bidi controls changed")
	}
}
