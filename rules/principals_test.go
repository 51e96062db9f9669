package rules

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/passkey"
)

func TestLoadPrincipals(t *testing.T) {
	ps, err := LoadPrincipals("testdata/principals/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps.All() {
		ids = append(ids, p.ID)
	}
	if want := []string{"cfo@corp.example", "controller@corp.example", "fm@corp.example", "staff@corp.example", "agent-operator@corp.example"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %v", ids)
	}
	tests := []struct {
		id      string
		role    string
		canSign bool
	}{
		{"cfo@corp.example", "cfo", true},
		{"controller@corp.example", "controller", true},
		{"fm@corp.example", "senior_accountant", true},
		{"staff@corp.example", "staff_accountant", false},
	}
	for _, tt := range tests {
		p, ok := ps.Get(tt.id)
		if !ok {
			t.Errorf("Get(%q) not found", tt.id)
			continue
		}
		if !p.HasRole(tt.role) || p.HasRole("nobody") {
			t.Errorf("%s roles %v", tt.id, p.Roles)
		}
		if p.CanSign() != tt.canSign || (p.PublicKeyPEM() != "") != tt.canSign {
			t.Errorf("%s CanSign %v", tt.id, p.CanSign())
		}
	}
	if _, ok := ps.Get("nobody@corp.example"); ok {
		t.Error("found an unknown principal")
	}
	// An id in any other spelling is nobody's: Get never folds.
	for _, id := range []string{"CFO@Corp.Example", "CFO@corp.example", "cfo@CORP.EXAMPLE", " cfo@corp.example", "cfo@corp.example."} {
		if p, ok := ps.Get(id); ok {
			t.Errorf("Get(%q) found %s", id, p.ID)
		}
	}
	// The key read from the file is the one in it.
	cfo, _ := ps.Get("cfo@corp.example")
	pub, _ := os.ReadFile("testdata/principals/cfo.pub")
	if cfo.PublicKeyPEM() != string(pub) {
		t.Errorf("PublicKeyPEM:\n%s\nwant\n%s", cfo.PublicKeyPEM(), pub)
	}
	var nilSet *Principals
	if _, ok := nilSet.Get("x"); ok || nilSet.All() != nil {
		t.Error("nil Principals")
	}
}

func TestPrincipalsProblems(t *testing.T) {
	_, err := LoadPrincipals("testdata/principals/invalid.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("%T %v", err, err)
	}
	dir := filepath.Join("testdata", "principals")
	want := []Problem{
		{"principals[1].id", `id "CFO@corp.example" has upper case; write it "cfo@corp.example" (an id is printable ASCII in lower case, so that each person has one spelling)`},
		{"principals[2].public_key", "public key file " + filepath.Join(dir, "rsa.pub") + ": is an RSA key, want Ed25519"},
		{"principals[3].public_key", "public key file " + filepath.Join(dir, "ec.pub") + ": is an ECDSA key, want Ed25519"},
		{"principals[4].public_key", "public key file " + filepath.Join(dir, "private-key.pem") + ": is a private key (PRIVATE KEY); give the public key (PREFIX.pub from keygen) and keep the private key secret"},
		{"principals[5].public_key", "public key file: open " + filepath.Join(dir, "no-such-file.pub") + ": no such file or directory"},
		{"principals[6].public_key", `inline public_key: no PEM block found (want a PKIX "PUBLIC KEY" PEM, as written by keygen to PREFIX.pub)`},
		{"principals[7].public_key", "same public key as principals[0].public_key: one key must not stand for two principals"},
		{"principals[8].roles", "must name at least one role"},
		{"principals[9].id", `id "has space@corp.example" has a space or control character`},
		{"principals[9].roles[0]", `role "Auditor" must match [a-z0-9_.-]{1,64}`},
		{"principals[9].roles[2]", `duplicate role "auditor"`},
		{"principals[9].roles[3]", "empty role name"},
		{"principals[9].team", `unknown key "team"`},
		{"principals[10].id", "required"},
		{"principals[11].roles", "required"},
		{"principals[12].id", `duplicate id "cfo@corp.example" (first at principals[0].id)`},
		{"principals[13].id", `id "jİm@corp.example" is not ASCII (an id is printable ASCII in lower case, so that each person has one spelling)`},
		{"principals[14].public_key", `principal "zero@corp.example": inline public_key: unsafe Ed25519 public key: a small-order point, with which anybody can make signatures that verify; make a key pair with keygen`},
	}
	if !reflect.DeepEqual(ve.Problems, want) {
		t.Errorf("problems:\n%v\nwant:\n%v", ve, (&ValidationError{Problems: want}))
	}
}

func TestParsePrincipals(t *testing.T) {
	pub, err := os.ReadFile("testdata/principals/cfo.pub")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata/principals/controller.pub")
	tests := []struct {
		name, doc string
		want      []string // problem paths; nil when valid
	}{
		{"inline PEM in JSON", `{"principals":[{"id":"a@x","roles":["cfo"],"public_key":` + jsonString(string(pub)) + `}]}`, nil},
		{"absolute path", "principals:\n- {id: a@x, roles: [cfo], public_key: " + abs + "}\n", nil},
		{"no key", "principals:\n- {id: a@x, roles: [cfo]}\n", nil},
		{"empty", "", []string{""}},
		{"no principals key", "people: []\n", []string{"people", "principals"}},
		{"empty list", "principals: []\n", []string{"principals"}},
		{"not a list", "principals: {id: x}\n", []string{"principals"}},
		{"entry not an object", "principals: [cfo]\n", []string{"principals[0]"}},
		{"empty key string", "principals:\n- {id: a@x, roles: [cfo], public_key: ''}\n", []string{"principals[0].public_key"}},
		{"two PEM blocks", "principals:\n- id: a@x\n  roles: [cfo]\n  public_key: |\n" + indent(string(pub)+string(pub)) + "\n", []string{"principals[0].public_key"}},
		{"wrong PEM type", "principals:\n- id: a@x\n  roles: [cfo]\n  public_key: |\n" + indent(strings.ReplaceAll(string(pub), "PUBLIC KEY", "CERTIFICATE")) + "\n", []string{"principals[0].public_key"}},
		{"id with newline", `{"principals":[{"id":"a@x\nb","roles":["cfo"]}]}`, []string{"principals[0].id"}},
		{"roles not a list", "principals:\n- {id: a@x, roles: cfo}\n", []string{"principals[0].roles"}},
		// One person, one id: every id in canonical form, so ids compare as bytes.
		{"id in upper case", "principals:\n- {id: Jim@corp.example, roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id with dotted capital I (ToLower gives jim)", "principals:\n- {id: \"j\u0130m@corp.example\", roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id with Kelvin sign (ToLower gives k)", "principals:\n- {id: \"\u212Aim@corp.example\", roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id with long s (EqualFold with s)", "principals:\n- {id: \"\u017Fam@corp.example\", roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id with a no-break space", "principals:\n- {id: \"jim\u00A0@corp.example\", roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id with DEL", `{"principals":[{"id":"jim\u007f@corp.example","roles":["cfo"]}]}`, []string{"principals[0].id"}},
		{"jim, then jİm", "principals:\n- {id: jim@corp.example, roles: [cfo]}\n- {id: \"j\u0130m@corp.example\", roles: [controller]}\n", []string{"principals[1].id"}},
		{"id of 257 bytes", "principals:\n- {id: " + strings.Repeat("a", 257) + ", roles: [cfo]}\n", []string{"principals[0].id"}},
		{"id of 256 bytes", "principals:\n- {id: " + strings.Repeat("a", 256) + ", roles: [cfo]}\n", nil},
		{"id with every printable ASCII but upper case", "principals:\n- {id: '!\"#$%&''()*+,-./0123456789:;<=>?@[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~', roles: [cfo]}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := ParsePrincipals([]byte(tt.doc), "testdata/principals")
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(ps.All()) != 1 {
					t.Errorf("%d principals", len(ps.All()))
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v", err, err)
			}
			if got := problemPaths(ve.Problems); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("paths %q, want %q\n%v", got, tt.want, err)
			}
		})
	}
}

func jsonString(s string) string {
	r := strings.NewReplacer("\n", `\n`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ")
}

// TestPasskeyKeysRefused: a passkey key anybody can sign for (the
// identity point) is refused, and one key never stands for two principals,
// whether as two passkeys or as one's CLI key and another's passkey.
func TestPasskeyKeysRefused(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPEM, _ := passkey.PublicKeyPEM(ec.Public())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPEM, _ := passkey.PublicKeyPEM(edPub)
	identity := make([]byte, 32)
	identity[0] = 1 // the identity point: y = 1
	smallPEM, _ := passkey.PublicKeyPEM(ed25519.PublicKey(identity))
	entry := func(id, cred, key string) map[string]any {
		return map[string]any{"id": id, "roles": []string{"cfo"}, "webauthn": []map[string]string{{"credential_id": cred, "public_key": key}}}
	}
	cases := []struct {
		name string
		ps   []any
		want string
	}{
		{"small-order passkey", []any{entry("cfo@corp.example", "AAAA", smallPEM)}, "small-order"},
		{"one passkey key, two principals", []any{entry("cfo@corp.example", "AAAA", ecPEM), entry("ctl@corp.example", "BBBB", ecPEM)}, "same public key"},
		{"a CLI key as another's passkey", []any{
			map[string]any{"id": "cfo@corp.example", "roles": []string{"cfo"}, "public_key": edPEM},
			entry("ctl@corp.example", "BBBB", edPEM)}, "same public key"},
	}
	for _, c := range cases {
		data, _ := json.Marshal(map[string]any{"principals": c.ps})
		if _, err := ParsePrincipals(data, t.TempDir()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestPrincipalsApps: apps: lists each app's signing key; every problem
// is named, and a key stands for one app or principal only.
func TestPrincipalsApps(t *testing.T) {
	pub := func() string {
		k, _, _ := ed25519.GenerateKey(nil)
		der, _ := x509.MarshalPKIXPublicKey(k)
		return strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "\n", "\\n")
	}
	person, app := pub(), pub()
	good := `{"principals":[{"id":"cfo@corp.example","roles":["cfo"],"public_key":"` + person + `"}],` +
		`"apps":[{"id":"financial-ai-assistant","public_key":"` + app + `"}]}`
	ps, err := ParsePrincipals([]byte(good), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := ps.AppKey("financial-ai-assistant"); !ok || len(k) != ed25519.PublicKeySize {
		t.Fatalf("app key: %v %v", k, ok)
	}
	if _, ok := ps.AppKey("other-app"); ok {
		t.Fatal("an app not listed has a key")
	}
	bad := `{"principals":[{"id":"cfo@corp.example","roles":["cfo"],"public_key":"` + person + `"}],"apps":[` +
		`{"id":"a b","public_key":"` + pub() + `"},` +
		`{"id":"x","public_key":"` + app + `"},{"id":"x","public_key":"` + pub() + `"},` +
		`{"id":"y","public_key":"` + person + `"},` +
		`{"id":"z"},{"public_key":"` + pub() + `"},{"id":"w","public_key":"` + pub() + `","roles":["cfo"]}]}`
	_, err = ParsePrincipals([]byte(bad), t.TempDir())
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%v", err)
	}
	got := ve.Error()
	for _, want := range []string{`apps[0].id: app id "a b"`, `apps[2].id: app "x" listed twice`,
		"apps[3].public_key: same public key as a principal's public_key", "apps[4].public_key: required",
		"apps[5].id: required", `apps[6].roles: unknown key "roles"`} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
