package cli

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/examples/codehost-mock/codehost"
)

const aiCodingManifest = "../../examples/manifests/ai-coding-sox.json"

// writeCodingPrincipals makes the AI-coding walkthrough's people
// (docs/ai-coding.md): alice, a developer who also reviews other people's
// code, bob, a functional reviewer, carol, a security reviewer, and dave, a
// developer who never signs.
func writeCodingPrincipals(t testing.TB, dir string) string {
	t.Helper()
	return writePeople(t, dir, "coding-principals.yaml", []person{
		{"alice@corp.example", "[developer, functional_reviewer]", "alice"},
		{"bob@corp.example", "[functional_reviewer]", "bob"},
		{"carol@corp.example", "[security_reviewer]", "carol"},
		{"dave@corp.example", "[developer]", ""},
	})
}

// newCodingEnv is a real serve with the AI-coding manifest in front of the
// mock code host.
func newCodingEnv(t *testing.T) (*env, *codehost.Server) {
	t.Helper()
	host := codehost.New()
	hostSrv := httptest.NewServer(host)
	t.Cleanup(hostSrv.Close)
	e := newEnv(t, func(o *serveOptions) {
		o.Manifest = aiCodingManifest
		o.Principals = writeCodingPrincipals(t, filepath.Dir(o.Principals))
		o.Upstream = hostSrv.URL
	})
	return e, host
}

// seqsIn expands a control mapping's seq runs ("3, 7-9").
func seqsIn(t *testing.T, runs string) []uint64 {
	t.Helper()
	var out []uint64
	for _, part := range strings.Split(runs, ", ") {
		if part == "" {
			continue
		}
		lo, hi, isRun := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			t.Fatalf("seqs %q: %v", runs, err)
		}
		b := a
		if isRun {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil {
				t.Fatalf("seqs %q: %v", runs, err)
			}
		}
		for s := a; s <= b; s++ {
			out = append(out, s)
		}
	}
	return out
}

// TestAICodingWalkthrough is docs/ai-coding.md, call by call: the coding
// agent opens a branch and a pull request freely; a push to main is denied
// and never reaches the host; the merge into payments is held for a
// functional and a security reviewer; one reviewer leaves it held, the
// author is refused self_approval, the second reviewer completes it; the
// merge goes through once; and the evidence bundle's change-management
// control cites the reviewers' records.
func TestAICodingWalkthrough(t *testing.T) {
	e, host := newCodingEnv(t)
	now := e.clock.Now()
	alice := []string{"X-UAPK-On-Behalf-Of", "alice@corp.example"}
	const headSHA = "00000000000000000000000000000000000000aa"

	expect := func(r reply, status int, decision, action string) {
		t.Helper()
		if r.status != status || r.header.Get("X-UAPK-Decision") != decision || r.header.Get("X-UAPK-Action") != action && action != "" {
			t.Fatalf("got %d %s/%s %s, want %d %s/%s", r.status, r.header.Get("X-UAPK-Decision"), r.header.Get("X-UAPK-Action"),
				r.body, status, decision, action)
		}
	}
	denied := func(r reply, reason, action string) {
		t.Helper()
		expect(r, 403, "deny", "")
		if m := r.json(t); m["reason"] != reason || m["action"] != action {
			t.Fatalf("denied %v, want %s/%s", m, reason, action)
		}
	}

	// 1. Branch, push to it, pull request: auto-approved and forwarded.
	expect(e.do("POST", "/repos/acme/payments/git/refs", `{"ref":"refs/heads/fix-fx-rounding"}`, alice...), 201, "allow", "branch_create")
	expect(e.do("PATCH", "/repos/acme/payments/git/refs/heads/fix-fx-rounding", `{"sha":"`+headSHA+`"}`, alice...), 200, "allow", "branch_push")
	pr := e.do("POST", "/repos/acme/payments/pulls",
		`{"title":"Round FX conversions half-even","head":"fix-fx-rounding","base":"main","author":"alice@corp.example"}`, alice...)
	expect(pr, 201, "allow", "pr_open")
	if m := pr.json(t); m["number"] != float64(1) || m["user"].(map[string]any)["login"] != "alice@corp.example" {
		t.Fatalf("pull request %v", m)
	}
	expect(e.do("GET", "/repos/acme/payments/pulls/1", ""), 200, "allow", "repo_read")

	// 2. Protected branches and merges without a pull request: denied, never at the host.
	denied(e.do("PATCH", "/repos/acme/payments/git/refs/heads/main", `{"sha":"`+headSHA+`","force":true}`, alice...), "denylisted", "push_protected")
	denied(e.do("PATCH", "/repos/acme/payments/git/refs/heads/release/2026.11", `{"sha":"`+headSHA+`"}`, alice...), "denylisted", "push_protected")
	denied(e.do("POST", "/repos/acme/payments/merges", `{"base":"main","head":"fix-fx-rounding"}`, alice...), "denylisted", "merge_direct")
	denied(e.do("PUT", "/repos/acme/payments/contents/src/fx.go", `{"message":"x","content":"eA==","branch":"main"}`, alice...), "unclassified", "")
	// A merge must name the developer it is made for: that is who cannot approve it.
	denied(e.do("PUT", "/repos/acme/payments/pulls/1/merge", `{"merge_method":"squash","sha":"`+headSHA+`"}`), "role_not_allowed", "merge_payments")
	if st := host.Stats(); st.ProtectedPushes != 0 || st.Merges != 0 || st.Total != 4 || st.LeakedUAPKHeaders != 0 {
		t.Fatalf("host after the denials: %+v", st)
	}

	// 3. The merge into payments is held for two reviewers.
	merge := `{"merge_method":"squash","sha":"` + headSHA + `"}`
	held := e.do("PUT", "/repos/acme/payments/pulls/1/merge", merge, append(alice, "X-UAPK-Justification", "PR #1 fixes FX rounding")...)
	expect(held, 202, "pending", "merge_payments")
	id := pendingID(t, held)
	if m := held.json(t); fmt.Sprint(m["required_roles"]) != "[functional_reviewer security_reviewer]" {
		t.Fatalf("held %v", m)
	}

	// 4. One reviewer: still pending, the retry is refused, nothing merged.
	if code, m := e.decide(id, "bob@corp.example", "bob", "approve", now); code != 200 || m["status"] != "pending" {
		t.Fatalf("functional review: %d %v", code, m)
	}
	early := e.do("PUT", "/repos/acme/payments/pulls/1/merge", merge, append(alice, "X-UAPK-Approval-Id", id)...)
	if early.status != 409 || early.json(t)["reason"] != "not_approved" {
		t.Fatalf("retry after one review: %d %s", early.status, early.body)
	}

	// 5. The author, who holds functional_reviewer too, is refused.
	if code, m := e.decide(id, "alice@corp.example", "alice", "approve", now); code != 403 || m["reason"] != "self_approval" {
		t.Fatalf("author's approval: %d %v", code, m)
	}
	if a := e.approval(id); a.Status != "pending" || len(a.Decisions) != 1 {
		t.Fatalf("after the author's attempt: %+v", a)
	}
	if st := host.Stats(); st.Merges != 0 {
		t.Fatalf("merged before the second review: %+v", st)
	}

	// 6. The security reviewer completes it; the retry merges, once.
	if code, m := e.decide(id, "carol@corp.example", "carol", "approve", now); code != 200 || m["status"] != "approved" {
		t.Fatalf("security review: %d %v", code, m)
	}
	done := e.do("PUT", "/repos/acme/payments/pulls/1/merge", merge, append(alice, "X-UAPK-Approval-Id", id)...)
	expect(done, 200, "allow", "merge_payments")
	if done.json(t)["merged"] != true {
		t.Fatalf("merge answer %s", done.body)
	}
	again := e.do("PUT", "/repos/acme/payments/pulls/1/merge", merge, append(alice, "X-UAPK-Approval-Id", id)...)
	if again.status != 409 || again.json(t)["reason"] != "consumed" {
		t.Fatalf("second retry: %d %s", again.status, again.body)
	}
	if st := host.Stats(); st.Merges != 1 || st.MergesByRepo["acme/payments"] != 1 || st.ProtectedPushes != 0 {
		t.Fatalf("host: %+v", st)
	}
	if hits := host.Hits(); hits[len(hits)-1].Capability == "" {
		t.Error("the merge reached the host without its capability token")
	}

	// 7. A merge elsewhere needs one reviewer who is not the author.
	expect(e.do("POST", "/repos/acme/docs-site/git/refs", `{"ref":"refs/heads/typo"}`, alice...), 201, "allow", "branch_create")
	expect(e.do("POST", "/repos/acme/docs-site/pulls", `{"title":"Typo","head":"typo","author":"alice@corp.example"}`, alice...), 201, "allow", "pr_open")
	docs := e.do("PUT", "/repos/acme/docs-site/pulls/1/merge", `{}`, alice...)
	expect(docs, 202, "pending", "merge")
	docsID := pendingID(t, docs)
	if code, m := e.decide(docsID, "alice@corp.example", "alice", "approve", now); code != 403 || m["reason"] != "self_approval" {
		t.Fatalf("author's approval of the docs merge: %d %v", code, m)
	}
	if code, m := e.decide(docsID, "carol@corp.example", "carol", "approve", now); code != 200 || m["status"] != "approved" {
		t.Fatalf("docs review: %d %v", code, m)
	}
	expect(e.do("PUT", "/repos/acme/docs-site/pulls/1/merge", `{}`, append(alice, "X-UAPK-Approval-Id", docsID)...), 200, "allow", "merge")

	// 8. The ledger: who approved the payments merge, and the refusal.
	var reviews, refusals []uint64
	reviewers := map[string]string{}
	for _, r := range e.records() {
		if r.Kind != "approval" || r.ApprovalID != id {
			continue
		}
		switch r.Decision {
		case "approve":
			reviews = append(reviews, r.Seq)
			reviewers[r.Data["approver"].(string)] = r.Data["role"].(string)
		case "refused":
			refusals = append(refusals, r.Seq)
			if r.Reason != "self_approval" || r.Data["approver"] != "alice@corp.example" {
				t.Errorf("refusal record %+v", r)
			}
		}
	}
	if len(reviews) != 2 || reviewers["bob@corp.example"] != "functional_reviewer" || reviewers["carol@corp.example"] != "security_reviewer" || len(refusals) != 1 {
		t.Fatalf("approval records %v %v, refusals %v", reviews, reviewers, refusals)
	}

	// 9. The evidence bundle verifies, and its change-management control cites them.
	e.stop()
	bundle := filepath.Join(t.TempDir(), "changes.zip")
	exportBundle(t, e, bundle, "--manifest", aiCodingManifest)
	if code, out := runCommand(t, verifyCmd(), bundle); code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("verify exit %d: %s", code, out)
	}
	files := unzipFiles(t, bundle)
	var m evidence.Mapping
	if err := json.Unmarshal(files["control-mapping.json"], &m); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(m.Controls, func(c evidence.Control) bool { return c.ID == "SOX-ITGC-CM" })
	if i < 0 {
		t.Fatal("no SOX-ITGC-CM control in the mapping")
	}
	c := m.Controls[i]
	if c.Status != "evidenced" || c.Framework != "SOX" || !strings.Contains(c.Section, "ITGC") {
		t.Errorf("control %s %s %s", c.Status, c.Framework, c.Section)
	}
	ev := map[string]evidence.Evidence{}
	for _, x := range c.Evidence {
		ev[x.ID] = x
	}
	for k, n := range map[string]uint64{"held": 2, "signed": 3, "self_approval_refused": 2, "released": 2,
		"blocked": 6, "unreviewed": 0, "rejected": 0, "override_released": 0} {
		if ev[k].Count != n {
			t.Errorf("%s: %d records, want %d", k, ev[k].Count, n)
		}
	}
	signed := seqsIn(t, ev["signed"].Seqs)
	for _, s := range reviews {
		if !slices.Contains(signed, s) {
			t.Errorf("the review record %d is not cited (signed: %s)", s, ev["signed"].Seqs)
		}
	}
	if !slices.Contains(seqsIn(t, ev["self_approval_refused"].Seqs), refusals[0]) {
		t.Errorf("the author's refusal %d is not cited", refusals[0])
	}
	if want := `(.action|IN("merge","merge_direct","merge_payments","push_protected"))`; !strings.Contains(ev["signed"].Selector, want) {
		t.Errorf("selector %s lacks %s", ev["signed"].Selector, want)
	}
	if len(c.Details) != 1 || c.Details[0].Total != 2 {
		t.Fatalf("details %+v", c.Details)
	}
	row := strings.Join(c.Details[0].Rows[0], " | ")
	for _, w := range []string{id, "merge_payments", "alice@corp.example", "functional_reviewer, security_reviewer",
		"bob@corp.example (functional_reviewer) approved", "carol@corp.example (security_reviewer) approved", "released to the ERP"} {
		if !strings.Contains(row, w) {
			t.Errorf("details row %q lacks %q", row, w)
		}
	}
	pol := strings.Join(c.Policy, "\n")
	for _, w := range []string{"merge_payments needs DUAL_APPROVAL by functional_reviewer and security_reviewer, on behalf of a developer",
		"merge needs REQUIRE_APPROVAL by functional_reviewer or security_reviewer", "push_protected denylisted"} {
		if !strings.Contains(pol, w) {
			t.Errorf("policy in force %q lacks %q", pol, w)
		}
	}
	if md := string(files["control-mapping.md"]); !strings.Contains(md, "## SOX ITGC (change management): Review and approval of code changes") {
		t.Error("control-mapping.md lacks the change-management section")
	}
}
