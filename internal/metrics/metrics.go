// Package metrics exposes the proxy's Prometheus metrics. Every collector is
// registered on an injected Registerer; names are prefixed uapk_ and use base
// units (seconds, records). Labels are small fixed sets: door, action,
// decision, status. Never a request id, approval id or URL.
package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// Metrics implements gate.Observer, approvals.Observer and the ledger's commit hook.
type Metrics struct {
	requests        *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	upstreamSeconds *prometheus.HistogramVec
	upstreamErrors  *prometheus.CounterVec
	approvalWait    *prometheus.HistogramVec
	appendSeconds   prometheus.Histogram
	batchRecords    prometheus.Histogram
	appendFailures  prometheus.Counter
	slowCommits     prometheus.Counter
	adminRefused    *prometheus.CounterVec
}

// Sources are read at scrape time for the gauges.
type Sources struct {
	// Held returns how many requests are held open waiting for approval.
	Held func() int
	// PendingByAction returns the pending approvals per action.
	PendingByAction func() (map[string]int, error)
	// ArchiveBacklog returns records not yet archived and the age in
	// seconds of the oldest of them (nil when there is no archiver).
	ArchiveBacklog func() (records uint64, seconds float64)
	// ArchiveUploads returns the archive's store calls that took longer
	// than its slow threshold so far (archive.Status.SlowUploads) and how
	// long the call in flight has been going, 0 between calls
	// (Status.InFlightSeconds); nil when there is no archiver.
	ArchiveUploads func() (slow uint64, inFlightSeconds float64)
	// CommitInFlight returns how long the ledger commit now in flight has
	// been running, in seconds (0 when none is).
	CommitInFlight func() float64
}

// SlowCommit is how long a ledger commit may take before it counts in
// uapk_ledger_slow_commits_total; serve gives the ledger the same bound
// for readiness (ledger.Options.StuckAfter).
const SlowCommit = 2 * time.Second

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers every collector on reg.
func New(reg prometheus.Registerer, version string, src Sources) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uapk_requests_total", Help: "Requests decided, by door, action and decision.",
		}, []string{"door", "action", "decision"}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "uapk_decision_duration_seconds", Help: "Time to decide and durably record a request.",
			Buckets: latencyBuckets,
		}),
		upstreamSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "uapk_upstream_duration_seconds", Help: "ERP round-trip time of forwarded requests.",
			Buckets: latencyBuckets,
		}, []string{"door"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uapk_upstream_errors_total", Help: "Forwarded requests the ERP did not answer.",
		}, []string{"door"}),
		approvalWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "uapk_approval_wait_seconds", Help: "Time from a request held for approval to its approval or rejection.",
			Buckets: []float64{1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600},
		}, []string{"action", "status"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "uapk_ledger_commit_duration_seconds", Help: "Duration of one ledger group commit (fsync included).",
			Buckets: latencyBuckets,
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "uapk_ledger_batch_records", Help: "Records made durable by one group commit.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		appendFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uapk_ledger_commit_failures_total", Help: "Ledger group commits that failed (nothing in them was forwarded).",
		}),
		slowCommits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "uapk_ledger_slow_commits_total", Help: "Ledger group commits that took longer than 2s (a stuck or frozen disk); /readyz is not ready while one is in flight.",
		}),
		adminRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uapk_admin_refused_total", Help: "Admin API calls refused for their token, by reason (missing_token, bad_token, missing_scope).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.requests, m.decisionSeconds, m.upstreamSeconds, m.upstreamErrors, m.approvalWait,
		m.appendSeconds, m.batchRecords, m.appendFailures, m.slowCommits, m.adminRefused)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "uapk_build_info", Help: "Build of the running proxy.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(build)
	if src.Held != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uapk_held_connections", Help: "Agent requests held open waiting for an approval.",
		}, func() float64 { return float64(src.Held()) }))
	}
	if src.PendingByAction != nil {
		reg.MustRegister(&pendingCollector{src: src.PendingByAction, desc: prometheus.NewDesc(
			"uapk_pending_approvals", "Approvals waiting for people, by action.", []string{"action"}, nil)})
	}
	if src.CommitInFlight != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uapk_ledger_commit_in_flight_seconds", Help: "How long the ledger commit now in flight has been running (0: none).",
		}, src.CommitInFlight))
	}
	if src.ArchiveBacklog != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uapk_archive_backlog_records", Help: "Ledger records not yet in the WORM archive.",
		}, func() float64 { n, _ := src.ArchiveBacklog(); return float64(n) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uapk_archive_backlog_seconds", Help: "Age of the oldest ledger record not yet archived.",
		}, func() float64 { _, s := src.ArchiveBacklog(); return s }))
	}
	if src.ArchiveUploads != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "uapk_archive_slow_uploads_total", Help: "Archive uploads (and store checks) that took longer than the slow threshold (10s), answered or not.",
		}, func() float64 { n, _ := src.ArchiveUploads(); return float64(n) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uapk_archive_upload_in_flight_seconds", Help: "How long the archive's store call in flight has been going; 0 between calls.",
		}, func() float64 { _, s := src.ArchiveUploads(); return s }))
	}
	return m
}

// Decision implements gate.Observer.
func (m *Metrics) Decision(door, action, decision string, took time.Duration) {
	if action == "" {
		action = string(record.Unclassified) // the label of requests no action matched
	}
	m.requests.WithLabelValues(door, action, decision).Inc()
	m.decisionSeconds.Observe(took.Seconds())
}

// Upstream implements gate.Observer.
func (m *Metrics) Upstream(door string, took time.Duration, err error) {
	if err != nil {
		m.upstreamErrors.WithLabelValues(door).Inc()
		return
	}
	m.upstreamSeconds.WithLabelValues(door).Observe(took.Seconds())
}

// ApprovalCompleted implements approvals.Observer.
func (m *Metrics) ApprovalCompleted(action, status string, waited time.Duration) {
	m.approvalWait.WithLabelValues(action, status).Observe(waited.Seconds())
}

// AdminRefused counts one admin call refused for its token.
func (m *Metrics) AdminRefused(reason string) {
	m.adminRefused.WithLabelValues(reason).Inc()
}

// Commit is the ledger's OnCommit hook.
func (m *Metrics) Commit(records int, took time.Duration, err error) {
	if took > SlowCommit {
		m.slowCommits.Inc()
	}
	if err != nil {
		m.appendFailures.Inc()
		return
	}
	m.appendSeconds.Observe(took.Seconds())
	m.batchRecords.Observe(float64(records))
}

// pendingCollector reads pending approvals at scrape time, so the gauge is
// right after restarts and expiries without bookkeeping on every path.
type pendingCollector struct {
	src  func() (map[string]int, error)
	desc *prometheus.Desc
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.src()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for action, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), action)
	}
}
