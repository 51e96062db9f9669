package cli

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// The seed document's code blocks, as sdk/python/examples holds them, run
// in real Python with uapk_sdk installed by pip into a fresh venv, against
// a real serve and the mock ERP. Only the URL, the key path, the dates and
// the page's e-mail placeholder are replaced; what a block takes from its
// surroundings comes from a preamble.

const sdkDir = "../../sdk/python"

// withSDKExecute serves the example manifest with execute templates on the
// actions the seed's blocks name (the file is edited as text: its action
// order is its match order).
func withSDKExecute(o *serveOptions) {
	b, err := os.ReadFile(o.Manifest)
	if err != nil {
		panic(err)
	}
	for desc, x := range map[string]string{
		`"description": "Create or modify journal entries",`:             `{"method": "POST", "path": "/api/v1/journal-entries"}`,
		`"description": "Generate financial statements or SEC filings",`: `{"method": "POST", "path": "/api/v1/reports/{kind}"}`,
		`"description": "Reconcile GL accounts",`:                        `{"method": "POST", "path": "/api/v1/reconciliations"}`,
	} {
		if !bytes.Contains(b, []byte(desc)) {
			panic("the example manifest lost " + desc)
		}
		b = bytes.Replace(b, []byte(desc), []byte(desc+` "execute": `+x+`,`), 1)
	}
	p := filepath.Join(filepath.Dir(o.Principals), "manifest-sdk.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		panic(err)
	}
	o.Manifest = p
}

// sdkPython makes a venv and installs the SDK into it the way a user does,
// offline: pip install --no-index ./sdk/python.
func sdkPython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test: %v", err)
	}
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(py, "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Fatalf("venv: %v\n%s", err, out)
	}
	src, _ := filepath.Abs(sdkDir)
	// The source is copied so the build leaves nothing in the worktree.
	tree := filepath.Join(t.TempDir(), "sdk")
	if out, err := exec.Command("cp", "-r", src, tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	pip := exec.Command(filepath.Join(venv, "bin", "pip"), "install", "--no-index", "--disable-pip-version-check", "-q", tree)
	pip.Env = append(os.Environ(), "PIP_NO_INPUT=1")
	if out, err := pip.CombinedOutput(); err != nil {
		t.Fatalf("pip install --no-index ./sdk/python: %v\n%s", err, out)
	}
	return filepath.Join(venv, "bin", "python")
}

// seedBlock reads a block and fills in the test's values for the seed's.
func seedBlock(t *testing.T, name string, fill ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sdkDir, "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(fill); i += 2 {
		if !strings.Contains(s, fill[i]) {
			t.Fatalf("%s has no %q to fill in", name, fill[i])
		}
		s = strings.ReplaceAll(s, fill[i], fill[i+1])
	}
	return s
}

// runPython runs script, calling onLine for each line it prints as it
// prints it (so the test can approve while Python waits), and returns
// every line.
func runPython(t *testing.T, py, script string, env []string, onLine func(string)) []string {
	t.Helper()
	cmd := exec.Command(py, "-u", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if onLine != nil {
			onLine(sc.Text())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python: %v\nstdout:\n%s\nstderr:\n%s", err, strings.Join(lines, "\n"), stderr.String())
	}
	return lines
}

func TestSDKSeedSamples(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WritePair(filepath.Join(dir, "ai-assistant"), pub, priv); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "ai-assistant.key")
	// The app's key is in the principals file: every request it makes must
	// carry its signature, which the SDK makes from private_key_path.
	e := newEnv(t, withSDKExecute, withAppKey("financial-ai-assistant", filepath.Join(dir, "ai-assistant.pub")))
	py := sdkPython(t)
	env := []string{"UAPK_GATEWAY_URL=" + e.sidecar, "UAPK_ADMIN_URL=" + e.admin, "UAPK_ADMIN_TOKEN=" + e.token}
	first := seedBlock(t, "seed_journal_entry.py",
		"https://gateway.your-company.com", e.sidecar, "/secure/ai-assistant.pem", keyPath)
	idRE := regexp.MustCompile(`^Journal entry requires approval: (apr_[0-9a-zA-Z_-]+)$`)

	t.Run("journal_entry", func(t *testing.T) {
		script := first + `
client.poll_interval = 0.05
approval = client.wait_for_approval(response.approval_id, timeout=30)
print("decided:", approval.status)
again = client.retry(response)
print("retry:", again.status, again.reason, again.approval_id == response.approval_id, again.result["status"], again.result["body"]["id"][:3])
print("twice:", client.retry(response).status, client.retry(response).reason)
`
		var id string
		lines := runPython(t, py, script, env, func(line string) {
			if m := idRE.FindStringSubmatch(line); m != nil {
				id = m[1]
				if st := e.erp.Stats(); st.Total != 0 {
					t.Errorf("the ERP saw %d requests before the approval", st.Total)
				}
				if a := e.approval(id); a.Action != "journal_entry" || a.Reason != "approval_required" || a.Justification != "AI detected revenue recognition timing difference" {
					t.Errorf("approval %+v", a)
				}
				if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
					t.Errorf("approve: %d %v", code, m)
				}
			}
		})
		want := []string{"Journal entry requires approval: " + id, "decided: approved", "retry: EXECUTED approved True 201 JE-", "twice: DENIED consumed"}
		if id == "" || strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("printed:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if st := e.erp.Stats(); st.Total != 1 || st.LeakedUAPKHeaders != 0 {
			t.Fatalf("ERP %+v", st)
		}
	})

	t.Run("financial_ai", func(t *testing.T) {
		before := e.erp.Stats().Total
		script := "import os\nfrom uapk_sdk import UAPKClient\n" +
			seedBlock(t, "seed_financial_ai.py", "/etc/uapk/ai-key.pem", keyPath) + `
class Txn:
    def __init__(self, account, amount, description):
        self.account, self.amount, self.description = account, amount, description
    def to_dict(self):
        return {"account": self.account, "amount": self.amount, "description": self.description}
FinancialAI.log_action = lambda self, r: print("logged:", r.status, r.reason, ",".join(sorted(r.required_roles)))
FinancialAI().process_month_end_accruals([
    Txn("4000-Revenue", 1200000, "ASC 606 revenue recognition adjustment"),
    Txn("4000-Revenue", 250000, "Q3 product sales accrual"),
])
`
		lines := runPython(t, py, script, env, nil)
		want := []string{"logged: PENDING_APPROVAL amount_over_cap cfo,controller", "logged: PENDING_APPROVAL approval_required finance_manager"}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("printed:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if st := e.erp.Stats(); st.Total != before {
			t.Fatalf("the ERP saw a held entry: %+v", st)
		}
	})

	t.Run("override", func(t *testing.T) {
		before := e.erp.Stats().Total
		script := first + "report_data = {\"kind\": \"10-K\", \"period\": \"2026-Q4\"}\n" +
			seedBlock(t, "seed_override.py", "[email protected]", "controller@corp.example") + `
print("first:", response.status, response.reason, response.override_pending, override_token.id)
client.poll_interval = 0.05
print("override:", client.wait_for_approval(override_token, timeout=30).status)
response = client.execute(action="financial_report", parameters=report_data, override_token=override_token)
print("then:", response.status, response.reason, response.result["status"], response.result["body"]["kind"])
`
		ovRE := regexp.MustCompile(`^first: PENDING_APPROVAL dual_approval_required True (apr_\S+)$`)
		var ov string
		lines := runPython(t, py, script, env, func(line string) {
			if m := ovRE.FindStringSubmatch(line); m != nil {
				ov = m[1]
				if code, m := e.decide(ov, "cfo@corp.example", "cfo", "approve", e.clock.Now()); code != 200 {
					t.Errorf("approve override: %d %v", code, m)
				}
			}
		})
		if ov == "" || len(lines) != 4 || lines[2] != "override: approved" || lines[3] != "then: EXECUTED override 201 10-K" {
			t.Fatalf("printed:\n%s", strings.Join(lines, "\n"))
		}
		// The journal entry of the first block (pending) and the report sent
		// before the override was approved (pending): only the one report.
		if st := e.erp.Stats(); st.Total != before+1 {
			t.Fatalf("ERP %+v", st)
		}
	})

	t.Run("auto_approved", func(t *testing.T) {
		script := `from uapk_sdk import UAPKClient
import os
client = UAPKClient(os.environ["UAPK_GATEWAY_URL"], "financial-ai-assistant", ` + "\"" + keyPath + "\"" + `, on_behalf_of="accountant@corp.example")
r = client.execute("account_reconciliation", {"account": "1010-Cash", "period": "2026-Q3", "statement_balance": "48210.55"})
print(r.status, r.reason, r.approval_id, r.result["status"], r.result["body"]["account"])
try:
    client.execute("no_such_action", {})
except Exception as e:
    print(type(e).__name__, e.http_status, e.error)
`
		lines := runPython(t, py, script, env, nil)
		want := []string{"EXECUTED auto_approve None 200 1010-Cash", "UAPKRequestError 400 bad_request"}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("printed:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("evidence", func(t *testing.T) {
		from, to := exportDays()
		out := filepath.Join(t.TempDir(), "bundle.zip")
		script := first + seedBlock(t, "seed_evidence.py", "2024-01-01", from, "2024-12-31", to) + `
print(evidence.filename.startswith("evidence-financial-ai-assistant-SOX-"), evidence.data[:2] == b"PK")
evidence.save(` + "\"" + out + "\"" + `)
`
		lines := runPython(t, py, script, env, nil)
		if len(lines) != 2 || lines[1] != "True True" {
			t.Fatalf("printed:\n%s", strings.Join(lines, "\n"))
		}
		if code, msg := runCommand(t, verifyCmd(), out); code != 0 {
			t.Fatalf("verify: %d %s", code, msg)
		}
	})

	t.Run("app signatures", func(t *testing.T) {
		// Every execute call the samples made was signed, and said so.
		n := 0
		for _, r := range e.records() {
			if r.Kind == "request" && r.Data["via"] == "execute" {
				n++
				if r.Data["app_verified"] != true {
					t.Errorf("record %d: an execute call of the samples not app_verified: %v", r.Seq, r.Data)
				}
			}
		}
		if n == 0 {
			t.Fatal("no execute records")
		}
		body := `{"action":"journal_entry","parameters":{"account":"4000-Revenue","credit":250000}}`
		before := e.erp.Stats().Total
		// Unsigned, from an app whose key is listed: 401, recorded.
		if r := e.do("POST", "/v1/execute", body); r.status != 401 || r.json(t)["reason"] != "unauthenticated_app" {
			t.Fatalf("unsigned: %d %s", r.status, r.body)
		}
		sign := func(ts, nonce, target, b string, k ed25519.PrivateKey) []string {
			msg := gate.AppSignatureMessage("financial-ai-assistant", "POST", target, ts, nonce, []byte(b))
			return []string{gate.HeaderTimestamp, ts, gate.HeaderNonce, nonce, gate.HeaderSignature, base64.StdEncoding.EncodeToString(ed25519.Sign(k, msg))}
		}
		now := strconv.FormatInt(time.Now().Unix(), 10)
		good := sign(now, "0123456789abcdef0123456789abcdef", "/v1/execute", body, priv)
		if r := e.do("POST", "/v1/execute", body, good...); r.status != 202 {
			t.Fatalf("signed: %d %s", r.status, r.body)
		}
		_, other, _ := ed25519.GenerateKey(nil)
		stale := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
		for name, h := range map[string][]string{
			"a replayed nonce":     good,
			"another key":          sign(now, "1123456789abcdef0123456789abcdef", "/v1/execute", body, other),
			"another body":         sign(now, "2123456789abcdef0123456789abcdef", "/v1/execute", strings.Replace(body, "250000", "25000", 1), priv),
			"another target":       sign(now, "3123456789abcdef0123456789abcdef", "/v1/execute?x=1", body, priv),
			"a stale timestamp":    sign(stale, "4123456789abcdef0123456789abcdef", "/v1/execute", body, priv),
			"a nonce of bad shape": sign(now, "short", "/v1/execute", body, priv),
		} {
			if r := e.do("POST", "/v1/execute", body, h...); r.status != 401 || r.json(t)["reason"] != "unauthenticated_app" {
				t.Errorf("%s: %d %s", name, r.status, r.body)
			}
		}
		if got := e.erp.Stats().Total - before; got != 0 {
			t.Errorf("the ERP saw %d of these", got)
		}
	})
}

// withAppKey lists app's public key (a PEM file) under apps: in the
// principals file: its requests must then be signed.
func withAppKey(app, pubFile string) func(*serveOptions) {
	return func(o *serveOptions) {
		f, err := os.OpenFile(o.Principals, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		if _, err := f.WriteString("apps:\n  - id: " + app + "\n    public_key: " + pubFile + "\n"); err != nil {
			panic(err)
		}
	}
}
