package cli

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads /metrics and returns the families by name.
func (e *env) scrape() map[string]*dto {
	e.t.Helper()
	resp, err := http.Get(e.admin + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		e.t.Fatalf("parse /metrics: %v\n%s", err, b)
	}
	out := map[string]*dto{}
	for name, mf := range mfs {
		d := &dto{}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			d.series = append(d.series, series{labels, v})
		}
		out[name] = d
	}
	return out
}

type series struct {
	labels map[string]string
	value  float64
}

type dto struct{ series []series }

// value sums the series whose labels include want.
func (d *dto) value(want map[string]string) float64 {
	if d == nil {
		return -1
	}
	sum := 0.0
	for _, s := range d.series {
		ok := true
		for k, v := range want {
			ok = ok && s.labels[k] == v
		}
		if ok {
			sum += s.value
		}
	}
	return sum
}

func TestMetricsAfterAScriptedSetOfRequests(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.do("POST", "/api/v1/reconciliations", reconciliation, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}
	e.do("PUT", "/api/v1/audit-log/AL-1", `{}`)
	e.do("GET", "/api/v1/payroll/export", "")
	id := pendingID(t, e.do("POST", "/api/v1/journal-entries", accrual250k))
	pendingID(t, e.do("POST", "/api/v1/journal-entries", adjust1200k))
	if code, _ := e.decide(id, "fm@corp.example", "fm", "approve", e.clock.Now()); code != 200 {
		t.Fatal("approve failed")
	}
	e.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id)
	waitFor(t, func() bool { return e.srv.Ledger().Head().Seq >= 15 })

	m := e.scrape()
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"uapk_requests_total", map[string]string{"door": "sidecar", "action": "account_reconciliation", "decision": "allow"}, 3},
		{"uapk_requests_total", map[string]string{"action": "audit_modify", "decision": "deny"}, 1},
		{"uapk_requests_total", map[string]string{"action": "unclassified", "decision": "deny"}, 1},
		{"uapk_requests_total", map[string]string{"action": "journal_entry", "decision": "pending"}, 2},
		{"uapk_requests_total", map[string]string{"action": "journal_entry", "decision": "allow"}, 1},
		{"uapk_decision_duration_seconds", nil, 8},
		{"uapk_upstream_duration_seconds", map[string]string{"door": "sidecar"}, 4},
		{"uapk_pending_approvals", map[string]string{"action": "journal_entry"}, 1},
		{"uapk_approval_wait_seconds", map[string]string{"action": "journal_entry", "status": "approved"}, 1},
		{"uapk_held_connections", nil, 0},
		{"uapk_ledger_commit_failures_total", nil, 0},
		{"uapk_build_info", nil, 1},
	}
	for _, c := range checks {
		if got := m[c.name].value(c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Every record went through a group commit the histograms saw.
	if got := m["uapk_ledger_batch_records"].value(nil); got < 1 {
		t.Errorf("uapk_ledger_batch_records count %v", got)
	}
	for name := range m {
		if strings.Contains(name, "approval_id") || strings.Contains(name, "digest") {
			t.Errorf("metric %s names an id", name)
		}
	}
}
