package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Both doors hand the body's Content-Type to the rules: a JSON body whose
// keys an ERP could read otherwise than the gate is refused 400
// ambiguous_body, recorded, and never reaches the ERP; the same bytes sent
// as text/plain are not judged as JSON and go through.
func TestDoorsRefuseAmbiguousJSONBodies(t *testing.T) {
	const dup = `{"account":"1010","ACCOUNT":"9999"}`
	erp := newTestERP(t, false)

	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp.URL})
	go sc.Serve(ln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	sidecarURL := "http://" + ln.Addr().String()

	ffl := &fakeLedger{}
	_, addr := startForward(t, ForwardConfig{Gate: fwdGate(t, ffl), MaxBody: 1 << 20})
	fc := proxyClient(t, addr, nil, "")

	doors := []struct {
		name string
		l    *fakeLedger
		c    *http.Client
		base string
	}{
		{"sidecar", fl, &http.Client{}, sidecarURL},
		{"forward", ffl, fc, erp.URL},
	}
	for _, door := range doors {
		t.Run(door.name, func(t *testing.T) {
			before := len(erp.Hits())
			for _, ct := range []string{"application/json", "application/vnd.erp+json; charset=utf-8"} {
				r := send(t, door.c, "POST", door.base+"/api/v1/reconciliations", dup,
					"Content-Type", ct, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
				var body struct {
					Error  string        `json:"error"`
					Reason record.Reason `json:"reason"`
					Action string        `json:"action"`
					Record uint64        `json:"record"`
				}
				if err := json.Unmarshal([]byte(r.body), &body); err != nil {
					t.Fatalf("%d %s: %v", r.status, r.body, err)
				}
				if r.status != 400 || body.Error != "bad_request" || body.Reason != record.AmbiguousBody ||
					body.Action != "account_reconciliation" || body.Record == 0 || r.header.Get("X-UAPK-Decision") != "deny" {
					t.Fatalf("%s: %d %s %v", ct, r.status, r.body, r.header)
				}
				reqs := requestEntries(door.l)
				last := reqs[len(reqs)-1]
				if last.Decision != record.Deny || last.Reason != record.AmbiguousBody || last.Action != "account_reconciliation" {
					t.Errorf("record %+v", last)
				}
				if d, _ := last.Data["detail"].(string); !strings.Contains(d, `key "ACCOUNT"`) {
					t.Errorf("record detail %q", d)
				}
			}
			if n := len(erp.Hits()); n != before {
				t.Fatalf("the ERP received %d ambiguous bodies", n-before)
			}
			r := send(t, door.c, "POST", door.base+"/api/v1/reconciliations", dup,
				"Content-Type", "text/plain", "X-UAPK-On-Behalf-Of", "accountant@corp.example")
			if r.status != 200 || len(erp.Hits()) != before+1 {
				t.Errorf("text/plain: %d %s", r.status, r.body)
			}
		})
	}
}

// The amount read through a door is the one the ERP would bind: AMOUNT
// beside credit 1 is over the cap, so the escalation's two roles are needed
// (the action's own policy needs only finance_manager).
func TestDoorsReadTheAmountAsTheERPBindsIt(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	sc, ln := newSidecar(t, fl, SidecarConfig{Upstream: erp.URL})
	go sc.Serve(ln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	r := send(t, &http.Client{}, "POST", "http://"+ln.Addr().String()+"/api/v1/journal-entries",
		`{"account":"4000","AMOUNT":"5000000","credit":"1"}`, "Content-Type", "application/json")
	if r.status != 202 || !strings.Contains(r.body, `"required_roles":["cfo","controller"]`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if len(erp.Hits()) != 0 {
		t.Error("forwarded")
	}
}
