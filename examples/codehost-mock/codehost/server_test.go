package codehost

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

func do(t *testing.T, s *Server, method, target, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, target, ct)
	}
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, target, err, w.Body)
	}
	return w.Code, out
}

// TestBranchPullMerge runs the coding agent's session: a branch, a push
// to it, a pull request, its merge, and the second merge refused.
func TestBranchPullMerge(t *testing.T) {
	s := New()
	steps := []struct {
		method, path, body string
		status             int
		field, want        string
	}{
		{"POST", "/repos/acme/payments/git/refs", `{"ref":"refs/heads/fix-rounding"}`, 201, "ref", "refs/heads/fix-rounding"},
		{"POST", "/repos/acme/payments/git/refs", `{"ref":"refs/heads/fix-rounding"}`, 422, "error", "ref_exists"},
		{"POST", "/repos/acme/payments/git/refs", `{"ref":"main"}`, 422, "error", "invalid_ref"},
		{"PATCH", "/repos/acme/payments/git/refs/heads/fix-rounding", `{"sha":"00000000000000000000000000000000000000aa"}`, 200, "ref", "refs/heads/fix-rounding"},
		{"PATCH", "/repos/acme/payments/git/refs/heads/nope", `{"sha":"aa"}`, 404, "error", "not_found"},
		{"POST", "/repos/acme/payments/pulls", `{"title":"Fix rounding","head":"fix-rounding","base":"main","author":"alice@corp.example"}`, 201, "state", "open"},
		{"POST", "/repos/acme/payments/pulls", `{"title":"x","head":"gone","base":"main"}`, 422, "error", "invalid_head"},
		{"GET", "/repos/acme/payments/pulls/1", "", 200, "title", "Fix rounding"},
		{"GET", "/repos/acme/payments/pulls/9", "", 404, "error", "not_found"},
		{"PUT", "/repos/acme/payments/pulls/1/merge", `{"sha":"00000000000000000000000000000000000000bb"}`, 409, "error", "head_moved"},
		{"PUT", "/repos/acme/payments/pulls/1/merge", `{"merge_method":"squash","sha":"00000000000000000000000000000000000000aa"}`, 200, "message", "Pull Request successfully merged"},
		{"PUT", "/repos/acme/payments/pulls/1/merge", `{"merge_method":"squash"}`, 405, "error", "not_mergeable"},
		{"PUT", "/repos/acme/payments/pulls/x/merge", ``, 404, "error", "not_found"},
		{"DELETE", "/repos/acme/payments", ``, 404, "error", "not_found"},
		{"POST", "/repos/acme/payments/pulls", `{"title":"x","head":"fix-rounding","extra":1}`, 400, "error", "invalid_json"},
	}
	for _, st := range steps {
		code, out := do(t, s, st.method, st.path, st.body)
		if code != st.status || out[st.field] != st.want {
			t.Errorf("%s %s: %d %v, want %d %s=%q", st.method, st.path, code, out, st.status, st.field, st.want)
		}
	}
	p, ok := s.Pull("acme", "payments", 1)
	if !ok || !p.Merged || p.User.Login != "alice@corp.example" || p.State != "closed" {
		t.Errorf("pull %+v", p)
	}
	if head, _ := s.Branch("acme", "payments", "main"); head != p.MergeCommit || head == InitialCommit {
		t.Errorf("main at %s, merge commit %s", head, p.MergeCommit)
	}
	st := s.Stats()
	if st.BranchesCreated != 1 || st.PullsOpened != 1 || st.Merges != 1 || st.MergesByRepo["acme/payments"] != 1 ||
		st.Pushes != 1 || st.ProtectedPushes != 0 || st.Total != len(steps) {
		t.Errorf("stats %+v", st)
	}
	if st.ByRoute["PUT /repos/{owner}/{repo}/pulls/{number}/merge"] != 4 || st.ByRoute[unmatched] != 1 {
		t.Errorf("by route %v", st.ByRoute)
	}
}

func TestProtectedPushesAndLeaksAreCounted(t *testing.T) {
	s := New()
	do(t, s, "POST", "/repos/acme/web/git/refs", `{"ref":"refs/heads/release/2.1"}`)
	for _, b := range []string{"main", "release/2.1"} {
		if code, _ := do(t, s, "PATCH", "/repos/acme/web/git/refs/heads/"+b, `{"sha":"ab","force":true}`, "X-UAPK-On-Behalf-Of", "bob"); code != 200 {
			t.Errorf("push to %s: %d", b, code)
		}
	}
	do(t, s, "GET", "/repos/acme/web/git/refs/heads/main", "", "X-UAPK-Capability", "v4.public.x")
	st := s.Stats()
	if st.Pushes != 2 || st.ProtectedPushes != 2 || st.LeakedUAPKHeaders != 2 {
		t.Errorf("stats %+v", st)
	}
	hits := s.Hits()
	if len(hits) != 4 || hits[1].LeakedUAPK[0] != "X-Uapk-On-Behalf-Of" || hits[3].Capability != "v4.public.x" {
		t.Errorf("hits %+v", hits)
	}
	for _, b := range []string{"main", "master", "release/1", "release/1/hotfix"} {
		if !Protected(b) {
			t.Errorf("%s not protected", b)
		}
	}
	for _, b := range []string{"mainline", "feature/main", "releases", "release"} {
		if Protected(b) {
			t.Errorf("%s protected", b)
		}
	}
}

func TestIntrospection(t *testing.T) {
	s := New()
	do(t, s, "POST", "/repos/a/b/git/refs", `{"ref":"refs/heads/x"}`)
	if code, out := do(t, s, "GET", "/_mock/stats", ""); code != 200 || out["total"] != float64(1) {
		t.Errorf("stats %d %v", code, out)
	}
	if code, _ := do(t, s, "GET", "/_mock/reset", ""); code != 405 {
		t.Errorf("GET reset %d", code)
	}
	if code, _ := do(t, s, "POST", "/_mock/reset", ""); code != 200 {
		t.Errorf("reset %d", code)
	}
	if st := s.Stats(); st.Total != 0 || st.BranchesCreated != 0 {
		t.Errorf("after reset %+v", st)
	}
	if _, ok := s.Branch("a", "b", "x"); ok {
		t.Error("branch survived the reset")
	}
}
