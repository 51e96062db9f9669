package cli

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkSidecarAutoApproved drives the whole path in-process (door, rules,
// durable ledger, forward record, mock ERP) through real loopback sockets.
// Use it with -cpuprofile; cmd/uapk-bench gives the cross-process figures.
func BenchmarkSidecarAutoApproved(b *testing.B) {
	e := newEnv(b, func(o *serveOptions) { o.LogLevel = "warn" })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", e.sidecar+"/api/v1/reconciliations", strings.NewReader(reconciliation))
			req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	st := e.srv.Ledger().Stats()
	b.ReportMetric(float64(st.Appends)/float64(st.Commits), "records/commit")
}
