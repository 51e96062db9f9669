package evidence_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
)

const (
	cfo        = "cfo@corp.example"
	controller = "controller@corp.example"
	fm         = "fm@corp.example"
)

// passkeyScene is a chain with three decisions: fm approves a journal
// entry with an EdDSA passkey (its credential id sent padded); the cfo (Ed25519, the CLI) and the
// controller (an ES256 passkey) approve an adjustment.
type passkeyScene struct {
	f              *fixture
	aus            map[string]*passkeytest.Authenticator
	accrual        string // fm's EdDSA passkey
	adjust         string // cfo's Ed25519 signature, controller's ES256 passkey
	configRecorded bool
}

func newPasskeyScene(t *testing.T, recordConfig bool) *passkeyScene {
	t.Helper()
	s := &passkeyScene{aus: map[string]*passkeytest.Authenticator{controller: passkeytest.New("ES256"), fm: passkeytest.New("EdDSA")}}
	s.f = newPasskeyFixture(t, s.aus)
	f := s.f
	if recordConfig {
		f.recordConfig() // the chain names the principals, passkeys with them
		s.configRecorded = true
	}
	s.accrual = f.call("POST", "/api/v1/journal-entries", accrual).ApprovalID
	// This client sends the credential id padded; the principals file
	// has it without.
	padded := func(a *passkey.Assertion) { a.CredentialID += strings.Repeat("=", (4-len(a.CredentialID)%4)%4) }
	if ref := f.decideWithPasskey(s.accrual, fm, "approve", padded); ref != nil {
		t.Fatalf("fm's passkey: %v", ref)
	}
	f.expect(f.call("POST", "/api/v1/journal-entries", accrual, withApproval(s.accrual)), "allow")
	s.adjust = f.call("POST", "/api/v1/journal-entries", adjust).ApprovalID
	f.mustDecide(s.adjust, cfo, "approve")
	if ref := f.decideWithPasskey(s.adjust, controller, "approve"); ref != nil {
		t.Fatalf("controller's passkey: %v", ref)
	}
	a, _ := f.store.Get(s.adjust)
	f.expect(f.call("POST", "/api/v1/journal-entries", adjust, withToken(a.Token)), "allow")
	return s
}

// bundleApprovals is approvals.json, read and written back by tests.
type bundleApprovals struct {
	evidence.ApprovalsHeader
	Approvals []evidence.ApprovalEntry `json:"approvals"`
}

func readApprovals(t *testing.T, files map[string][]byte) bundleApprovals {
	t.Helper()
	var af bundleApprovals
	if err := json.Unmarshal(files[evidence.FileApprovals], &af); err != nil {
		t.Fatal(err)
	}
	return af
}

// statement returns the statement approver made on approval id.
func (af *bundleApprovals) statement(t *testing.T, id, approver string) *evidence.Statement {
	t.Helper()
	for i := range af.Approvals {
		if af.Approvals[i].ID != id {
			continue
		}
		for j := range af.Approvals[i].Statements {
			if s := &af.Approvals[i].Statements[j]; s.Approver == approver {
				return s
			}
		}
	}
	t.Fatalf("no statement by %s on %s", approver, id)
	return nil
}

func TestPasskeyDecisionsVerify(t *testing.T) {
	s := newPasskeyScene(t, true)
	src := s.f.dirSource()
	chainOnly := s.f.options()
	chainOnly.Principals = nil
	for name, o := range map[string]evidence.Options{"principals from the chain": chainOnly, "principals file given too": s.f.options()} {
		t.Run(name, func(t *testing.T) {
			b := export(t, src, o)
			rep := verify(t, b)
			if rep.Statements != 3 || rep.Approvals != 2 {
				t.Errorf("report %+v", rep)
			}
			files := unzip(t, b)
			af := readApprovals(t, files)
			if st := af.statement(t, s.adjust, cfo); st.WebAuthn != nil || st.Signature == "" {
				t.Errorf("the cfo's Ed25519 statement: %+v", st)
			}
			for _, c := range []struct{ id, who string }{{s.accrual, fm}, {s.adjust, controller}} {
				st := af.statement(t, c.id, c.who)
				w := st.WebAuthn
				if st.Signature != "" || w == nil || w.RPID != deskRP.ID || w.Origin != deskRP.Origin || strings.TrimRight(w.CredentialID, "=") != s.aus[c.who].CredentialID() {
					t.Errorf("%s's passkey statement: %+v %+v", c.who, st, w)
				}
				if strings.HasSuffix(w.CredentialID, "=") {
					t.Errorf("%s's credential id %q is not in its one spelling (sent padded, kept unpadded)", c.who, w.CredentialID)
				}
			}
			var pf evidence.PrincipalsFile
			json.Unmarshal(files[evidence.FilePrincipals], &pf)
			for _, p := range pf.Principals {
				au := s.aus[p.ID]
				want := []record.PasskeyCredential(nil)
				if au != nil {
					want = []record.PasskeyCredential{{CredentialID: au.CredentialID(), PublicKey: au.PublicKeyPEM()}}
				}
				if len(p.WebAuthn) != len(want) || len(want) == 1 && p.WebAuthn[0] != want[0] {
					t.Errorf("keys/principals.json: %s's passkeys %+v, want %+v", p.ID, p.WebAuthn, want)
				}
			}
			if !bytes.Contains(files[evidence.FileReport], []byte(controller+" (controller) approved with a passkey")) {
				t.Error("report.html does not say the controller approved with a passkey")
			}
		})
	}
}

// TestPasskeyTamperingIsCaught: an insider edits one member of a passkey
// statement and signs the sums again with the gateway key; the assertion
// checks catch each edit, naming the approval and the record.
func TestPasskeyTamperingIsCaught(t *testing.T) {
	s := newPasskeyScene(t, true)
	src := s.f.dirSource()
	o := s.f.options()
	o.Principals = nil
	b := export(t, src, o)
	other := passkeytest.New("ES256")
	cases := []struct {
		name string
		edit func(st *evidence.Statement, au *passkeytest.Authenticator)
		code string
		why  string // in the message
	}{
		{"authenticator_data", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			ad := mustB64URL(t, st.WebAuthn.AuthenticatorData)
			ad[36]++ // another counter
			st.WebAuthn.AuthenticatorData = passkey.Encode(ad)
		}, evidence.ProblemApprovalSignature, "signature does not verify"},
		{"client_data_json", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			cd := mustB64URL(t, st.WebAuthn.ClientDataJSON)
			st.WebAuthn.ClientDataJSON = passkey.Encode(append(cd, ' '))
		}, evidence.ProblemApprovalSignature, "signature does not verify"},
		{"signature", func(st *evidence.Statement, au *passkeytest.Authenticator) {
			st.WebAuthn.Signature = au.Assert(deskRP, passkey.Challenge([]byte("another statement"))).Signature
		}, evidence.ProblemApprovalSignature, "signature does not verify"},
		{"rp_id", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.WebAuthn.RPID = "evil.example"
		}, evidence.ProblemApprovalSignature, "another relying party"},
		{"origin", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.WebAuthn.Origin = "https://evil.example"
		}, evidence.ProblemApprovalSignature, "origin mismatch"},
		{"credential_id", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.WebAuthn.CredentialID = other.CredentialID()
		}, evidence.ProblemApprovalSignature, "none of the approver's passkeys"},
		{"an Ed25519 signature beside the assertion", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.Signature = "AAAA"
		}, evidence.ProblemApprovalSignature, "carries both"},
		{"no relying party", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.WebAuthn.RPID, st.WebAuthn.Origin = "", ""
		}, evidence.ProblemApprovalSignature, "names no rp_id or origin"},
		{"no assertion at all", func(st *evidence.Statement, _ *passkeytest.Authenticator) {
			st.WebAuthn = nil
		}, evidence.ProblemApprovalSignature, "signature on"},
		// The approver's own passkey, asked on another site for this very
		// statement: the assertion verifies for the relying party it
		// names, but the record says the proxy required another.
		{"another relying party, the approver's own passkey", func(st *evidence.Statement, au *passkeytest.Authenticator) {
			rp := passkey.RP{ID: "other.example", Origin: "https://other.example"}
			a := au.Assert(rp, passkey.Challenge([]byte(st.Statement)))
			st.WebAuthn = &record.WebAuthn{CredentialID: a.CredentialID, AuthenticatorData: a.AuthenticatorData,
				ClientDataJSON: a.ClientDataJSON, Signature: a.Signature, RPID: rp.ID, Origin: rp.Origin}
		}, evidence.ProblemApprovalMismatch, "differs from the one the record keeps"},
	}
	for _, who := range []struct{ id, approver string }{{s.accrual, fm}, {s.adjust, controller}} {
		for _, c := range cases {
			t.Run(who.approver+"/"+c.name, func(t *testing.T) {
				files := unzip(t, b)
				af := readApprovals(t, files)
				st := af.statement(t, who.id, who.approver)
				c.edit(st, s.aus[who.approver])
				var err error
				if files[evidence.FileApprovals], err = json.MarshalIndent(af, "", "  "); err != nil {
					t.Fatal(err)
				}
				bad := rezip(t, files, s.f.gw)
				rep, err := evidence.Verify(bytes.NewReader(bad), int64(len(bad)))
				if err == nil {
					t.Fatal("the tampered bundle verifies")
				}
				if p := rep.Problem; p.Code != c.code || p.Seq != st.Record || !strings.Contains(p.Message, who.id) || !strings.Contains(p.Message, c.why) {
					t.Fatalf("problem %+v, want %s at record %d naming %s: %s", p, c.code, st.Record, who.id, c.why)
				}
			})
		}
	}
}

// TestExportRefusesPasskeyDecisionsThatDoNotVerify: principals given for
// a chain that names none must hold the passkeys the decisions were made
// with.
func TestExportRefusesPasskeyDecisionsThatDoNotVerify(t *testing.T) {
	s := newPasskeyScene(t, false)
	src := s.f.dirSource()
	verify(t, export(t, src, s.f.options()))
	sameID := map[string]*passkeytest.Authenticator{}
	for id, au := range s.aus {
		k := passkeytest.New("ES256")
		k.CredID = au.CredID
		sameID[id] = k
	}
	cases := []struct {
		name string
		aus  map[string]*passkeytest.Authenticator
		want string
	}{
		{"the same credential ids, other keys", sameID, "assertion signature invalid"},
		{"other credentials", map[string]*passkeytest.Authenticator{controller: passkeytest.New("ES256"), fm: passkeytest.New("EdDSA")}, "none of the approver's passkeys"},
		{"no passkeys", nil, "none of the approver's passkeys"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := s.f.options()
			o.Principals = newPasskeyFixture(t, c.aus).principals // fm's passkey statement, the first, is checked first
			err := evidence.Export(io.Discard, src, o)
			if !errors.Is(err, evidence.ErrPrincipalsMismatch) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), s.accrual) {
				t.Fatalf("err %v, want ErrPrincipalsMismatch on %s: %s", err, s.accrual, c.want)
			}
		})
	}
}

func mustB64URL(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPasskeyStatementChecksWithOpenSSL runs the script of
// docs/reference.md#checking-a-passkey-decision, as written there, on each
// passkey statement of a bundle, and on one edited.
func TestPasskeyStatementChecksWithOpenSSL(t *testing.T) {
	for _, tool := range []string{"sh", "jq", "basenc", "xxd", "sha256sum", "head", "cut", "tr", "grep", "cmp", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the documented commands: %v", tool, err)
		}
	}
	script := docBlock(t, "### Checking a passkey decision")
	s := newPasskeyScene(t, true)
	src := s.f.dirSource()
	o := s.f.options()
	o.Principals = nil
	files := unzip(t, export(t, src, o))
	af := readApprovals(t, files)
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "check-passkey.sh"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(id string, rec uint64) (string, error) {
		cmd := exec.Command("sh", "check-passkey.sh")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "A="+id, "R="+strconv.FormatUint(rec, 10))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, c := range []struct{ id, who, verified string }{
		{s.accrual, fm, "Signature Verified Successfully"}, // Ed25519
		{s.adjust, controller, "Verified OK"},              // ES256
	} {
		st := af.statement(t, c.id, c.who)
		out, err := run(c.id, st.Record)
		if err != nil || !strings.Contains(out, c.verified) || !strings.Contains(out, "at record "+strconv.FormatUint(st.Record, 10)+": OK") {
			t.Errorf("%s's statement: %v\n%s", c.who, err, out)
		}
		t.Logf("%s's statement:\n%s", c.who, out)
	}

	// Each check fails on its own edit.
	edits := []struct {
		name string
		edit func(w *record.WebAuthn, st *evidence.Statement)
		want string
	}{
		{"rp_id", func(w *record.WebAuthn, _ *evidence.Statement) { w.RPID = "evil.example" }, "another relying party than evil.example"},
		{"origin", func(w *record.WebAuthn, _ *evidence.Statement) { w.Origin = "https://evil.example" }, "not an assertion made on https://evil.example"},
		{"statement", func(_ *record.WebAuthn, st *evidence.Statement) { st.Statement += "x" }, "not the text its fields give"},
		{"challenge", func(w *record.WebAuthn, _ *evidence.Statement) {
			w.ClientDataJSON = s.aus[controller].Assert(deskRP, passkey.Challenge([]byte("another"))).ClientDataJSON
		}, "not the statement's SHA-256"},
		{"credential", func(w *record.WebAuthn, _ *evidence.Statement) { w.CredentialID = passkeytest.New("").CredentialID() }, "none of the approver's passkeys"},
		{"signature", func(w *record.WebAuthn, _ *evidence.Statement) {
			w.Signature = s.aus[controller].Assert(deskRP, passkey.Challenge([]byte("another"))).Signature
		}, "Verification failure"},
		{"another relying party, signed", func(w *record.WebAuthn, st *evidence.Statement) {
			rp := passkey.RP{ID: "other.example", Origin: "https://other.example"}
			a := s.aus[controller].Assert(rp, passkey.Challenge([]byte(st.Statement)))
			*w = record.WebAuthn{CredentialID: a.CredentialID, AuthenticatorData: a.AuthenticatorData,
				ClientDataJSON: a.ClientDataJSON, Signature: a.Signature, RPID: rp.ID, Origin: rp.Origin}
		}, "keeps another assertion or relying party"},
	}
	orig := files[evidence.FileApprovals]
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			af := readApprovals(t, files)
			st := af.statement(t, s.adjust, controller)
			e.edit(st.WebAuthn, st)
			js, _ := json.MarshalIndent(af, "", "  ")
			os.WriteFile(filepath.Join(dir, evidence.FileApprovals), js, 0o644)
			t.Cleanup(func() { os.WriteFile(filepath.Join(dir, evidence.FileApprovals), orig, 0o644) })
			out, err := run(s.adjust, st.Record)
			if err == nil || !strings.Contains(out, e.want) {
				t.Errorf("%v\n%s\nwant a failure saying %q", err, out, e.want)
			}
			t.Logf("%s", out)
		})
	}
}

// docBlock returns the first ```sh block after heading in docs/reference.md.
func docBlock(t *testing.T, heading string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/reference.md has no %q", heading)
	}
	_, rest, ok = strings.Cut(rest, "\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 {
		t.Fatalf("no sh block under %q", heading)
	}
	return block + "\n"
}
