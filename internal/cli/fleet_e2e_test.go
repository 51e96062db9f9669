package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// withFleet keeps the approvals in a shared PostgreSQL, as instance name.
func withFleet(dsn, name string) func(*serveOptions) {
	return func(o *serveOptions) {
		cfg := filepath.Join(filepath.Dir(o.Principals), "uapk-fleet-"+name+".yaml")
		if err := os.WriteFile(cfg, []byte("approvals:\n  postgres: "+dsn+"\n  instance: "+name+"\n"), 0o600); err != nil {
			panic(err)
		}
		o.Config = cfg
	}
}

// TestFleetOneQueue: two proxies over one PostgreSQL. A request held at A
// is released within a second of its approval posted to B; the ERP sees it
// once; B's retry of the same approval gets 409 consumed. And 50 retries of
// one approval spread over both give exactly one ERP call.
func TestFleetOneQueue(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a := newEnv(t, withHold("2m"), withFleet(dsn, "proxy-a"))
	// B: same principals (same people, same keys), its own ledger and ERP view.
	b := newEnv(t, withFleet(dsn, "proxy-b"), func(o *serveOptions) {
		o.Principals, o.Upstream = a.opts.Principals, a.opts.Upstream
	})
	b.keyDir, b.erp = a.keyDir, a.erp

	done := make(chan reply, 1)
	go func() {
		done <- a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}()
	var id string
	for i := 0; i < 200 && id == ""; i++ {
		var list struct{ Approvals []struct{ ID string } }
		b.adminGet("/v1/approvals?status=pending", &list) // B sees what A holds
		if len(list.Approvals) == 1 {
			id = list.Approvals[0].ID
		}
		time.Sleep(10 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("B never saw the approval A holds")
	}
	start := time.Now()
	if code, m := b.decide(id, "fm@corp.example", "fm", "approve", b.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approval at B: %d %v", code, m)
	}
	select {
	case r := <-done:
		if r.status != 201 {
			t.Fatalf("held at A: %d %s", r.status, r.body)
		}
		t.Logf("held at A released %v after the decision at B", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the request held at A was not released within 5 s of the decision at B")
	}
	if n := a.erp.Stats().Total; n != 1 {
		t.Fatalf("the ERP saw %d requests", n)
	}
	if r := b.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 409 || r.json(t)["reason"] != "consumed" {
		t.Fatalf("retry at B: %d %s", r.status, r.body)
	}

	// 50 retries of one approved approval over both proxies: one goes through.
	r := b.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":260000}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id2 := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id2 == "" {
		t.Fatalf("second entry: %d %s", r.status, r.body)
	}
	if code, m := a.decide(id2, "fm@corp.example", "fm", "approve", a.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approval at A: %d %v", code, m)
	}
	before := a.erp.Stats().Total
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":260000}`, "X-UAPK-Approval-Id", id2)
			mu.Lock()
			codes[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got := a.erp.Stats().Total - before; got != 1 || codes[201] != 1 {
		t.Fatalf("50 retries over two proxies: the ERP saw %d, answers %v", got, codes)
	}
	if fmt.Sprint(codes[409]) != "49" {
		t.Errorf("answers %v, want 49 consumed", codes)
	}
	// A row approved behind the proxies' back, with no signed decision
	// (anyone who can write the database): refused by the proxy that would
	// act on it.
	r = b.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":270000}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id3 := r.header.Get("X-UAPK-Approval-Id")
	forge(t, dsn, id3)
	if r := a.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":270000}`, "X-UAPK-Approval-Id", id3); r.status != 409 || r.json(t)["reason"] != "not_approved" {
		t.Fatalf("a forged approval: %d %s", r.status, r.body)
	}
	if !strings.Contains(a.logs.String(), "does not hold up against this proxy's principals") {
		t.Error("the forged approval was not logged")
	}
	for _, e := range []*env{a, b} {
		var rep struct{ OK bool }
		if code := e.adminGet("/v1/ledger/verify", &rep); code != 200 || !rep.OK {
			t.Errorf("%s chain: %d %v", strings.TrimPrefix(e.admin, "http://"), code, rep)
		}
	}
	// Each instance archives under APP/INSTANCE/, and verify --archive with
	// the same config finds it.
	a.stop()
	segs, _ := filepath.Glob(filepath.Join(a.opts.DataDir, "archive", "financial-ai-assistant", "proxy-a", "segments", "*.jsonl"))
	if len(segs) == 0 {
		t.Fatalf("no segment under archive/financial-ai-assistant/proxy-a/segments")
	}
	var out bytes.Buffer
	if code := runCLI(t, &out, "verify", "--data-dir", a.opts.DataDir, "--archive", "--manifest", a.opts.Manifest, "--config", a.opts.Config); code != 0 ||
		!strings.Contains(out.String(), "proxy-a") {
		t.Fatalf("verify --archive: %d %s", code, out.String())
	}
}

// forge approves approval id in the database directly, as someone with
// write access to it could: status approved, a token, no decision.
func forge(t *testing.T, dsn, id string) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := pgstore.Open(t.Context(), dsn, l, zerolog.Nop(), pgstore.Instance("intruder"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Update(t.Context(), id, ledger.Entry{Kind: record.KindApproval, Decision: record.Approve, Reason: record.Signed, ApprovalID: id},
		func(a *approvals.Approval, _ *ledger.Record) error {
			a.Status, a.Token, a.TokenID, a.TokenExp = approvals.StatusApproved, "v4.public.forged", "tok_forged", time.Now().Add(time.Hour)
			return nil
		}); err != nil {
		t.Fatal(err)
	}
}

// TestFleetPostgresDown: with the shared PostgreSQL killed, nothing that
// needs an approval goes through and nothing new is held (503), held
// agents get their 202 when their hold ends, and once PostgreSQL is back
// the approval completes and the retry goes through once.
func TestFleetPostgresDown(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a := newEnv(t, withFleet(dsn, "proxy-a"), func(o *serveOptions) {
		b, _ := os.ReadFile(o.Manifest)
		p := filepath.Join(filepath.Dir(o.Principals), "manifest-hold-short.json")
		os.WriteFile(p, bytes.Replace(b, []byte(`"hold": "0s"`), []byte(`"hold": "2s"`), 1), 0o644)
		o.Manifest = p
	})
	done := make(chan reply, 1)
	go func() {
		done <- a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	}()
	var id string
	for i := 0; i < 100 && id == ""; i++ {
		var list struct{ Approvals []struct{ ID string } }
		a.adminGet("/v1/approvals?status=pending", &list)
		if len(list.Approvals) == 1 {
			id = list.Approvals[0].ID
		}
		time.Sleep(10 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("nothing held")
	}
	pg.Kill()
	r := <-done // the hold (2 s) ends while PostgreSQL is down
	if r.status != 202 || r.header.Get("X-UAPK-Approval-Id") != id {
		t.Fatalf("held agent with PostgreSQL down: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/api/v1/journal-entries", `{"account":"4000-Revenue","credit":280000}`, "X-UAPK-On-Behalf-Of", "accountant@corp.example"); r.status != 503 {
		t.Fatalf("a new entry needing approval with PostgreSQL down: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status/100 == 2 {
		t.Fatalf("a retry with PostgreSQL down went through: %d %s", r.status, r.body)
	}
	if n := a.erp.Stats().Total; n != 0 {
		t.Fatalf("the ERP saw %d requests while PostgreSQL was down", n)
	}
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	var code int
	var m map[string]any
	for i := 0; i < 50; i++ { // the pool reconnects
		if code, m = a.decide(id, "fm@corp.example", "fm", "approve", a.clock.Now()); code == 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 || m["status"] != "approved" {
		t.Fatalf("approval after PostgreSQL returned: %d %v", code, m)
	}
	if r := a.do("POST", "/api/v1/journal-entries", accrual250k, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("retry after PostgreSQL returned: %d %s", r.status, r.body)
	}
	if n := a.erp.Stats().Total; n != 1 {
		t.Fatalf("the ERP saw %d requests", n)
	}
}
