package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// The committed corpus lives in testdata/fuzz/<FuzzName>/; f.Add seeds the
// same starting points so that a plain `go test` exercises them too.

func FuzzParseManifest(f *testing.F) {
	for _, p := range []string{"testdata/seed-manifest.json", "testdata/sox-financial.json", "testdata/sox-financial.yaml",
		"testdata/decide.yaml", "testdata/invalid/many-problems.json", "testdata/invalid/yaml-alias.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error is not a ValidationError with problems: %T %v", err, err)
			}
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		sum := sha256.Sum256(data)
		if m.Hash != hex.EncodeToString(sum[:]) {
			t.Fatal("hash does not match the input")
		}
		if m.AppID == "" || len(m.Actions) == 0 {
			t.Fatal("valid manifest without app_id or actions")
		}
		for _, a := range m.Actions {
			if cc := a.CumulativeCap; cc != nil && (cc.Amount.Sign() <= 0 || cc.Window < MinCumulativeWindow ||
				cc.Window > MaxCumulativeWindow || len(a.AmountPaths) == 0 || cc.Amount.Cmp(mustRat(cc.AmountText())) != 0) {
				t.Fatalf("action %s: cumulative_cap %s over %s accepted (amount paths %v)", a.Name, cc.AmountText(), cc.Window, a.AmountPaths)
			}
		}
		e := NewEngine(m, nil)
		for _, a := range m.Actions {
			for _, mr := range a.Match {
				r := &Request{Method: "POST", Scheme: "https", Host: "erp.example.com", Path: mr.Path, Body: []byte(`{"amount": 1}`), Escalation: "auditor", Time: monday}
				if mr.Host != "" && !strings.ContainsAny(mr.Host, "*?") {
					r.Host = mr.Host
				}
				checkDecisions(t, r, e)
				checkDoors(t, r, e)
			}
		}
	})
}

func FuzzDecide(f *testing.F) {
	e := loadEngine(f, "testdata/decide.yaml")
	sox := loadEngine(f, "testdata/sox-financial.json")
	f.Add("POST", "https", "erp.example.com", "/je", `{"amount": "1200000.00"}`, "", "", int64(0))
	f.Add("POST", "https", "erp.example.com", "/je", `{"lines":[{"debit":1},{"credit":-2e6}]}`, "", "cfo", int64(3600))
	f.Add("GET", "http", "ERP.example.com:8080", "/recon/a/b", "", "staff@corp.example", "auditor", int64(0))
	f.Add("POST", "https", "erp.example.com", "/reports/%2e%2e", "", "", "", int64(-86400))
	f.Add("POST", "https", "[::1]:443", "/api/v1/journal-entries", `{"amount":5,"Amount":7}`, "fm@corp.example", "CFO", int64(5))
	f.Add("DELETE", "", "", "/api/v1/audit-log/1", "[[[[", "", "", int64(0))
	f.Add("POST", "http", "127.0.0.1:9090", "/api/v1/journal-entries", `{"amount": 250000}`, "", "cfo", int64(0))
	f.Add("GET", "https", "GL.example.com:8443", "/gl/2026", "", "", "", int64(0))
	f.Add("POST", "https", "ledger-sink.example", "/api/v1/journal-entries", `{"amount": 1}`, "", "", int64(0))
	f.Fuzz(func(t *testing.T, method, scheme, host, path, body, caller, escalation string, offset int64) {
		for _, ct := range []string{"", "application/json"} {
			r := &Request{Method: method, Scheme: scheme, Host: host, Path: path, Body: []byte(body), ContentType: ct,
				OnBehalfOf: caller, Escalation: escalation, Time: monday.Add(time.Duration(offset) * time.Second)}
			for _, agent := range []bool{false, true} {
				r.AgentChosenHost = agent
				checkDecisions(t, r, e, sox)
			}
			checkDoors(t, r, e, sox)
		}
	})
}

// checkDoors checks what choosing the host adds (the forward door): the
// sidecar never answers unknown_host; the forward door answers it exactly
// when the manifest names the host nowhere, so nothing it lets through or
// holds goes elsewhere; and to a host in erp_hosts it decides exactly as the
// sidecar does.
func checkDoors(t *testing.T, r *Request, engines ...*Engine) {
	t.Helper()
	for _, eng := range engines {
		side, fwd := *r, *r
		side.AgentChosenHost, fwd.AgentChosenHost = false, true
		ds, df := eng.Decide(&side), eng.Decide(&fwd)
		if ds.Reason == ReasonUnknownHost {
			t.Fatalf("unknown_host for a host the agent did not choose: %+v", ds)
		}
		h := parseReqHost(r.Host, r.Scheme)
		erp := eng.m.erpHost(h)
		named := erp || eng.m.namedHost(h)
		if (df.Reason == ReasonUnknownHost) == named {
			t.Fatalf("host %q (named %v): forward door %+v", r.Host, named, df)
		}
		if df.Outcome != Deny && !named {
			t.Fatalf("forward door lets %q through to a host the manifest does not name: %+v", r.Host, df)
		}
		if erp && !reflect.DeepEqual(ds, df) {
			t.Fatalf("host %q is in erp_hosts, yet the doors differ:\n sidecar %+v\n forward %+v", r.Host, ds, df)
		}
	}
}

// checkDecisions checks each engine's decision on r, and that X-UAPK-Escalation
// only strengthens it.
func checkDecisions(t *testing.T, r *Request, engines ...*Engine) {
	t.Helper()
	for _, eng := range engines {
		d := eng.Decide(r)
		checkDecision(t, r, d)
		// X-UAPK-Escalation can only add to what is required.
		plain := *r
		plain.Escalation = ""
		d0 := eng.Decide(&plain)
		if d.Reason == ReasonBadEscalation {
			continue
		}
		if d0.Outcome == Deny && d.Outcome != Deny || d0.Outcome == Pending && d.Outcome != Pending {
			t.Fatalf("escalation weakened the outcome: %v -> %v", d0.Outcome, d.Outcome)
		}
		for _, s := range d0.Requirement.Slots {
			if !hasSlot(d.Requirement, s) {
				t.Fatalf("escalation removed slot %v: %+v -> %+v", s, d0.Requirement, d.Requirement)
			}
		}
	}
}

var reasons = map[record.Reason]Outcome{
	ReasonAutoApprove: Allow, ReasonRecordAndAllow: Allow,
	ReasonDenylisted: Deny, ReasonUnclassified: Deny, ReasonPolicyDeny: Deny, ReasonOutsideBusinessHours: Deny,
	ReasonRoleNotAllowed: Deny, ReasonBadEscalation: Deny,
	ReasonApprovalRequired: Pending, ReasonDualApproval: Pending, ReasonAmountOverCap: Pending,
	ReasonAmountUnreadable: Pending, ReasonEscalationRequested: Pending,
	ReasonAmbiguousBody: Deny, ReasonUnknownHost: Deny,
}

func checkDecision(t *testing.T, r *Request, d Decision) {
	t.Helper()
	want, ok := reasons[d.Reason]
	if !ok || want != d.Outcome {
		t.Fatalf("reason %q with outcome %v", d.Reason, d.Outcome)
	}
	if d.Detail == "" {
		t.Fatal("empty Detail")
	}
	if (d.Outcome == Pending) != (len(d.Requirement.Slots) > 0) {
		t.Fatalf("outcome %v with requirement %+v", d.Outcome, d.Requirement)
	}
	for _, s := range d.Requirement.Slots {
		if len(s) == 0 {
			t.Fatal("empty slot")
		}
	}
	if d.Amount != "" {
		if _, ok := parseDecimal(d.Amount, false); !ok {
			t.Fatalf("amount %q is not decimal text", d.Amount)
		}
	}
	if r.Escalation != "" && d.Outcome == Pending && ValidRole(r.Escalation) && !hasSlot(d.Requirement, []string{r.Escalation}) {
		t.Fatalf("escalation %q missing from %+v", r.Escalation, d.Requirement)
	}
}

func hasSlot(q Requirement, slot []string) bool {
	for _, s := range q.Slots {
		if len(s) != len(slot) {
			continue
		}
		same := true
		for i := range s {
			same = same && s[i] == slot[i]
		}
		if same {
			return true
		}
	}
	return false
}

func mustRat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return new(big.Rat).SetInt64(-1)
	}
	return r
}
