package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// exportArgs is an export of everything written today, without
// --principals.
func exportArgs(e *env, out string, extra ...string) []string {
	from, to := exportDays()
	return append([]string{"--data-dir", e.opts.DataDir, "--from", from, "--to", to, "--framework", "SOX", "-o", out}, extra...)
}

// configRecords returns the config records of a bundle's records.jsonl.
func configRecords(t *testing.T, files map[string][]byte) []struct {
	Seq  uint64        `json:"seq"`
	Data record.Config `json:"data"`
} {
	t.Helper()
	var out []struct {
		Seq  uint64        `json:"seq"`
		Data record.Config `json:"data"`
	}
	for _, line := range bytes.Split(bytes.TrimSpace(files["records.jsonl"]), []byte("\n")) {
		var r struct {
			Seq  uint64        `json:"seq"`
			Kind record.Kind   `json:"kind"`
			Data record.Config `json:"data"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == record.KindConfig {
			out = append(out, struct {
				Seq  uint64        `json:"seq"`
				Data record.Config `json:"data"`
			}{r.Seq, r.Data})
		}
	}
	return out
}

func principalsOf(t *testing.T, files map[string][]byte) evidence.PrincipalsFile {
	t.Helper()
	var pf evidence.PrincipalsFile
	if err := json.Unmarshal(files["keys/principals.json"], &pf); err != nil {
		t.Fatal(err)
	}
	return pf
}

// TestEvidenceExportTakesThePrincipalsFromTheChain: serve records the
// principals in force in its config record, so an export needs no
// principals file, and the one given must agree with the chain.
func TestEvidenceExportTakesThePrincipalsFromTheChain(t *testing.T) {
	e := newEnv(t)
	playSeedScenario(t, e)
	e.stop()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "chain.zip")
	if code, msg := runCommand(t, newExport(), exportArgs(e, bundle)...); code != 0 || !strings.HasPrefix(msg, "ok: wrote ") {
		t.Fatalf("export without --principals: %d %s", code, msg)
	}
	code, out := runCommand(t, verifyCmd(), bundle)
	if code != 0 || !strings.Contains(out, "signed statements verified") {
		t.Fatalf("verify: %d %s", code, out)
	}

	// The config record carries the principals file's people, sorted by
	// id, with their PEM keys and the hash of their canonical form.
	files := unzipFiles(t, bundle)
	file, err := rules.LoadPrincipals(e.opts.Principals)
	if err != nil {
		t.Fatal(err)
	}
	want, sum, err := evidence.ConfigPrincipals(file)
	if err != nil {
		t.Fatal(err)
	}
	cfgs := configRecords(t, files)
	if len(cfgs) != 1 {
		t.Fatalf("%d config records, want 1", len(cfgs))
	}
	c := cfgs[0].Data
	if c.PrincipalsFile != e.opts.Principals || c.PrincipalsSHA256 != sum || len(c.Principals) != len(want) {
		t.Fatalf("config record: file %q sha %s, %d principals; want %q %s %d", c.PrincipalsFile, c.PrincipalsSHA256, len(c.Principals), e.opts.Principals, sum, len(want))
	}
	if !slices.IsSortedFunc(c.Principals, func(a, b record.Principal) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("principals not sorted by id: %+v", c.Principals)
	}
	for i, p := range want {
		if got := c.Principals[i]; got.ID != p.ID || got.PublicKey != p.PublicKey || !slices.Equal(got.Roles, p.Roles) {
			t.Errorf("principal %d: %+v, want %+v", i, got, p)
		}
	}

	// keys/principals.json is the chain's, one entry a person.
	pf := principalsOf(t, files)
	if !strings.Contains(pf.Source, fmt.Sprintf("the chain's config record %d", cfgs[0].Seq)) {
		t.Errorf("source %q", pf.Source)
	}
	if len(pf.Principals) != len(want) {
		t.Fatalf("%d principals in the bundle, want %d", len(pf.Principals), len(want))
	}
	for i, p := range pf.Principals {
		if p.ID != want[i].ID || p.PublicKey != want[i].PublicKey || !slices.Equal(p.Roles, want[i].Roles) || p.ConfigRecord != 0 || p.UntilRecord != 0 {
			t.Errorf("bundle principal %+v, want %+v", p, want[i])
		}
	}

	// The same file given says what the chain says: the same bundle.
	given := filepath.Join(dir, "given.zip")
	if code, msg := runCommand(t, newExport(), exportArgs(e, given, "--principals", e.opts.Principals)...); code != 0 {
		t.Fatalf("export with the principals in force: %d %s", code, msg)
	}
	a, _ := os.ReadFile(bundle)
	b, _ := os.ReadFile(given)
	if !bytes.Equal(a, b) {
		t.Error("--principals agreeing with the chain changed the bundle")
	}
}

// TestEvidenceAcrossARotatedCFOKey: the CFO's key is replaced between two
// starts. The chain has two config records, and a bundle spanning both
// checks each statement against the key in force when it was signed.
func TestEvidenceAcrossARotatedCFOKey(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now
	dual := func(period, cfoKey string) string {
		t.Helper()
		body := `{"period":"` + period + `"}`
		id := pendingID(t, e.do("POST", "/api/v1/reports/10-K", body))
		for _, d := range []struct{ who, key string }{{"cfo@corp.example", cfoKey}, {"controller@corp.example", "controller"}} {
			if code, m := e.decide(id, d.who, d.key, "approve", now()); code != 200 {
				t.Fatalf("%s approves %s: %d %v", d.who, id, code, m)
			}
		}
		if r := e.do("POST", "/api/v1/reports/10-K", body, "X-UAPK-Approval-Id", id); r.status != 201 {
			t.Fatalf("release %s: %d %s", id, r.status, r.body)
		}
		return id
	}
	before := dual("2026-Q3", "cfo")
	e.stop()

	// The CFO gets a new key; everyone else keeps theirs.
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WritePair(filepath.Join(e.keyDir, "cfo2"), pub, priv); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(e.opts.Principals)
	rotated := filepath.Join(e.keyDir, "principals-rotated.yaml")
	if !bytes.Contains(old, []byte("public_key: cfo.pub\n")) {
		t.Fatalf("principals file without cfo.pub:\n%s", old)
	}
	if err := os.WriteFile(rotated, bytes.Replace(old, []byte("public_key: cfo.pub\n"), []byte("public_key: cfo2.pub\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	e.opts.Principals = rotated
	e.start()
	id := pendingID(t, e.do("POST", "/api/v1/reports/10-K", `{"period":"2026-Q4"}`))
	if code, m := e.decide(id, "cfo@corp.example", "cfo", "approve", now()); code == 200 || m["reason"] != "bad_signature" {
		t.Fatalf("the old CFO key after the rotation: %d %v", code, m)
	}
	e.stop()
	e.start()
	after := dual("2026-Q1", "cfo2")
	e.stop()

	dir := t.TempDir()
	bundle := filepath.Join(dir, "both.zip")
	if code, msg := runCommand(t, newExport(), exportArgs(e, bundle)...); code != 0 {
		t.Fatalf("export across the rotation: %d %s", code, msg)
	}
	code, out := runCommand(t, verifyCmd(), bundle)
	if code != 0 || !strings.Contains(out, "replaced at a later config record") {
		t.Fatalf("verify across the rotation: %d %s", code, out)
	}
	t.Log(strings.TrimSpace(out))
	if !strings.Contains(out, " 4 signed statements verified") {
		t.Errorf("want the four statements of %s and %s verified: %s", before, after, out)
	}

	// Three starts: three config records, the first with the CFO's first
	// key, the others with the second.
	files := unzipFiles(t, bundle)
	cfgs := configRecords(t, files)
	if len(cfgs) != 3 {
		t.Fatalf("%d config records, want 3", len(cfgs))
	}
	key := func(c record.Config) string {
		for _, p := range c.Principals {
			if p.ID == "cfo@corp.example" {
				return p.PublicKey
			}
		}
		return ""
	}
	first, second := cfgs[0].Data, cfgs[1].Data
	if first.PrincipalsSHA256 == second.PrincipalsSHA256 || key(first) == key(second) || key(first) == "" ||
		second.PrincipalsSHA256 != cfgs[2].Data.PrincipalsSHA256 || second.PrincipalsFile != rotated {
		t.Fatalf("config records do not show the rotation: %+v", cfgs)
	}
	pem2, _ := keys.PublicPEM(pub)
	if key(second) != string(pem2) {
		t.Errorf("second config record's CFO key is not the new one")
	}

	// keys/principals.json: the CFO twice, each key with its span; the
	// others once, from the first config record on.
	pf := principalsOf(t, files)
	t.Logf("keys/principals.json: source %q, %d entries", pf.Source, len(pf.Principals))
	var cfo []evidence.PrincipalEntry
	for _, p := range pf.Principals {
		if p.ID == "cfo@corp.example" {
			cfo = append(cfo, p)
		} else if p.ConfigRecord != cfgs[0].Seq || p.UntilRecord != 0 {
			t.Errorf("%s: in force %d-%d, want from %d on", p.ID, p.ConfigRecord, p.UntilRecord, cfgs[0].Seq)
		}
	}
	if len(cfo) != 2 || cfo[0].PublicKey != key(first) || cfo[0].ConfigRecord != cfgs[0].Seq || cfo[0].UntilRecord != cfgs[1].Seq ||
		cfo[1].PublicKey != key(second) || cfo[1].ConfigRecord != cfgs[1].Seq || cfo[1].UntilRecord != 0 {
		t.Fatalf("CFO entries %+v, config records %d %d", cfo, cfgs[0].Seq, cfgs[1].Seq)
	}

	// An insider who drops the old key from the bundle (and re-signs it
	// with the gateway key) leaves the first statements unverifiable.
	gw, err := keys.LoadPrivateFile(filepath.Join(e.opts.DataDir, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	forged := cloneFiles(files)
	pf.Principals = slices.DeleteFunc(slices.Clone(pf.Principals), func(p evidence.PrincipalEntry) bool { return p.PublicKey == key(first) })
	for i := range pf.Principals {
		pf.Principals[i].ConfigRecord, pf.Principals[i].UntilRecord = 0, 0
	}
	forged["keys/principals.json"], _ = json.MarshalIndent(pf, "", "  ")
	resign(forged, gw)
	bad := filepath.Join(dir, "forged.zip")
	zipFiles(t, forged, bad)
	if code, out := runCommand(t, verifyCmd(), bad); code != 1 || !strings.Contains(out, "approval_signature") {
		t.Errorf("a bundle without the old key: %d %s", code, out)
	}

	// --principals names the new key only: it disagrees with the chain
	// for the records before the rotation, and agrees after it.
	refused := filepath.Join(dir, "refused.zip")
	if code, msg := runCommand(t, newExport(), exportArgs(e, refused, "--principals", rotated)...); code != 1 ||
		!strings.Contains(msg, "disagrees with the chain") || !strings.Contains(msg, fmt.Sprintf("config record %d", cfgs[0].Seq)) {
		t.Errorf("the rotated file for both spans: %d %s", code, msg)
	}
	if _, err := os.Stat(refused); err == nil {
		t.Error("a refused export left its bundle")
	}
	later := filepath.Join(dir, "later.zip")
	if code, msg := runCommand(t, newExport(), "--data-dir", e.opts.DataDir, "--from-seq", fmt.Sprint(cfgs[1].Seq), "-o", later,
		"--principals", rotated); code != 0 {
		t.Fatalf("the rotated file after the rotation: %d %s", code, msg)
	}
	if code, out := runCommand(t, verifyCmd(), later); code != 0 {
		t.Errorf("verify after the rotation: %s", out)
	}
}
