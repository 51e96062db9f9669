package cli

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

const exampleManifest = "../../examples/manifests/sox-financial.json"

// scenario is what playSeedScenario did, for the assertions.
type scenario struct {
	accrual, adjustment, rejected, report, override string
}

// playSeedScenario runs the seed's quarter-end story and its refusals
// through the real doors: a reconciliation, the $250k accrual approved by a
// finance manager, the $1.2M ASC 606 adjustment escalated to the CFO and the
// controller and sent with its capability token, a self-approval refused
// and the entry rejected, a 10-K dually approved, the Q4 override, the
// denylist, an unclassified call and a Saturday filing.
func playSeedScenario(t *testing.T, e *env) scenario {
	t.Helper()
	var s scenario
	now := e.clock.Now
	must := func(r reply, status int) reply {
		t.Helper()
		if r.status != status {
			t.Fatalf("want %d, got %d %s", status, r.status, r.body)
		}
		return r
	}
	approve := func(id, who, key string) {
		t.Helper()
		if code, m := e.decide(id, who, key, "approve", now()); code != 200 {
			t.Fatalf("%s approves %s: %d %v", who, id, code, m)
		}
	}
	must(e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example"), 200)

	s.accrual = pendingID(t, e.do("POST", "/api/v1/journal-entries", accrual250k,
		"X-UAPK-Justification", "AI detected revenue recognition timing difference"))
	approve(s.accrual, "fm@corp.example", "fm")
	must(e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", s.accrual), 201)

	s.adjustment = pendingID(t, e.do("POST", "/api/v1/journal-entries", adjust1200k,
		"X-UAPK-Justification", "contracts meet ASC 606 criteria before quarter end"))
	approve(s.adjustment, "cfo@corp.example", "cfo")
	approve(s.adjustment, "controller@corp.example", "controller")
	must(e.do("POST", "/api/v1/journal-entries", adjust1200k, "X-UAPK-Capability", e.capability(s.adjustment)), 201)

	s.rejected = pendingID(t, e.do("POST", "/api/v1/journal-entries", strings.Replace(accrual250k, "250000", "310000", 1),
		"X-UAPK-On-Behalf-Of", "fm2@corp.example"))
	if code, m := e.decide(s.rejected, "fm2@corp.example", "fm2", "approve", now()); code != 403 || m["reason"] != "self_approval" {
		t.Fatalf("self-approval: %d %v", code, m)
	}
	if code, m := e.decide(s.rejected, "fm@corp.example", "fm", "reject", now()); code != 200 {
		t.Fatalf("reject: %d %v", code, m)
	}
	must(e.do("POST", "/api/v1/journal-entries", strings.Replace(accrual250k, "250000", "310000", 1), "X-UAPK-Approval-Id", s.rejected), 403)

	s.report = pendingID(t, e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`))
	approve(s.report, "cfo@corp.example", "cfo")
	approve(s.report, "controller@corp.example", "controller")
	must(e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`, "X-UAPK-Approval-Id", s.report), 201)

	code, m := e.post("/v1/overrides", map[string]string{"action": "financial_report", "duration": "4h",
		"justification": "Q4 10-K filing deadline - SEC required", "requested_by": "controller@corp.example"})
	if code != 201 {
		t.Fatalf("override: %d %v", code, m)
	}
	s.override = m["id"].(string)
	approve(s.override, "cfo@corp.example", "cfo")
	var ov approvals.Approval
	e.adminGet("/v1/overrides/"+s.override, &ov)
	must(e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q4","draft":1}`, "X-UAPK-Override", ov.Token), 201)

	must(e.do("PUT", "/api/v1/audit-log/AL-1", `{"note":"x"}`), 403)
	must(e.do("GET", "/api/v1/payroll/export", ""), 403)
	e.clock.Set(time.Date(2026, 11, 21, 16, 0, 0, 0, time.UTC)) // a Saturday
	must(e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q3"}`), 403)
	e.clock.Set(businessHours)
	return s
}

// runCommand runs one cobra command in-process and returns main's exit code
// and what it printed.
func runCommand(t *testing.T, cmd *cobra.Command, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil {
		return 0, out.String()
	}
	out.WriteString(err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, out.String()
	}
	return 2, out.String()
}

func verifyCmd() *cobra.Command {
	return &cobra.Command{Use: "verify FILE.zip", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return verifyBundle(cmd, args[0]) }}
}

// exportDays is the --from/--to of a bundle holding everything written
// today (record times are the ledger's wall clock).
func exportDays() (string, string) {
	now := time.Now().UTC()
	return now.AddDate(0, 0, -1).Format(time.DateOnly), now.AddDate(0, 0, 1).Format(time.DateOnly)
}

func exportBundle(t *testing.T, e *env, out string, extra ...string) string {
	t.Helper()
	from, to := exportDays()
	args := append([]string{"--data-dir", e.opts.DataDir, "--from", from, "--to", to, "--framework", "SOX", "-o", out,
		"--principals", e.opts.Principals}, extra...)
	code, msg := runCommand(t, newExport(), args...)
	if code != 0 || !strings.HasPrefix(msg, "ok: wrote ") {
		t.Fatalf("export exit %d: %s", code, msg)
	}
	return msg
}

func TestEvidenceBundleOfTheSeedScenarioVerifies(t *testing.T) {
	e := newEnv(t)
	s := playSeedScenario(t, e)
	e.stop()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "q4.zip")
	msg := exportBundle(t, e, bundle, "--manifest", exampleManifest)
	t.Log(strings.TrimSpace(msg))

	code, out := runCommand(t, verifyCmd(), bundle)
	if code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("verify exit %d: %s", code, out)
	}
	t.Log(strings.TrimSpace(out))
	for _, want := range []string{"chain intact", "approvals", "signed statements verified", "approved releases complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q", want)
		}
	}

	// Exactly the bundle files (docs/reference.md#evidence-bundle), sorted, with fixed metadata.
	zr, err := zip.OpenReader(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Mode() != 0o644 || !f.Modified.Equal(zr.File[0].Modified) || f.Method != zip.Deflate {
			t.Errorf("%s: mode %v modified %v method %d", f.Name, f.Mode(), f.Modified, f.Method)
		}
	}
	want := []string{"SHA256SUMS", "SHA256SUMS.sig", "anchor.json", "approvals.json", "control-mapping.json", "control-mapping.md",
		"keys/gateway.pub", "keys/principals.json", "manifest.json", "records.jsonl", "report.html"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("entries\n got %v\nwant %v", names, want)
	}
	files := unzipFiles(t, bundle)

	// The control mapping names the scenario's evidence.
	var m evidence.Mapping
	if err := json.Unmarshal(files["control-mapping.json"], &m); err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	status := map[string]string{}
	for _, c := range m.Controls {
		status[c.ID] = c.Status
		for _, ev := range c.Evidence {
			counts[c.ID+"/"+ev.ID] = ev.Count
			if ev.Count > 0 && ev.Seqs == "" {
				t.Errorf("%s/%s: count %d but no seqs", c.ID, ev.ID, ev.Count)
			}
		}
	}
	for k, n := range map[string]uint64{
		"SOX-302/held": 1, "SOX-302/signed": 2, "SOX-302/released": 1, "SOX-302/override_released": 1,
		"SOX-404/held": 3, "SOX-404/signed": 3, "SOX-404/rejected": 1, "SOX-404/self_approval_refused": 1, "SOX-404/released": 2,
		"SOX-802/protected": 1, "SOX-802/config": 1,
		"ISO27001-A.9/issued": 3, "ISO27001-A.9/used": 3, "ISO27001-A.9/access_denied": 1,
		"ISO27001-A.12/business_hours": 1, "ISO27001-A.12/escalated": 1, "ISO27001-A.12/denylisted": 1,
		"ISO27001-A.12/override_requested": 1, "ISO27001-A.12/override_decided": 1, "ISO27001-A.12/override_used": 1,
	} {
		if counts[k] != n {
			t.Errorf("%s: %d records, want %d", k, counts[k], n)
		}
	}
	// The proxy archives to DATA/archive by default: each sealed segment is
	// a checkpoint record and an archive record, both in the 802 control.
	if counts["SOX-802/archive"] != counts["SOX-802/checkpoint"] {
		t.Errorf("%d archive records but %d checkpoint records", counts["SOX-802/archive"], counts["SOX-802/checkpoint"])
	}
	noSegment := "No segment was archived in this range"
	if counts["SOX-802/archive"] > 0 {
		noSegment = "| segments archived with Object Lock | " + fmt.Sprint(counts["SOX-802/archive"])
	}
	for _, id := range []string{"SOX-302", "SOX-404", "SOX-802", "ISO27001-A.9", "ISO27001-A.12"} {
		if status[id] != "evidenced" {
			t.Errorf("%s: status %q", id, status[id])
		}
	}
	md := string(files["control-mapping.md"])
	for _, w := range []string{"## SOX §302", "## SOX §404", "## SOX §802", "## ISO 27001 A.9", "## ISO 27001 A.12",
		noSegment, s.report} {
		if !strings.Contains(md, w) {
			t.Errorf("control-mapping.md lacks %q", w)
		}
	}

	// The report is one self-contained page that says what happened.
	html := string(files["report.html"])
	for _, w := range []string{"<!DOCTYPE html>", "<style>", "Evidence report", "Chain integrity", "Intact: all",
		"cfo@corp.example (cfo) approved", "controller@corp.example (controller) approved", "fm@corp.example (finance_manager)",
		"self_approval", "Q4 10-K filing deadline - SEC required", "outside_business_hours", "denylisted",
		s.accrual, s.adjustment, s.rejected, s.report, s.override} {
		if !strings.Contains(html, w) {
			t.Errorf("report.html lacks %q", w)
		}
	}
	if ext := regexp.MustCompile(`(?i)(src=|href=|@import|url\(|<script|<link)`).FindString(html); ext != "" {
		t.Errorf("report.html refers to something outside itself: %q", ext)
	}

	// approvals.json: every approval with its exact signed statements.
	var af struct {
		Approvals []evidence.ApprovalEntry `json:"approvals"`
	}
	if err := json.Unmarshal(files["approvals.json"], &af); err != nil {
		t.Fatal(err)
	}
	byID := map[string]evidence.ApprovalEntry{}
	for _, a := range af.Approvals {
		byID[a.ID] = a
	}
	adj := byID[s.adjustment]
	if adj.Status != "approved" || len(adj.Statements) != 2 || adj.Statements[0].Role != "cfo" || adj.Statements[1].Role != "controller" ||
		!strings.HasPrefix(adj.Statements[0].Statement, "uapk-approval-v1\n"+s.adjustment+"\n") || adj.Amount != "1200000" {
		t.Errorf("adjustment approval %+v", adj)
	}
	if r := byID[s.rejected]; r.Status != "rejected" || len(r.Statements) != 1 || r.Statements[0].Decision != "reject" {
		t.Errorf("rejected approval %+v", r)
	}
	if len(byID) != 5 {
		t.Errorf("%d approvals in the bundle, want 5", len(byID))
	}
	if strings.Contains(string(files["approvals.json"]), "v4.public.") {
		t.Error("approvals.json holds a bearer capability token")
	}

	// A range that ends on the archive's checkpoint is anchored by it.
	var cpSize uint64
	for _, line := range strings.Split(strings.TrimSpace(string(files["records.jsonl"])), "\n") {
		var r struct {
			Kind string `json:"kind"`
			Data struct {
				Size uint64 `json:"size"`
			} `json:"data"`
		}
		json.Unmarshal([]byte(line), &r)
		if r.Kind == "checkpoint" {
			cpSize = r.Data.Size
		}
	}
	if cpSize == 0 {
		t.Error("the archiver recorded no checkpoint: the archive anchor is not exercised end to end")
	} else {
		archived := filepath.Join(dir, "archived.zip")
		if code, msg := runCommand(t, newExport(), "--data-dir", e.opts.DataDir, "--to-seq", fmt.Sprint(cpSize), "-o", archived,
			"--principals", e.opts.Principals); code != 0 || !strings.Contains(msg, "anchor: archive checkpoint at record "+fmt.Sprint(cpSize)) {
			t.Errorf("export up to the checkpoint: %d %s", code, msg)
		}
		if code, out := runCommand(t, verifyCmd(), archived); code != 0 || !strings.Contains(out, "anchored by archive checkpoint") {
			t.Errorf("verify the archived range: %d %s", code, out)
		}
	}

	// Independent tools agree: sha256sum -c on the unzipped folder, and
	// openssl on the gateway's signature.
	unz := filepath.Join(dir, "unzipped")
	extract(t, bundle, unz)
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	c := exec.Command("sha256sum", "-c", "SHA256SUMS")
	c.Dir = unz
	if out, err := c.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 9 {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		sig, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(files["SHA256SUMS.sig"])))
		os.WriteFile(filepath.Join(unz, "sig.bin"), sig, 0o644)
		c := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "keys/gateway.pub", "-rawin", "-in", "SHA256SUMS", "-sigfile", "sig.bin")
		c.Dir = unz
		if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
			t.Errorf("openssl: %v\n%s", err, out)
		}
	}
}

func TestEvidenceExportIsDeterministic(t *testing.T) {
	e := newEnv(t)
	playSeedScenario(t, e)
	e.stop()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.zip"), filepath.Join(dir, "b.zip")
	exportBundle(t, e, a)
	time.Sleep(1100 * time.Millisecond) // a wall-clock second later changes nothing
	exportBundle(t, e, b)
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatalf("two exports of the same range differ (%d and %d bytes)", len(ab), len(bb))
	}
	// Without --manifest the files config records name are used: the
	// same manifest, the same bytes.
	if !bytes.Contains(unzipFiles(t, a)["manifest.json"], []byte(`"source": "../../examples/manifests/sox-financial.json"`)) {
		t.Errorf("manifest source: %s", unzipFiles(t, a)["manifest.json"])
	}
	// A range by seq gives the same records, and verifies.
	var anchor evidence.Anchor
	json.Unmarshal(unzipFiles(t, a)["anchor.json"], &anchor)
	bySeq := filepath.Join(dir, "seq.zip")
	code, msg := runCommand(t, newExport(), "--data-dir", e.opts.DataDir, "--from-seq", fmt.Sprint(anchor.First.Seq),
		"--to-seq", fmt.Sprint(anchor.Last.Seq), "-o", bySeq, "--principals", e.opts.Principals)
	if code != 0 {
		t.Fatalf("export by seq: %d %s", code, msg)
	}
	if !bytes.Equal(unzipFiles(t, bySeq)["records.jsonl"], unzipFiles(t, a)["records.jsonl"]) {
		t.Error("records by seq differ from records by date")
	}
	if code, out := runCommand(t, verifyCmd(), bySeq); code != 0 {
		t.Errorf("verify by-seq bundle: %s", out)
	}
}

func TestEvidenceExportRefusals(t *testing.T) {
	e := newEnv(t)
	playSeedScenario(t, e)
	dir := t.TempDir()
	from, to := exportDays()
	out := filepath.Join(dir, "x.zip")
	base := []string{"--data-dir", e.opts.DataDir, "--from", from, "--to", to, "-o", out}

	// While the proxy runs, the offline export says to ask it instead.
	if code, msg := runCommand(t, newExport(), append(base, "--principals", e.opts.Principals)...); code != 1 || !strings.Contains(msg, "POST /v1/evidence") {
		t.Errorf("export of a running proxy: %d %s", code, msg)
	}
	e.stop()
	other := filepath.Join(dir, "other.json")
	raw, _ := os.ReadFile(exampleManifest)
	os.WriteFile(other, bytes.Replace(raw, []byte(`"version": "1.0"`), []byte(`"version": "1.1"`), 1), 0o644)
	otherPrincipals := writePrincipals(t, t.TempDir()) // same people, new keys
	// The same keys, one role more: the chain says otherwise.
	pr, _ := os.ReadFile(e.opts.Principals)
	otherRoles := filepath.Join(filepath.Dir(e.opts.Principals), "principals-roles.yaml")
	os.WriteFile(otherRoles, bytes.Replace(pr, []byte("[staff_accountant]"), []byte("[staff_accountant, controller]"), 1), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a manifest that was not in force", []string{"--manifest", other, "--principals", e.opts.Principals}, 1, "was not in force"},
		{"principals that disagree with the chain's", []string{"--principals", otherRoles}, 1, "disagrees with the chain"},
		{"principals whose keys did not sign", []string{"--principals", otherPrincipals}, 1, "does not verify with their key"},
		{"unknown framework", []string{"--framework", "HIPAA"}, 2, "unknown framework"},
		{"bad date", []string{"--from", "last tuesday"}, 2, "neither a date"},
		{"nothing in the range", []string{"--from", "2001-01-01", "--to", "2001-12-31"}, 1, "no records in the range"},
		{"from after to", []string{"--from", to, "--to", from}, 2, "is not before"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := runCommand(t, newExport(), append(append([]string{}, base...), c.args...)...)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Errorf("exit %d %q, want %d containing %q", code, msg, c.code, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a refused export left %s", out)
			}
		})
	}
}

// TestEvidenceBundleTamperingIsCaught tampers with the unzipped bundle and
// zips it again. "naive" leaves SHA256SUMS as it was; "insider" also
// rewrites SHA256SUMS and signs it with the real gateway key, so that only
// the deeper checks can catch it.
func TestEvidenceBundleTamperingIsCaught(t *testing.T) {
	e := newEnv(t)
	s := playSeedScenario(t, e)
	e.stop()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.zip")
	exportBundle(t, e, bundle)
	orig := unzipFiles(t, bundle)
	gw, err := keys.LoadPrivateFile(filepath.Join(e.opts.DataDir, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(orig["records.jsonl"]), "\n")
	lines = lines[:len(lines)-1]
	lineOf := func(sub string) int {
		for i, l := range lines {
			if strings.Contains(l, sub) {
				return i
			}
		}
		t.Fatalf("no record has %q", sub)
		return -1
	}
	setRecords := func(f map[string][]byte, ls []string) { f["records.jsonl"] = []byte(strings.Join(ls, "")) }
	editApprovals := func(f map[string][]byte, edit func(list []map[string]any) []map[string]any) {
		var doc map[string]any
		if err := json.Unmarshal(f["approvals.json"], &doc); err != nil {
			t.Fatal(err)
		}
		var list []map[string]any
		for _, a := range doc["approvals"].([]any) {
			list = append(list, a.(map[string]any))
		}
		doc["approvals"] = edit(list)
		f["approvals.json"], _ = json.MarshalIndent(doc, "", "  ")
	}
	_, otherKey, _ := keys.Generate()

	type tamper struct {
		name        string
		edit        func(f map[string][]byte)
		naive       string // code+message fragment when SHA256SUMS is left alone
		insider     string // when SHA256SUMS is rewritten and re-signed with the gateway key
		insiderCode string
	}
	cases := []tamper{
		{"a changed amount in a record", func(f map[string][]byte) {
			ls := append([]string{}, lines...)
			i := lineOf(`"amount":"1200000"`)
			ls[i] = strings.Replace(ls[i], `"amount":"1200000"`, `"amount":"120000"`, 1)
			setRecords(f, ls)
		}, "records.jsonl has SHA-256", "is not an intact chain from the anchor: record", evidence.ProblemChain},
		{"a removed record", func(f map[string][]byte) {
			i := lineOf(`"reason":"self_approval"`)
			setRecords(f, append(append([]string{}, lines[:i]...), lines[i+1:]...))
		}, "records.jsonl has SHA-256", "seq_gap", evidence.ProblemChain},
		{"the last record removed", func(f map[string][]byte) {
			setRecords(f, lines[:len(lines)-1])
		}, "records.jsonl has SHA-256", "records are missing", evidence.ProblemBadAnchor},
		{"a removed approval", func(f map[string][]byte) {
			editApprovals(f, func(list []map[string]any) []map[string]any {
				var out []map[string]any
				for _, a := range list {
					if a["id"] != s.adjustment {
						out = append(out, a)
					}
				}
				return out
			})
		}, "approvals.json has SHA-256", "names approval " + s.adjustment + ", which is not in approvals.json", evidence.ProblemMissingApproval},
		{"an approval signature from a key that is not the approver's", func(f map[string][]byte) {
			editApprovals(f, func(list []map[string]any) []map[string]any {
				for _, a := range list {
					if a["id"] == s.adjustment {
						st := a["statements"].([]any)[0].(map[string]any)
						st["signature"] = base64.StdEncoding.EncodeToString(ed25519.Sign(otherKey, []byte(st["statement"].(string))))
					}
				}
				return list
			})
		}, "approvals.json has SHA-256", "does not verify with cfo@corp.example's key", evidence.ProblemApprovalSignature},
		{"a removed statement", func(f map[string][]byte) {
			editApprovals(f, func(list []map[string]any) []map[string]any {
				for _, a := range list {
					if a["id"] == s.report {
						a["statements"] = a["statements"].([]any)[:1]
					}
				}
				return list
			})
		}, "approvals.json has SHA-256", "is missing from its statements", evidence.ProblemMissingApproval},
		{"a changed SHA256SUMS", func(f map[string][]byte) {
			f["SHA256SUMS"] = bytes.Replace(f["SHA256SUMS"], []byte("  report.html"), []byte("  report.htm"), 1)
		}, "SHA256SUMS.sig does not verify", "", ""},
		{"a report.html edit", func(f map[string][]byte) {
			f["report.html"] = bytes.Replace(f["report.html"], []byte("self_approval"), []byte("approved"), 1)
		}, "report.html has SHA-256", "report.html does not say what the records say", evidence.ProblemDerived},
		{"a control-mapping.json edit", func(f map[string][]byte) {
			f["control-mapping.json"] = bytes.Replace(f["control-mapping.json"], []byte(`"evidenced"`), []byte(`"no_evidence"`), 1)
		}, "control-mapping.json has SHA-256", "control-mapping.json does not say what the records say", evidence.ProblemDerived},
		{"an extra file", func(f map[string][]byte) {
			f["keys/extra.pub"] = []byte("x")
		}, "keys/extra.pub is in the bundle but not in SHA256SUMS", "", ""},
		{"a manifest swapped for another policy", func(f map[string][]byte) {
			f["manifest.json"] = bytes.Replace(f["manifest.json"], []byte(`\"version\": \"1.0\"`), []byte(`\"version\": \"9.9\"`), 1)
		}, "manifest.json has SHA-256", "is not the manifest that was in force", evidence.ProblemBadManifest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := cloneFiles(orig)
			c.edit(f)
			naive := filepath.Join(t.TempDir(), "naive.zip")
			zipFiles(t, f, naive)
			code, out := runCommand(t, verifyCmd(), naive)
			if code != 1 || !strings.Contains(out, c.naive) {
				t.Errorf("naive tampering: exit %d %q, want 1 naming %q", code, out, c.naive)
			}
			t.Logf("as re-zipped: %s", afterPath(out))
			if c.insider == "" {
				return
			}
			resign(f, gw)
			insider := filepath.Join(t.TempDir(), "insider.zip")
			zipFiles(t, f, insider)
			code, out = runCommand(t, verifyCmd(), insider)
			if code != 1 || !strings.Contains(out, c.insider) || !strings.Contains(out, c.insiderCode+":") {
				t.Errorf("re-signed tampering: exit %d %q, want 1 with %s naming %q", code, out, c.insiderCode, c.insider)
			}
			t.Logf("with SHA256SUMS re-signed by the gateway key: %s", afterPath(out))
		})
	}
	t.Run("a bundle re-signed with another gateway key", func(t *testing.T) {
		f := cloneFiles(orig)
		f["records.jsonl"] = []byte(strings.Join(lines[:len(lines)-1], ""))
		pub, _ := keys.PublicPEM(otherKey.Public().(ed25519.PublicKey))
		f["keys/gateway.pub"] = pub
		resign(f, otherKey)
		p := filepath.Join(t.TempDir(), "forged.zip")
		zipFiles(t, f, p)
		if code, out := runCommand(t, verifyCmd(), p); code != 1 || !strings.Contains(out, "records are missing") {
			t.Errorf("exit %d %q", code, out)
		}
		// Even with the records whole, the anchor's signed head was made by
		// the real gateway key, which the forger does not have.
		f = cloneFiles(orig)
		f["keys/gateway.pub"] = pub
		resign(f, otherKey)
		zipFiles(t, f, p)
		if code, out := runCommand(t, verifyCmd(), p); code != 1 || !strings.Contains(out, "bad_checkpoint") || !strings.Contains(out, "not signed by the gateway key") {
			t.Errorf("exit %d %q", code, out)
		}
	})
	t.Run("the untouched bundle re-zipped by another tool still verifies", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "rezipped.zip")
		zipFiles(t, cloneFiles(orig), p)
		if code, out := runCommand(t, verifyCmd(), p); code != 0 {
			t.Errorf("exit %d %s", code, out)
		}
	})
	t.Run("not a zip", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "junk.zip")
		os.WriteFile(p, []byte("PK\x03\x04 nope"), 0o644)
		if code, out := runCommand(t, verifyCmd(), p); code != 1 || !strings.Contains(out, "not_a_zip") {
			t.Errorf("exit %d %q", code, out)
		}
	})
}

// TestEvidenceExportedLiveOverHTTP streams a bundle from a running proxy
// through evidence.NewHandler while agents keep calling it.
func TestEvidenceExportedLiveOverHTTP(t *testing.T) {
	e := newEnv(t)
	playSeedScenario(t, e)
	gw, err := keys.LoadPrivateFile(filepath.Join(e.opts.DataDir, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := evidence.NewLive(evidence.LiveConfig{Ledger: e.srv.Ledger(), Approvals: e.srv.Approvals(), GatewayKey: gw, Engine: e.srv.Gate().Engine})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(evidence.NewHandler(src, evidence.HandlerOptions{}))
	defer srv.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	wg.Add(1)
	go func() { // agents keep working during the export
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/reconciliations", strings.NewReader(reconciliation))
			req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				calls.Add(1)
			}
		}
	}()
	head := e.srv.Ledger().Head().Seq
	post := func(body string) *http.Response {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post(fmt.Sprintf(`{"from":1,"to":%d,"framework":"SOX"}`, head))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(stop)
	wg.Wait()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/zip" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), `attachment; filename="evidence-financial-ai-assistant-SOX-1-`) {
		t.Fatalf("POST /v1/evidence: %d %v %.200s", resp.StatusCode, resp.Header, b)
	}
	rep, err := evidence.Verify(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("live bundle: %v", err)
	}
	if rep.LastSeq != head || rep.Checkpoint.Source != "live_head" || rep.Released != 8 {
		t.Errorf("live bundle report %+v", rep)
	}
	t.Logf("live bundle: %d records, %d bytes; %d agent calls went through during the export", rep.Records, len(b), calls.Load())

	for body, want := range map[string]int{
		`{"from":"2026-01-01","to":"2026-01-02","framework":"SOX"}`: 404,
		`{"from":1,"to":5,"framework":"PCI"}`:                       400,
		`{"from":1,"to":5,"colour":"red"}`:                          400,
		`{"from":"yesterday"}`:                                      400,
	} {
		resp := post(body)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", body, resp.StatusCode, want)
		}
	}
}

func unzipFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name], err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// extract unzips with the system's unzip when there is one.
func extract(t *testing.T, zipPath, dir string) {
	t.Helper()
	if _, err := exec.LookPath("unzip"); err == nil {
		if out, err := exec.Command("unzip", "-q", "-d", dir, zipPath).CombinedOutput(); err != nil {
			t.Fatalf("unzip: %v %s", err, out)
		}
		return
	}
	for name, data := range unzipFiles(t, zipPath) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cloneFiles(f map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range f {
		out[k] = bytes.Clone(v)
	}
	return out
}

// zipFiles zips files as another tool would: its own order, its own times.
func zipFiles(t *testing.T, files map[string][]byte, path string) {
	t.Helper()
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[n])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// resign rewrites SHA256SUMS for the files as they now are and signs it.
func resign(files map[string][]byte, key ed25519.PrivateKey) {
	var names []string
	for n := range files {
		if n != "SHA256SUMS" && n != "SHA256SUMS.sig" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var sums bytes.Buffer
	for _, n := range names {
		h := sha256.Sum256(files[n])
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), n)
	}
	files["SHA256SUMS"] = sums.Bytes()
	files["SHA256SUMS.sig"] = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, sums.Bytes())) + "\n")
}

// afterPath drops the bundle's temporary path from verify's message.
func afterPath(out string) string {
	if i := strings.Index(out, "broken: "); i >= 0 {
		return out[i:]
	}
	return out
}
