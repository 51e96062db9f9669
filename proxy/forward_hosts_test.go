package proxy

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// The attack: the example's journal_entry rules name no host, and the
// forward door once sent what they allowed to whatever host the agent
// named, so an agent could post ledger data to a host of its choosing.
// Now such a request is refused unknown_host, recorded, and never reaches
// that host; the same request to the host in erp_hosts is decided as before
// and forwarded. Plain absolute-URI requests and requests inside an
// intercepted CONNECT go the same way.
func TestForwardDoorSendsHostlessActionsOnlyToERPHosts(t *testing.T) {
	const entry = `{"account":"4000-Revenue","credit":250000,"memo":"Q3 accrual"}`
	for _, tlsOn := range []bool{false, true} {
		name := map[bool]string{false: "absolute URI", true: "intercepted CONNECT"}[tlsOn]
		t.Run(name, func(t *testing.T) {
			erp := newTestERP(t, tlsOn)
			sink := newTestERP(t, tlsOn) // the agent's host: loopback too, another port
			scheme := map[bool]string{false: "http://", true: "https://"}[tlsOn]
			erpHost := strings.TrimPrefix(erp.URL, scheme)
			fl := &fakeLedger{}
			// erp_hosts names the ERP alone; journal_entry runs without
			// approval here, so that allowed means forwarded.
			g := fwdGate(t, fl,
				`"erp_hosts": ["erp.internal.example.com:443", "127.0.0.1:9090"]`, `"erp_hosts": ["`+erpHost+`"]`,
				`"approval_policy": "REQUIRE_APPROVAL",
      "roles_required": ["finance_manager"],`, `"approval_policy": "AUTO_APPROVE",`)
			cfg := ForwardConfig{Gate: g}
			var c *http.Client
			if tlsOn {
				authority, roots := withCA(t)
				cfg.CA, cfg.TLS = authority, erpTLS(erp) // the sink's certificate verifies too: only the rules stop it
				_, addr := startForward(t, cfg)
				c = proxyClient(t, addr, roots, "")
			} else {
				_, addr := startForward(t, cfg)
				c = proxyClient(t, addr, nil, "")
			}

			r := send(t, c, "POST", sink.URL+"/api/v1/journal-entries", entry, "Content-Type", "application/json")
			var body struct {
				Error  string        `json:"error"`
				Reason record.Reason `json:"reason"`
				Action string        `json:"action"`
				Record uint64        `json:"record"`
			}
			if err := json.Unmarshal([]byte(r.body), &body); err != nil {
				t.Fatalf("%d %s: %v", r.status, r.body, err)
			}
			if r.status != 403 || r.header.Get("X-UAPK-Decision") != "deny" || body.Error != "denied" ||
				body.Reason != record.UnknownHost || body.Action != "" || body.Record == 0 {
				t.Fatalf("to the agent's host: %d %v %s", r.status, r.header, r.body)
			}
			if h := sink.Hits(); len(h) != 0 {
				t.Fatalf("the agent's host received %+v", h)
			}
			reqs := requestEntries(fl)
			if len(reqs) != 1 || reqs[0].Decision != record.Deny || reqs[0].Reason != record.UnknownHost ||
				reqs[0].Data["url"] != sink.URL+"/api/v1/journal-entries" || reqs[0].Data["door"] != "forward" {
				t.Fatalf("records %+v", reqs)
			}

			r = send(t, c, "POST", erp.URL+"/api/v1/journal-entries", entry, "Content-Type", "application/json")
			if r.status != 200 || r.header.Get("X-UAPK-Decision") != "allow" || r.header.Get("X-UAPK-Action") != "journal_entry" {
				t.Fatalf("to the ERP: %d %v %s", r.status, r.header, r.body)
			}
			if h := erp.Hits(); len(h) != 1 || h[0].body != entry || h[0].uri != "/api/v1/journal-entries" {
				t.Fatalf("the ERP received %+v", h)
			}
			if h := sink.Hits(); len(h) != 0 {
				t.Fatalf("the agent's host received %+v", h)
			}
		})
	}
}

// A manifest whose rules name no host and that has no erp_hosts forwards
// nothing on the forward door, whatever default_policy says: every host is
// unknown. The sidecar door is unchanged.
func TestForwardDoorWithoutERPHosts(t *testing.T) {
	erp := newTestERP(t, false)
	fl := &fakeLedger{}
	g := fwdGate(t, fl,
		`,
    "erp_hosts": ["erp.internal.example.com:443", "127.0.0.1:9090"]`, ``,
		`"default_policy": "DENY"`, `"default_policy": "RECORD_AND_ALLOW"`)
	_, addr := startForward(t, ForwardConfig{Gate: g})
	c := proxyClient(t, addr, nil, "")
	for _, path := range []string{"/api/v1/reconciliations", "/api/v1/payroll/export"} {
		r := send(t, c, "POST", erp.URL+path, reconciliationBody, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
		if r.status != 403 || !strings.Contains(r.body, `"reason":"unknown_host"`) {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	if h := erp.Hits(); len(h) != 0 {
		t.Errorf("the ERP received %+v", h)
	}

	sc, err := NewSidecar(SidecarConfig{Gate: g, Upstream: erp.URL, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sc.Serve(sln)
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	r := send(t, &http.Client{}, "POST", "http://"+sln.Addr().String()+"/api/v1/reconciliations", reconciliationBody,
		"X-UAPK-On-Behalf-Of", "accountant@corp.example")
	if r.status != 200 || r.header.Get("X-UAPK-Action") != "account_reconciliation" || len(erp.Hits()) != 1 {
		t.Errorf("sidecar: %d %v %s", r.status, r.header, r.body)
	}
}
