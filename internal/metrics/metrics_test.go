package metrics

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite testdata/exposition.golden")

// A scripted set of observations with fixed durations gives a fixed
// exposition; the golden file is what Prometheus scrapes.
func TestExpositionGolden(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, "v1.2.3", Sources{
		Held:            func() int { return 2 },
		PendingByAction: func() (map[string]int, error) { return map[string]int{"journal_entry": 3, "financial_report": 1}, nil },
		ArchiveBacklog:  func() (uint64, float64) { return 42, 7.5 },
		ArchiveUploads:  func() (uint64, float64) { return 3, 12.5 },
	})
	m.Decision("sidecar", "account_reconciliation", "allow", 2*time.Millisecond)
	m.Decision("sidecar", "account_reconciliation", "allow", 3*time.Millisecond)
	m.Decision("sidecar", "journal_entry", "pending", 4*time.Millisecond)
	m.Decision("forward", "", "deny", time.Millisecond)
	m.Upstream("sidecar", 20*time.Millisecond, nil)
	m.Upstream("sidecar", 0, errors.New("connection refused"))
	m.ApprovalCompleted("journal_entry", "approved", 23*time.Minute)
	m.Commit(16, 3*time.Millisecond, nil)
	m.Commit(0, time.Millisecond, errors.New("disk full"))
	m.AdminRefused("missing_token")
	m.AdminRefused("missing_token")
	m.AdminRefused("missing_scope")

	names := []string{"uapk_requests_total", "uapk_decision_duration_seconds", "uapk_upstream_duration_seconds",
		"uapk_upstream_errors_total", "uapk_approval_wait_seconds", "uapk_ledger_commit_duration_seconds",
		"uapk_ledger_batch_records", "uapk_ledger_commit_failures_total", "uapk_held_connections",
		"uapk_pending_approvals", "uapk_archive_backlog_records", "uapk_archive_backlog_seconds", "uapk_admin_refused_total",
		"uapk_archive_slow_uploads_total", "uapk_archive_upload_in_flight_seconds"}
	if *update {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if slices.Contains(names, mf.GetName()) {
				enc.Encode(mf)
			}
		}
		os.WriteFile("testdata/exposition.golden", b.Bytes(), 0o644)
	}
	f, err := os.Open("testdata/exposition.golden")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, names...); err != nil {
		t.Fatal(err)
	}
	// build_info carries the Go version, which the golden file cannot.
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "uapk_build_info" {
			found = len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	if !found {
		t.Errorf("uapk_build_info missing")
	}
}

func TestNoIDsInLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, "dev", Sources{})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "uapk_") {
			t.Errorf("%s lacks the uapk_ prefix", mf.GetName())
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "door", "action", "decision", "status", "version", "goversion":
				default:
					t.Errorf("%s has label %s: only fixed sets are allowed", mf.GetName(), l.GetName())
				}
			}
		}
	}
}
