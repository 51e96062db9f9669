package rules

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// executeManifest is a manifest with one execute template per action given
// (name: execute object as JSON), after a journal_entry whose PUT rule
// takes /api/v1/journal-entries/*.
func executeManifest(execs map[string]string) string {
	ex := func(name string) string {
		if e, ok := execs[name]; ok {
			return `, "execute": ` + e
		}
		return ""
	}
	return `{"app_id": "app", "actions": {
  "locked": {"approval_policy": "DENY", "match": [{"method": "PUT", "path": "/api/v1/journal-entries/LOCKED-*"}]` + ex("locked") + `},
  "journal_entry": {"approval_policy": "REQUIRE_APPROVAL", "roles_required": ["finance_manager"], "amount_cap": 1000, "amount": ["amount"],
    "match": [{"method": "POST", "path": "/api/v1/journal-entries"}, {"method": "PUT", "path": "/api/v1/journal-entries/*"}]` + ex("journal_entry") + `},
  "ledger_read": {"approval_policy": "AUTO_APPROVE", "match": [{"method": "GET", "path": "/api/v1/accounts/**"}]` + ex("ledger_read") + `}
}}`
}

func TestExecuteTemplatesLoad(t *testing.T) {
	m, err := ParseManifest([]byte(executeManifest(map[string]string{
		"journal_entry": `{"method": "put", "path": "/api/v1/journal-entries/{entry_id}"}`,
		"ledger_read":   `{"method": "GET", "path": "/api/v1/accounts/{account}/balance"}`,
	})))
	if err != nil {
		t.Fatal(err)
	}
	je, _ := m.Action("journal_entry")
	if je.Execute == nil || je.Execute.Method != "PUT" || je.Execute.Path != "/api/v1/journal-entries/{entry_id}" ||
		len(je.Execute.Params) != 1 || je.Execute.Params[0] != "entry_id" {
		t.Fatalf("execute %+v", je.Execute)
	}
	if a, _ := m.Action("locked"); a.Execute != nil {
		t.Error("an action without execute has a template")
	}
}

func TestExecuteTemplateProblemsHaveTheirPaths(t *testing.T) {
	const je = "actions.journal_entry.execute"
	for _, tc := range []struct {
		exec, path, msg string
	}{
		{`{"method": "POST", "path": "/api/v1/journal-entries/{entry-id}"}`, je + ".path", "not a parameter name"},
		{`{"method": "POST", "path": "/api/v1/journal-entries/{1st}"}`, je + ".path", "not a parameter name"},
		{`{"method": "POST", "path": "/api/v1/journal-entries/{}"}`, je + ".path", "not a parameter name"},
		{`{"method": "POST", "path": "/api/v1/journal-entries/{id"}`, je + ".path", "unclosed {"},
		{`{"method": "POST", "path": "/api/v1/journal-entries/id}"}`, je + ".path", "} without {"},
		{`{"method": "PUT", "path": "/api/v1/{id}/{id}"}`, je + ".path", "appears twice"},
		{`{"method": "POST", "path": "/api/v1/journal-entries?x=1"}`, je + ".path", "has a query"},
		{`{"method": "POST", "path": "/api/v1/../journal-entries"}`, je + ".path", `".." segment`},
		{`{"method": "POST", "path": "/api/v1//journal-entries"}`, je + ".path", "empty segment"},
		{`{"method": "POST", "path": "/api/v1/journal%2Dentries"}`, je + ".path", "not allowed in a template path"},
		{`{"method": "POST", "path": "api/v1/journal-entries"}`, je + ".path", "must start with /"},
		{`{"method": "FETCH", "path": "/api/v1/journal-entries"}`, je + ".method", "unknown method"},
		{`{"method": "CONNECT", "path": "/api/v1/journal-entries"}`, je + ".method", "cannot be executed"},
		{`{"path": "/api/v1/journal-entries"}`, je + ".method", "required"},
		{`{"method": "POST"}`, je + ".path", "required"},
		{`{"method": "POST", "path": "/api/v1/journal-entries", "query": "x"}`, je + ".query", "unknown key"},
		// Templates that classify elsewhere: the sample request is another
		// action's, or no action's.
		{`{"method": "GET", "path": "/api/v1/journal-entries"}`, je + ".path", "matches no action"},
		{`{"method": "GET", "path": "/api/v1/accounts/{id}"}`, je + ".path", "classifies as action ledger_read, not journal_entry"},
		{`{"method": "PUT", "path": "/api/v1/journal-entries/LOCKED-{id}"}`, je + ".path", "classifies as action locked, not journal_entry"},
	} {
		_, err := ParseManifest([]byte(executeManifest(map[string]string{"journal_entry": tc.exec})))
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: no problem (%v)", tc.exec, err)
			continue
		}
		found := false
		for _, p := range ve.Problems {
			found = found || p.Path == tc.path && strings.Contains(p.Message, tc.msg)
		}
		if !found {
			t.Errorf("%s: want %s: ...%s...; got %q", tc.exec, tc.path, tc.msg, ve.Problems)
		}
	}
}

func TestExecuteBuild(t *testing.T) {
	m, err := ParseManifest([]byte(executeManifest(map[string]string{
		"journal_entry": `{"method": "PUT", "path": "/api/v1/journal-entries/{entry_id}"}`,
	})))
	if err != nil {
		t.Fatal(err)
	}
	je, _ := m.Action("journal_entry")
	params := func(s string) map[string]json.RawMessage {
		var p map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	path, body, err := je.Execute.Build(params(`{"memo": "a <b> & \u00e9", "entry_id": "JE-000001", "amount": 1.50, "lines": [ {"x": 1} ]}`))
	if err != nil {
		t.Fatal(err)
	}
	if path != "/api/v1/journal-entries/JE-000001" || string(body) != `{"amount":1.50,"lines":[{"x":1}],"memo":"a <b> & é"}` {
		t.Errorf("path %s body %s", path, body)
	}
	// The same parameters in another order and spacing: the same bytes.
	_, again, _ := je.Execute.Build(params(`{"lines":[{"x":1}],"amount":1.50,"entry_id":"JE-000001","memo":"a <b> & é"}`))
	if string(again) != string(body) {
		t.Errorf("not deterministic: %s vs %s", again, body)
	}
	if path, body, err := je.Execute.Build(params(`{"entry_id": 42}`)); err != nil || path != "/api/v1/journal-entries/42" || body != nil {
		t.Errorf("number: %s %q %v", path, body, err)
	}
	for _, bad := range []string{
		`{}`, `{"entry_id": ""}`, `{"entry_id": ".."}`, `{"entry_id": "."}`, `{"entry_id": "../x"}`,
		`{"entry_id": "a/b"}`, `{"entry_id": "a%2Fb"}`, `{"entry_id": "a?b=1"}`, `{"entry_id": "a#b"}`,
		`{"entry_id": "a;b"}`, `{"entry_id": "a\\b"}`, `{"entry_id": "caf\u00e9"}`, `{"entry_id": "\uff0fx"}`,
		`{"entry_id": "a b"}`, `{"entry_id": "a\nb"}`, `{"entry_id": null}`, `{"entry_id": true}`,
		`{"entry_id": ["x"]}`, `{"entry_id": {"a": 1}}`, `{"entry_id": "` + strings.Repeat("x", MaxExecuteValue+1) + `"}`,
	} {
		if _, _, err := je.Execute.Build(params(bad)); !errors.Is(err, ErrExecute) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
