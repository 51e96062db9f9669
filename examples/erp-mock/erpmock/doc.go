// Package erpmock is a small in-memory ERP / general-ledger HTTP API used by
// the uapk-proxy demo and end-to-end tests.
//
// # Business routes
//
// JSON in, JSON out; amounts are decimal strings (JSON numbers are accepted on
// input and echoed as their literal text).
//
//	POST  /api/v1/journal-entries             201 {"id":"JE-000001","status":"posted",...}
//	GET   /api/v1/journal-entries/{id}        200, or 404
//	PUT   /api/v1/journal-entries/{id}        200 (replaces the entry, or creates it)
//	POST  /api/v1/reports/{kind}              201 {"id":"RPT-000001","kind":"10-K","status":"draft",...}
//	POST  /api/v1/reconciliations             200 {"id":"REC-000001","status":"reconciled","difference":"0.00",...}
//	GET   /api/v1/reconciliations/{id}        200, or 404
//	GET   /api/v1/accounts/{id}/balance       200 {"account":"1000","balance":"250000.00",...}
//	GET   /api/v1/payroll/export              200 (the example manifest leaves it unclassified)
//
// # Routes the proxy must never let through
//
// PUT and PATCH /api/v1/audit-log/{id}, DELETE /api/v1/audit-log/{id...} and
// DELETE /api/v1/records/{id...} exist here, as they do on a real ERP, and
// answer 200. Each arrival is counted in Stats.ForbiddenReached and logged
// with a FORBIDDEN marker, so a test can assert the proxy's denylist held.
//
// # Introspection
//
// Outside /api, and never counted:
//
//	GET  /_mock/stats     Stats as JSON
//	GET  /_mock/requests  the last 1000 requests (Hits) as a JSON array, oldest first
//	POST /_mock/reset     forget all requests, counters and business data
//
// Every other request is counted and remembered, including those that match
// no route (by_route key "unmatched"). A request leaks a UAPK header when it
// carries any X-UAPK-* header other than X-UAPK-Capability, and leaks a
// hop-by-hop header when it carries Proxy-Authorization, Proxy-Connection,
// Keep-Alive, TE, Trailer, Upgrade, or a header named in its Connection header.
// The proxy must strip both kinds before forwarding.
package erpmock
