package evidence_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// recordConfig appends a config record naming the fixture's principals, as
// serve writes one at every start, and returns its seq.
func (f *fixture) recordConfig() uint64 {
	f.t.Helper()
	m, err := rules.ParseManifest(f.manifest)
	if err != nil {
		f.t.Fatal(err)
	}
	list, sum, err := evidence.ConfigPrincipals(f.principals)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := record.Config{ManifestFile: manifestPath, ManifestVersion: m.Version,
		GatewayKey:     base64.StdEncoding.EncodeToString(f.gw.Public().(ed25519.PublicKey)),
		PrincipalsFile: "principals.yaml", PrincipalsSHA256: sum, Principals: list}
	rec, err := f.l.Append(context.Background(), ledger.Entry{Kind: record.KindConfig, App: m.AppID, Reason: record.Start,
		Policy: m.Hash, Data: cfg.Map()})
	if err != nil {
		f.t.Fatal(err)
	}
	return rec.Seq
}

// rezip is an insider's bundle: files changed, SHA256SUMS rewritten and
// signed with the real gateway key, so only the deeper checks can tell.
func rezip(t *testing.T, files map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var sums bytes.Buffer
	var names []string
	for name := range files {
		if name != evidence.FileSums && name != evidence.FileSumsSig {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		h := sha256.Sum256(files[name])
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), name)
	}
	files[evidence.FileSums] = sums.Bytes()
	files[evidence.FileSumsSig] = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, sums.Bytes())) + "\n")
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	names = append(names, evidence.FileSums, evidence.FileSumsSig)
	sort.Strings(names)
	for _, name := range names {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[name])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPrincipalsFromTheChainAndAFileWhereItHasNone: a chain whose first
// config record names no principals (a proxy from before they were
// recorded) and whose later one does. The later statements need no file;
// the earlier ones need one, which must then agree with what the chain
// says for the records it does cover.
func TestPrincipalsFromTheChainAndAFileWhereItHasNone(t *testing.T) {
	f := newFixture(t)
	f.playScenario()
	cfgSeq := f.recordConfig()
	id := f.call("POST", "/api/v1/journal-entries", strings.Replace(accrual, "250000", "240000", 1)).ApprovalID
	f.mustDecide(id, "fm@corp.example", "approve")
	f.expect(f.call("POST", "/api/v1/journal-entries", strings.Replace(accrual, "250000", "240000", 1), withApproval(id)), "allow")
	src := f.dirSource()

	noFile := f.options()
	noFile.Principals = nil
	if err := evidence.Export(io.Discard, src, noFile); !errors.Is(err, evidence.ErrNoPrincipals) || !strings.Contains(err.Error(), "config record 1 names no principals") {
		t.Fatalf("statements from before the chain named principals, no file: %v", err)
	}
	later := noFile
	later.Range = evidence.Range{FromSeq: cfgSeq}
	b := export(t, src, later)
	rep := verify(t, b)
	if rep.Statements != 1 {
		t.Errorf("%d statements verified in the later range, want 1", rep.Statements)
	}
	var pf evidence.PrincipalsFile
	json.Unmarshal(unzip(t, b)[evidence.FilePrincipals], &pf)
	if pf.Source != fmt.Sprintf("the chain's config record %d", cfgSeq) {
		t.Errorf("later range: source %q", pf.Source)
	}

	// The file in force fills the first span and agrees with the second.
	whole := export(t, src, f.options())
	verify(t, whole)
	files := unzip(t, whole)
	json.Unmarshal(files[evidence.FilePrincipals], &pf)
	if pf.Source != fmt.Sprintf("the chain's config record %d; principals.yaml where the chain names none", cfgSeq) {
		t.Errorf("whole range: source %q", pf.Source)
	}
	for _, p := range pf.Principals {
		if p.ConfigRecord != 0 || p.UntilRecord != 0 {
			t.Errorf("one set in force throughout, yet %s has a span %d-%d", p.ID, p.ConfigRecord, p.UntilRecord)
		}
	}

	// A file that is not what the chain says is refused, not used.
	other := newFixture(t) // same people, other keys
	o := f.options()
	o.Principals = other.principals
	if err := evidence.Export(io.Discard, src, o); !errors.Is(err, evidence.ErrPrincipalsDisagree) {
		t.Fatalf("other keys: %v", err)
	}

	// keys/principals.json must give what the range's config record put
	// in force.
	var forged evidence.PrincipalsFile
	json.Unmarshal(files[evidence.FilePrincipals], &forged)
	for i, p := range forged.Principals {
		if p.ID == "accountant@corp.example" {
			forged.Principals[i].Roles = append(p.Roles, "controller")
		}
	}
	files[evidence.FilePrincipals], _ = json.MarshalIndent(forged, "", "  ")
	bad := rezip(t, files, f.gw)
	r, err := evidence.Verify(bytes.NewReader(bad), int64(len(bad)))
	if err == nil || r.Problem.Code != evidence.ProblemBadPrincipals || r.Problem.Seq != cfgSeq {
		t.Fatalf("principals.json unlike the config record: %+v", r.Problem)
	}
}
