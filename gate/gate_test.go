package gate_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/approvals/approvalstest"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Known answers for the request digest. Reproduce with:
//
//	b=$(printf '{"amount":1200000}' | sha256sum | cut -d' ' -f1)
//	printf 'POST\nhttp://erp.example.com/api/v1/journal-entries\n%s' "$b" | sha256sum
//
//	b=$(printf '' | sha256sum | cut -d' ' -f1)
//	printf 'GET\nhttps://erp.example.com:8443/api/v1/accounts/1010/balance?as_of=2026-09-30\n%s' "$b" | sha256sum
func TestDigestKnownAnswers(t *testing.T) {
	cases := []struct{ method, url, body, want string }{
		{"POST", "http://erp.example.com/api/v1/journal-entries", `{"amount":1200000}`,
			"6d67618335a60834058fb9905fb80c4f05bed328e3b86a115a03b1fd6d458c9e"},
		{"GET", "https://erp.example.com:8443/api/v1/accounts/1010/balance?as_of=2026-09-30", "",
			"c8149728b2d13af8a523ea0189a066f3777693623faa2201ad1697b1a0d6dc7b"},
	}
	for _, c := range cases {
		if got := gate.Digest(c.method, c.url, []byte(c.body)); got != c.want {
			t.Errorf("Digest(%s %s) = %s, want %s", c.method, c.url, got, c.want)
		}
	}
}

// A Wednesday, 11:00 in New York: inside the manifest's business hours.
var now = time.Date(2026, 9, 30, 15, 0, 0, 0, time.UTC)

const (
	fm      = "fm@corp.example"
	analyst = "accountant@corp.example"
	app     = "financial-ai-assistant"
)

// world is a gate and its approvals service over one in-memory chain.
type world struct {
	g     *gate.Gate
	svc   *approvals.Service
	l     *approvalstest.Ledger
	fmKey ed25519.PrivateKey
	clock time.Time
	mu    sync.Mutex
}

func (w *world) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clock
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	w.clock = w.clock.Add(d)
	w.mu.Unlock()
}

func newWorld(t *testing.T) *world { t.Helper(); return newWorldWith(t, "") }

// newWorldWith is newWorld over the example manifest with extra top-level
// members (JSON text such as `"max_pending": 2,`).
func newWorldWith(t *testing.T, extra string) *world {
	t.Helper()
	raw, err := os.ReadFile("../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(raw), "{", "{"+extra, 1)
	m, err := rules.ParseManifest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemText := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "\n", "\n      ")
	p, err := rules.ParsePrincipals([]byte(fmt.Sprintf(`principals:
  - id: %s
    roles: [staff_accountant]
  - id: %s
    roles: [finance_manager]
    public_key: |
      %s
`, analyst, fm, pemText)), ".")
	if err != nil {
		t.Fatal(err)
	}
	eng := rules.NewEngine(m, p)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, err := tokens.NewIssuer(gw)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{l: &approvalstest.Ledger{}, fmKey: priv, clock: now}
	w.svc, err = approvals.New(approvals.Config{Store: approvalstest.NewStore(w.l), Ledger: w.l, Tokens: iss,
		Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop(), Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	w.g, err = gate.New(gate.Config{Engine: eng, Ledger: w.l, Approvals: w.svc, Logger: zerolog.Nop(), Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func journalEntry() *gate.Call {
	return &gate.Call{Door: "sidecar", Justification: "quarter-end accrual", Req: rules.Request{
		Method: "POST", Scheme: "http", Host: "erp.example.com", Path: "/api/v1/journal-entries",
		Body: []byte(`{"account":"2100","credit":250000}`), App: app, OnBehalfOf: analyst,
	}}
}

func reconciliation() *gate.Call {
	return &gate.Call{Door: "sidecar", Req: rules.Request{
		Method: "POST", Scheme: "http", Host: "erp.example.com", Path: "/api/v1/reconciliations",
		Body: []byte(`{"account":"1010"}`), App: app, OnBehalfOf: analyst,
	}}
}

// approve signs and posts the finance manager's approval of id.
func (w *world) approve(t *testing.T, id string) *approvals.Approval {
	t.Helper()
	a, err := w.svc.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	at := w.now().UTC().Format(time.RFC3339)
	sub := approvals.Submission{Approver: fm, Decision: approvals.Approve, SignedAt: at,
		Signature: approvals.Sign(w.fmKey, id, a.Digest, approvals.Approve, fm, at)}
	got, ref, err := w.svc.Decide(id, sub)
	if err != nil || ref != nil {
		t.Fatalf("decide: %v %v", ref, err)
	}
	return got
}

func (w *world) held(t *testing.T) *gate.Verdict {
	t.Helper()
	v := w.g.Check(journalEntry())
	if v.Outcome != rules.Pending || v.ApprovalID == "" || v.Reason != record.ApprovalRequired || v.Forward() {
		t.Fatalf("journal entry: %+v", v)
	}
	return v
}

func retry(id string) *gate.Call {
	c := journalEntry()
	c.ApprovalID = id
	return c
}

func TestGateRefusesWhenTheLedgerFails(t *testing.T) {
	w := newWorld(t)
	w.l.Fail = errors.New("disk full")
	v := w.g.Check(reconciliation())
	if v.Forward() || v.Outcome != rules.Deny || v.Reason != record.LedgerUnavailable || v.Record != 0 {
		t.Fatalf("verdict %+v", v)
	}
}

func TestGateRecordsTheDecisionBeforeAllowing(t *testing.T) {
	w := newWorld(t)
	c := reconciliation()
	v := w.g.Check(c)
	recs := w.l.Records()
	if !v.Forward() || v.Record != 1 || len(recs) != 1 {
		t.Fatalf("verdict %+v, %d records", v, len(recs))
	}
	e := recs[0]
	want := gate.Digest("POST", "http://erp.example.com/api/v1/reconciliations", c.Req.Body)
	if e.Kind != record.KindRequest || e.Decision != record.Allow || e.Reason != rules.ReasonAutoApprove ||
		e.Digest != want || e.Action != "account_reconciliation" || e.Policy != w.g.Engine().Manifest().Hash {
		t.Errorf("record %+v", e)
	}
	w.g.Forwarded(v, gate.ERPOutcome{Status: 201, Body: []byte("{}"), Duration: 3 * time.Millisecond})
	f := w.l.Last()
	if f.Kind != record.KindForward || f.Data["status"] != 201 || f.Data["request_record"] != uint64(1) || f.Data["latency_ms"] != int64(3) {
		t.Errorf("forward record %+v", f)
	}
}

// TestApprovedRequestGoesThroughOnce plays an approval's whole life through
// the gate and the service, with an in-memory store: held, approved, let
// through once by its id, and never again, by id or by token.
func TestApprovedRequestGoesThroughOnce(t *testing.T) {
	w := newWorld(t)
	v := w.held(t)
	a, err := w.svc.Get(v.ApprovalID)
	if err != nil || a.RequestRecord != v.Record || a.Status != approvals.StatusPending {
		t.Fatalf("stored approval %+v, %v (verdict record %d)", a, err, v.Record)
	}

	// Before approval, a retry is refused and changes nothing.
	if r := w.g.Check(retry(v.ApprovalID)); r.Forward() || r.Reason != record.NotApproved {
		t.Fatalf("retry before approval: %+v", r)
	}
	a = w.approve(t, v.ApprovalID)
	if a.Status != approvals.StatusApproved || a.Token == "" {
		t.Fatalf("after approval: %+v", a)
	}

	r := w.g.Check(retry(v.ApprovalID))
	if !r.Forward() || r.Reason != record.Approved || r.Capability != a.Token || r.ApprovalID != v.ApprovalID {
		t.Fatalf("approved retry: %+v", r)
	}
	if a, _ = w.svc.Get(v.ApprovalID); a.Consumed != r.Record {
		t.Errorf("consumed by %d, the allowing record is %d", a.Consumed, r.Record)
	}
	again := w.g.Check(retry(v.ApprovalID))
	if again.Forward() || again.Reason != record.Consumed {
		t.Errorf("second retry: %+v", again)
	}
	replay := journalEntry()
	replay.Capability = r.Capability
	if rv := w.g.Check(replay); rv.Forward() || rv.Reason != record.Consumed {
		t.Errorf("capability replay: %+v", rv)
	}
	other := journalEntry()
	other.Req.Body = []byte(`{"account":"2100","credit":250001}`)
	other.ApprovalID = v.ApprovalID
	if ov := w.g.Check(other); ov.Forward() || ov.Reason != record.DigestMismatch {
		t.Errorf("another body under the approval: %+v", ov)
	}
}

// TestCapabilityTokenUsedOnce: the token alone (no approval id) lets the
// request through once, bound to its digest.
func TestCapabilityTokenUsedOnce(t *testing.T) {
	w := newWorld(t)
	v := w.held(t)
	a := w.approve(t, v.ApprovalID)
	c := journalEntry()
	c.Capability = a.Token
	if r := w.g.Check(c); !r.Forward() || r.Reason != record.Capability {
		t.Fatalf("capability: %+v", r)
	}
	c = journalEntry()
	c.Capability = a.Token
	if r := w.g.Check(c); r.Forward() || r.Reason != record.Consumed {
		t.Fatalf("capability twice: %+v", r)
	}
	if r := w.g.Check(retry(v.ApprovalID)); r.Forward() || r.Reason != record.Consumed {
		t.Fatalf("approval id after its token was used: %+v", r)
	}
}

// TestRacingRetriesForwardOnce: many agents retrying one approval at once;
// exactly one is let through, every other is recorded as refused.
func TestRacingRetriesForwardOnce(t *testing.T) {
	w := newWorld(t)
	v := w.held(t)
	w.approve(t, v.ApprovalID)
	const n = 32
	var wg sync.WaitGroup
	out := make(chan *gate.Verdict, n)
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); out <- w.g.Check(retry(v.ApprovalID)) }()
	}
	wg.Wait()
	close(out)
	allowed, refused := 0, 0
	for r := range out {
		switch {
		case r.Forward():
			allowed++
		case r.Reason == record.Consumed && r.Record != 0:
			refused++
		default:
			t.Errorf("unexpected verdict %+v", r)
		}
	}
	if allowed != 1 || refused != n-1 {
		t.Errorf("%d allowed, %d refused; want 1 and %d", allowed, refused, n-1)
	}
}

// TestLedgerFailureKeepsTheApprovalUsable: when the record that would use
// an approval cannot be written, nothing is forwarded and the approval is
// not burnt.
func TestLedgerFailureKeepsTheApprovalUsable(t *testing.T) {
	w := newWorld(t)
	v := w.held(t)
	w.approve(t, v.ApprovalID)
	w.l.Fail = errors.New("disk full")
	if r := w.g.Check(retry(v.ApprovalID)); r.Forward() || r.Reason != record.LedgerUnavailable {
		t.Fatalf("retry with the ledger down: %+v", r)
	}
	w.l.Fail = nil
	if r := w.g.Check(retry(v.ApprovalID)); !r.Forward() {
		t.Fatalf("retry once the ledger is back: %+v", r)
	}
}

// TestRejectedAndExpired: a rejection is final (403 rejected), and an
// approval nobody decided in time expires with a record of its own.
func TestRejectedAndExpired(t *testing.T) {
	w := newWorld(t)
	v := w.held(t)
	at := w.now().UTC().Format(time.RFC3339)
	a, _ := w.svc.Get(v.ApprovalID)
	_, ref, err := w.svc.Decide(v.ApprovalID, approvals.Submission{Approver: fm, Decision: approvals.Reject,
		Reason: "wrong account", SignedAt: at, Signature: approvals.Sign(w.fmKey, a.ID, a.Digest, approvals.Reject, fm, at)})
	if err != nil || ref != nil {
		t.Fatal(ref, err)
	}
	if r := w.g.Check(retry(v.ApprovalID)); r.Forward() || r.Reason != record.Rejected {
		t.Errorf("retry of a rejected request: %+v", r)
	}

	v2 := w.held(t)
	w.advance(25 * time.Hour) // past the default 24h approval_ttl
	n, err := w.svc.ExpireDue()
	if err != nil || n != 1 {
		t.Fatalf("ExpireDue = %d, %v", n, err)
	}
	last := w.l.Last()
	if last.Kind != record.KindApproval || last.Decision != record.Expired || last.Reason != record.TTLElapsed || last.ApprovalID != v2.ApprovalID {
		t.Errorf("expiry record %+v", last)
	}
	if a, _ := w.svc.Get(v2.ApprovalID); a.Status != approvals.StatusExpired {
		t.Errorf("status %q after expiry", a.Status)
	}
	if n, _ := w.svc.ExpireDue(); n != 0 {
		t.Errorf("a second sweep expired %d again", n)
	}
}

// TestHoldFailsClosed: when the held request's record cannot be written,
// no approval is left behind either.
func TestHoldFailsClosed(t *testing.T) {
	w := newWorld(t)
	w.l.Fail = errors.New("disk full")
	if v := w.g.Check(journalEntry()); v.Reason != record.LedgerUnavailable {
		t.Fatalf("%+v", v)
	}
	if list, _ := w.svc.List(""); len(list) != 0 {
		t.Errorf("%d approvals stored without their record", len(list))
	}
}

// TestRewritesAreRefused: a request that names another method or target
// in a header or a _method parameter is refused and recorded, whatever the
// rules would have said of what the gate sees.
func TestRewritesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		query    string
		rewrites []string
		refused  bool
	}{
		{"plain", "", nil, false},
		{"method override header", "", []string{"X-HTTP-Method-Override"}, true},
		{"original url header", "", []string{"X-Original-URL"}, true},
		{"_method", "_method=DELETE", nil, true},
		{"_method encoded", "a=1&%5Fmethod=DELETE", nil, true},
		{"_METHOD after ;", "a=1;_METHOD=DELETE", nil, true},
		{"_method with + space", "_method+=DELETE", nil, true},
		{"_method without value", "x=1&_method", nil, true},
		{"x_method is another parameter", "x_method=DELETE", nil, false},
		{"the word in a value", "note=_method", nil, false},
		{"form body", "form:_method=DELETE", nil, true},
		{"form body, encoded", "form:a=1&%5F%4Dethod=DELETE", nil, true},
		{"multipart body", "multipart:--b\r\nContent-Disposition: form-data; name=\"_METHOD\"\r\n\r\nDELETE\r\n--b--", nil, true},
		{"json body that names it", `json:{"_method":"DELETE"}`, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			c := reconciliation()
			c.Req.RawQuery, c.Rewrites = tc.query, tc.rewrites
			if kind, body, ok := strings.Cut(tc.query, ":"); ok && strings.Contains("form multipart json", kind) {
				c.Req.RawQuery, c.Req.Body = "", []byte(body)
				c.Req.ContentType = map[string]string{"form": "application/x-www-form-urlencoded", "multipart": "multipart/form-data; boundary=b", "json": "application/json"}[kind]
			}
			v := w.g.Check(c)
			if !tc.refused {
				if !v.Forward() {
					t.Fatalf("refused: %+v", v)
				}
				return
			}
			if v.Forward() || v.Reason != record.AmbiguousRequest || v.Record == 0 {
				t.Fatalf("verdict %+v, want a recorded ambiguous_request", v)
			}
			if r := w.l.Last(); r.Reason != record.AmbiguousRequest || r.Data["detail"] == nil {
				t.Errorf("record %+v", r)
			}
		})
	}
}

// TestApprovalBindsTheHeadersThatChangeTheBody: an approved retry whose
// Content-Type or Content-Encoding is not the approved request's is
// refused 409 headers_mismatch, by approval id or by token, and leaves the
// approval usable by the request as approved.
func TestApprovalBindsTheHeadersThatChangeTheBody(t *testing.T) {
	w := newWorld(t)
	held := journalEntry()
	held.Req.ContentType = "application/json"
	v := w.g.Check(held)
	if v.Outcome != rules.Pending {
		t.Fatalf("%+v", v)
	}
	a := w.approve(t, v.ApprovalID)
	for _, tc := range []struct{ name, ct, ce string }{
		{"form-encoded", "application/x-www-form-urlencoded", ""},
		{"no content type", "", ""},
		{"gzip", "application/json", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			byID := retry(v.ApprovalID)
			byID.Req.ContentType, byID.ContentEncoding = tc.ct, tc.ce
			if r := w.g.Check(byID); r.Forward() || r.Reason != record.HeadersMismatch || r.Record == 0 {
				t.Errorf("by approval id: %+v", r)
			}
			byToken := journalEntry()
			byToken.Capability, byToken.Req.ContentType, byToken.ContentEncoding = a.Token, tc.ct, tc.ce
			if r := w.g.Check(byToken); r.Forward() || r.Reason != record.HeadersMismatch {
				t.Errorf("by token: %+v", r)
			}
		})
	}
	ok := retry(v.ApprovalID)
	ok.Req.ContentType = "application/json"
	if r := w.g.Check(ok); !r.Forward() {
		t.Fatalf("the approved request as approved: %+v", r)
	}
}

// TestMaxPending: an app holding max_pending pending approvals gets 429
// too_many_pending for the next, recorded, with nothing stored; a decided
// approval frees its place.
func TestMaxPending(t *testing.T) {
	w := newWorldWith(t, `"max_pending": 2,`)
	first, _ := w.held(t), w.held(t)
	v := w.g.Check(journalEntry())
	if v.Forward() || v.Reason != record.TooManyPending || v.ApprovalID != "" || v.Record == 0 {
		t.Fatalf("third hold: %+v", v)
	}
	if r := w.l.Last(); r.Decision != record.Deny || r.Reason != record.TooManyPending || r.ApprovalID != "" {
		t.Errorf("record %+v", r)
	}
	if list, _ := w.svc.List(""); len(list) != 2 {
		t.Errorf("%d approvals stored, want 2", len(list))
	}
	w.approve(t, first.ApprovalID)
	if v := w.g.Check(journalEntry()); v.Outcome != rules.Pending {
		t.Errorf("after one was approved: %+v", v)
	}
	// Expiry frees places too.
	w.advance(25 * time.Hour)
	if n, err := w.svc.ExpireDue(); err != nil || n != 2 {
		t.Fatalf("ExpireDue = %d, %v", n, err)
	}
	w.held(t)
	w.held(t)
}

// stuckLedger never commits: every Append waits for its context.
type stuckLedger struct{ *approvalstest.Ledger }

func (stuckLedger) Append(ctx context.Context, _ ledger.Entry) (ledger.Record, error) {
	<-ctx.Done()
	return ledger.Record{}, ctx.Err()
}

// TestStuckLedgerRefusesAfterTheAppendTimeout: a request whose record
// cannot be written within the gate's own deadline is refused,
// ledger_unavailable, and not let through.
func TestStuckLedgerRefusesAfterTheAppendTimeout(t *testing.T) {
	w := newWorld(t)
	g, err := gate.New(gate.Config{Engine: w.g.Engine(), Ledger: stuckLedger{w.l}, Approvals: w.svc,
		Logger: zerolog.Nop(), Now: w.now, AppendTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := g.Check(reconciliation())
			if v.Forward() || v.Reason != record.LedgerUnavailable {
				t.Errorf("verdict %s %s, want deny ledger_unavailable", v.Decision(), v.Reason)
			}
		}()
	}
	wg.Wait()
}
