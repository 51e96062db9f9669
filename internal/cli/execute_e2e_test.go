package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
)

// withExecute serves the example manifest with an execute template on
// journal_entry and account_reconciliation (the file is edited as text:
// its action order is its match order).
func withExecute(o *serveOptions) {
	b, err := os.ReadFile(o.Manifest)
	if err != nil {
		panic(err)
	}
	for desc, x := range map[string]string{
		`"description": "Create or modify journal entries",`: `{"method": "POST", "path": "/api/v1/journal-entries"}`,
		`"description": "Reconcile GL accounts",`:            `{"method": "POST", "path": "/api/v1/reconciliations"}`,
	} {
		if !bytes.Contains(b, []byte(desc)) {
			panic("the example manifest lost " + desc)
		}
		b = bytes.Replace(b, []byte(desc), []byte(desc+` "execute": `+x+`,`), 1)
	}
	p := filepath.Join(filepath.Dir(o.Principals), "manifest-execute.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		panic(err)
	}
	o.Manifest = p
}

// pyExecute is the seed SDK's client.execute, in plain Python: it posts
// the call and prints the HTTP status and the answer.
const pyExecute = `import json, sys, urllib.request, urllib.error
url, call, approval = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
req = urllib.request.Request(url + "/v1/execute", data=json.dumps(call).encode(), method="POST",
    headers={"Content-Type": "application/json"})
if approval:
    req.add_header("X-UAPK-Approval-Id", approval)
try:
    r = urllib.request.urlopen(req, timeout=20)
except urllib.error.HTTPError as e:
    r = e
ans = json.loads(r.read())
print(r.status, json.dumps(ans))
`

func pythonExecute(t *testing.T, sidecar string, call map[string]any, approvalID string) (int, map[string]any) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test: %v", err)
	}
	b, _ := json.Marshal(call)
	out, err := exec.Command(py, "-c", pyExecute, sidecar, string(b), approvalID).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var status int
	code, rest, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if err := json.Unmarshal([]byte(code), &status); err != nil {
		t.Fatalf("python printed %s", out)
	}
	var ans map[string]any
	if err := json.Unmarshal([]byte(rest), &ans); err != nil {
		t.Fatalf("python printed %s", out)
	}
	return status, ans
}

// The seed's $1.2M entry through client.execute: held for the cfo and the
// controller, approved, executed on the retry with the approval id, once.
func TestExecuteOverCapEntryApprovedThenRetried(t *testing.T) {
	e := newEnv(t, withExecute)
	call := map[string]any{
		"action":        "journal_entry",
		"parameters":    map[string]any{"account": "4000-Revenue", "amount": 1200000, "description": "ASC 606 revenue recognition adjustment"},
		"justification": "AI detected revenue recognition timing difference",
	}
	status, ans := pythonExecute(t, e.sidecar, call, "")
	id, _ := ans["approval_id"].(string)
	if status != 202 || ans["status"] != "PENDING_APPROVAL" || ans["reason"] != "amount_over_cap" || !strings.HasPrefix(id, "apr_") {
		t.Fatalf("%d %v", status, ans)
	}
	// Held with the digest an equivalent plain call gets: the body is the
	// parameters, members in name order.
	a := e.approval(id)
	body := `{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}`
	if want := gate.Digest("POST", e.opts.Upstream+"/api/v1/journal-entries", []byte(body)); a.Digest != want {
		t.Errorf("digest %s, the plain call's %s", a.Digest, want)
	}
	rec := e.record(uint64(ans["record"].(float64)))
	if rec.Data["via"] != "execute" || rec.Data["justification"] != call["justification"] || rec.Data["amount"] != "1200000" {
		t.Errorf("record %+v", rec.Data)
	}
	for _, who := range []string{"cfo", "controller"} {
		if code, m := e.decide(id, who+"@corp.example", who, "approve", e.clock.Now()); code != 200 {
			t.Fatalf("%s: %d %v", who, code, m)
		}
	}
	// The same call again, parameters in another order, with the approval id.
	call["parameters"] = map[string]any{"description": "ASC 606 revenue recognition adjustment", "amount": 1200000, "account": "4000-Revenue"}
	status, ans = pythonExecute(t, e.sidecar, call, id)
	res, _ := ans["result"].(map[string]any)
	if status != 200 || ans["status"] != "EXECUTED" || ans["reason"] != "approved" || ans["approval_id"] != id || res["status"] != float64(201) {
		t.Fatalf("retry: %d %v", status, ans)
	}
	if entry, _ := res["body"].(map[string]any); entry["amount"] != "1200000" || !strings.HasPrefix(entry["id"].(string), "JE-") {
		t.Errorf("result %v", res)
	}
	if status, ans = pythonExecute(t, e.sidecar, call, id); status != 409 || ans["status"] != "DENIED" || ans["reason"] != "consumed" {
		t.Fatalf("second retry: %d %v", status, ans)
	}
	if st := e.erp.Stats(); st.Total != 1 || st.LeakedUAPKHeaders != 0 {
		t.Fatalf("ERP %+v", st)
	}
}

// With hold, the execute call waits on its connection like a plain call
// and is executed the moment it is approved.
func TestExecuteHeldCallRunsWhenApproved(t *testing.T) {
	e := newEnv(t, withExecute, withHold("2m"))
	done := make(chan reply, 1)
	go func() {
		done <- e.do("POST", "/v1/execute", `{"action":"journal_entry","parameters":{"account":"4000-Revenue","credit":250000,"debit":0}}`,
			"X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}()
	var list struct{ Approvals []approvals.Approval }
	waitFor(t, func() bool { e.adminGet("/v1/approvals?status=pending", &list); return len(list.Approvals) > 0 })
	id := list.Approvals[0].ID
	if code, m := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
		t.Fatalf("approve: %d %v", code, m)
	}
	r := <-done
	ans := r.json(t)
	if r.status != 200 || ans["status"] != "EXECUTED" || ans["approval_id"] != id || ans["reason"] != "approved" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if st := e.erp.Stats(); st.Total != 1 {
		t.Fatalf("ERP %+v", st)
	}
	if a := e.approval(id); a.OnBehalfOf != "accountant@corp.example" {
		t.Errorf("the caller of the execute call is not the approval's: %q", a.OnBehalfOf)
	}
}
