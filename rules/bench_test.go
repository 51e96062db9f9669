package rules

import (
	"testing"
)

func BenchmarkDecide(b *testing.B) {
	e := loadEngine(b, "testdata/sox-financial.json")
	cases := []struct {
		name string
		r    *Request
	}{
		{"reconciliation_auto", &Request{Method: "GET", Scheme: "https", Host: "erp.example.com",
			Path: "/api/v1/reconciliations/2026-03/gl-1000", OnBehalfOf: "staff@corp.example", Time: monday}},
		{"journal_entry_amount", &Request{Method: "POST", Scheme: "https", Host: "erp.example.com",
			Path: "/api/v1/journal-entries", Time: monday,
			Body: []byte(`{"date":"2026-03-09","memo":"accrual","lines":[` +
				`{"account":"6100","debit":"12500.00"},{"account":"2100","credit":12500.00},` +
				`{"account":"6200","debit":990.10},{"account":"2100","credit":990.10}]}`)}},
		{"reconciliation_post", &Request{Method: "POST", Scheme: "https", Host: "erp.example.com",
			Path: "/api/v1/reconciliations", ContentType: "application/json", OnBehalfOf: "staff@corp.example", Time: monday,
			Body: []byte(`{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`)}},
		{"unclassified", &Request{Method: "GET", Scheme: "https", Host: "erp.example.com",
			Path: "/api/v2/unknown/thing", Time: monday}},
		{"denylisted", &Request{Method: "DELETE", Scheme: "https", Host: "erp.example.com",
			Path: "/api/v1/audit-log/2026/03", Time: monday}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(c.r)
			}
		})
	}
}

func BenchmarkParseManifest(b *testing.B) {
	m := mustLoad(b, "testdata/sox-financial.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseManifest(m.Raw); err != nil {
			b.Fatal(err)
		}
	}
}
