package erpmock

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// do sends one request straight to ServeHTTP and decodes the JSON answer.
func do(t *testing.T, s *Server, method, target, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json", method, target, ct)
	}
	var out map[string]any
	if strings.HasPrefix(strings.TrimSpace(w.Body.String()), "{") {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, target, err, w.Body)
		}
	}
	return w.Code, out
}

// TestRoutes runs one realistic session against a fresh mock, so that the
// identifiers it hands out are predictable.
func TestRoutes(t *testing.T) {
	const entry = `{"date":"2025-01-31","description":"Accrue January revenue","reference":"INV-7781",
		"account":"4000","amount":"1250.00",
		"lines":[{"account":"1100","debit":"1250.00"},{"account":"4000","credit":1250.00,"memo":"Zürich office"}]}`
	tests := []struct {
		name         string
		method, path string
		body         string
		wantStatus   int
		want         map[string]any // fields the answer must carry
	}{
		{"post entry", "POST", "/api/v1/journal-entries", entry, 201, map[string]any{
			"id": "JE-000001", "status": "posted", "account": "4000", "amount": "1250.00", "currency": "USD",
			"date": "2025-01-31", "version": float64(1),
			"lines": []any{
				map[string]any{"account": "1100", "debit": "1250.00"},
				map[string]any{"account": "4000", "credit": "1250.00", "memo": "Zürich office"},
			},
		}},
		{"post entry, numeric amount", "POST", "/api/v1/journal-entries", `{"account":"6000","amount":5000000}`, 201,
			map[string]any{"id": "JE-000002", "amount": "5000000"}},
		{"get entry", "GET", "/api/v1/journal-entries/JE-000001", "", 200,
			map[string]any{"id": "JE-000001", "status": "posted", "reference": "INV-7781"}},
		{"get missing entry", "GET", "/api/v1/journal-entries/JE-999999", "", 404, map[string]any{"error": "not_found"}},
		{"put entry", "PUT", "/api/v1/journal-entries/JE-000001", `{"account":"4000","amount":"1300.00"}`, 200,
			map[string]any{"id": "JE-000001", "status": "posted", "amount": "1300.00", "version": float64(2)}},
		{"put new entry", "PUT", "/api/v1/journal-entries/JE-EXT-1", `{"id":"JE-EXT-1","debit":"10.00","account":"1000"}`, 200,
			map[string]any{"id": "JE-EXT-1", "debit": "10.00", "version": float64(1)}},
		{"put id mismatch", "PUT", "/api/v1/journal-entries/JE-000001", `{"id":"JE-000002"}`, 400, map[string]any{"error": "invalid_field"}},
		{"bad json", "POST", "/api/v1/journal-entries", `{"account":`, 400, map[string]any{"error": "invalid_json"}},
		{"not an object", "POST", "/api/v1/journal-entries", `[1,2]`, 400, map[string]any{"error": "invalid_json"}},
		{"empty body", "POST", "/api/v1/journal-entries", ``, 400, map[string]any{"error": "invalid_json"}},
		{"trailing data", "POST", "/api/v1/journal-entries", `{"account":"1"} {}`, 400, map[string]any{"error": "invalid_json"}},
		{"float exponent amount", "POST", "/api/v1/journal-entries", `{"amount":1e6}`, 400, map[string]any{"error": "invalid_field"}},
		{"comma amount", "POST", "/api/v1/journal-entries", `{"amount":"1,000.00"}`, 400, map[string]any{"error": "invalid_field"}},
		{"wrong type", "POST", "/api/v1/journal-entries", `{"account":4000}`, 400, map[string]any{"error": "invalid_field"}},
		{"line without account", "POST", "/api/v1/journal-entries", `{"lines":[{"debit":"1.00"}]}`, 400, map[string]any{"error": "invalid_field"}},
		{"bad date", "POST", "/api/v1/journal-entries", `{"date":"31/01/2025"}`, 400, map[string]any{"error": "invalid_field"}},
		{"10-K", "POST", "/api/v1/reports/10-K", `{"period":"FY2024","entity":"ACME Corp"}`, 201,
			map[string]any{"id": "RPT-000001", "kind": "10-K", "status": "draft", "period": "FY2024"}},
		{"balance sheet, no body", "POST", "/api/v1/reports/balance-sheet", ``, 201,
			map[string]any{"id": "RPT-000002", "kind": "balance-sheet", "status": "draft"}},
		{"report bad json", "POST", "/api/v1/reports/10-Q", `{nope}`, 400, map[string]any{"error": "invalid_json"}},
		{"reconcile", "POST", "/api/v1/reconciliations", `{"account":"1000","period":"2025-01","statement_balance":"1250000.00"}`, 200,
			map[string]any{"id": "REC-000001", "status": "reconciled", "difference": "0.00", "ledger_balance": "1250000.00"}},
		{"reconcile, ledger balance", "POST", "/api/v1/reconciliations", `{"account":"1100"}`, 200,
			map[string]any{"id": "REC-000002", "ledger_balance": "342150.75", "difference": "0.00"}},
		{"get reconciliation", "GET", "/api/v1/reconciliations/REC-000001", "", 200,
			map[string]any{"id": "REC-000001", "account": "1000", "status": "reconciled"}},
		{"get missing reconciliation", "GET", "/api/v1/reconciliations/REC-000404", "", 404, map[string]any{"error": "not_found"}},
		{"reconcile bad json", "POST", "/api/v1/reconciliations", `{"account":"1000",}`, 400, map[string]any{"error": "invalid_json"}},
		{"balance", "GET", "/api/v1/accounts/1000/balance", "", 200,
			map[string]any{"account": "1000", "name": "Cash - Operating", "balance": "1250000.00", "currency": "USD"}},
		{"balance, unknown account", "GET", "/api/v1/accounts/9999/balance", "", 200,
			map[string]any{"account": "9999", "balance": "0.00"}},
		{"modify audit log", "PUT", "/api/v1/audit-log/AL-42", `{"message":"nothing happened"}`, 200,
			map[string]any{"id": "AL-42", "status": "modified"}},
		{"patch audit log", "PATCH", "/api/v1/audit-log/AL-42", `{}`, 200, map[string]any{"status": "modified"}},
		{"delete audit log", "DELETE", "/api/v1/audit-log/2024/12/AL-42", "", 200,
			map[string]any{"id": "2024/12/AL-42", "status": "deleted"}},
		{"destroy records", "DELETE", "/api/v1/records/JE-000001", "", 200,
			map[string]any{"id": "JE-000001", "status": "destroyed"}},
		{"payroll export", "GET", "/api/v1/payroll/export", "", 200, map[string]any{"total_gross": "24300.00"}},
		{"unknown route", "GET", "/api/v1/nope", "", 404, map[string]any{"error": "not_found"}},
		{"wrong method", "DELETE", "/api/v1/journal-entries/JE-000001", "", 404, map[string]any{"error": "not_found"}},
	}
	s := New()
	for _, tc := range tests {
		status, got := do(t, s, tc.method, tc.path, tc.body)
		if status != tc.wantStatus {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, status, tc.wantStatus, got)
			continue
		}
		for k, want := range tc.want {
			if !reflect.DeepEqual(got[k], want) {
				t.Errorf("%s: %q = %#v, want %#v", tc.name, k, got[k], want)
			}
		}
		if tc.wantStatus >= 400 {
			if msg, _ := got["message"].(string); msg == "" {
				t.Errorf("%s: error without a message: %v", tc.name, got)
			}
		}
	}
}

func TestStatsCounting(t *testing.T) {
	s := New()
	calls := []struct{ method, path, body string }{
		{"POST", "/api/v1/journal-entries", `{"account":"1000","amount":"1.00"}`},
		{"POST", "/api/v1/journal-entries", `not json`}, // counted even though refused
		{"GET", "/api/v1/journal-entries/JE-000001", ""},
		{"POST", "/api/v1/reports/10-K", ""},
		{"GET", "/api/v1/accounts/1000/balance", ""},
		{"DELETE", "/api/v1/audit-log/x", ""},
		{"DELETE", "/api/v1/records/a/b", ""},
		{"GET", "/api/v1/payroll/export", ""},
		{"GET", "/elsewhere", ""},
		{"GET", "/_mock/stats", ""}, // introspection: not counted
		{"GET", "/_mock/requests", ""},
	}
	for _, c := range calls {
		do(t, s, c.method, c.path, c.body)
	}
	want := Stats{
		Total: 9,
		ByRoute: map[string]int{
			"POST /api/v1/journal-entries":      2,
			"GET /api/v1/journal-entries/{id}":  1,
			"POST /api/v1/reports/{kind}":       1,
			"GET /api/v1/accounts/{id}/balance": 1,
			"DELETE /api/v1/audit-log/{id...}":  1,
			"DELETE /api/v1/records/{id...}":    1,
			"GET /api/v1/payroll/export":        1,
			"unmatched":                         1,
		},
		ForbiddenReached: 2,
	}
	if got := s.Stats(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats() = %+v\nwant      %+v", got, want)
	}

	// The HTTP view is the same, with the field names of the contract.
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/_mock/stats", nil))
	var raw map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"total", "by_route", "leaked_uapk_headers", "leaked_hop_by_hop", "forbidden_reached"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/_mock/stats lacks %q: %s", k, w.Body)
		}
	}
	var viaHTTP Stats
	if err := json.Unmarshal(w.Body.Bytes(), &viaHTTP); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viaHTTP, want) {
		t.Errorf("/_mock/stats = %+v, want %+v", viaHTTP, want)
	}

	// Stats returns a copy.
	s.Stats().ByRoute["unmatched"] = 100
	if got := s.Stats().ByRoute["unmatched"]; got != 1 {
		t.Errorf("Stats() shares its map: unmatched = %d", got)
	}
}

func TestLeakDetection(t *testing.T) {
	tests := []struct {
		name     string
		hdr      []string
		wantUAPK []string
		wantHop  []string
	}{
		{"clean", []string{"Content-Type", "application/json", "Authorization", "Bearer erp-token"}, nil, nil},
		{"capability is allowed", []string{"X-UAPK-Capability", "v4.public.abc"}, nil, nil},
		{"app", []string{"X-UAPK-App", "financial-ai-assistant"}, []string{"X-Uapk-App"}, nil},
		{"lower case", []string{"x-uapk-justification", "month end"}, []string{"X-Uapk-Justification"}, nil},
		{"several", []string{"X-UAPK-On-Behalf-Of", "a@corp", "X-UAPK-Approval-Id", "ap_1", "X-UAPK-Capability", "t"},
			[]string{"X-Uapk-Approval-Id", "X-Uapk-On-Behalf-Of"}, nil},
		{"proxy authorization", []string{"Proxy-Authorization", "Basic Zm9vOmJhcg=="}, nil, []string{"Proxy-Authorization"}},
		{"proxy connection", []string{"Proxy-Connection", "keep-alive"}, nil, []string{"Proxy-Connection"}},
		{"keep-alive", []string{"Keep-Alive", "timeout=5"}, nil, []string{"Keep-Alive"}},
		{"te", []string{"TE", "trailers"}, nil, []string{"Te"}},
		{"trailer", []string{"Trailer", "X-Checksum"}, nil, []string{"Trailer"}},
		{"upgrade", []string{"Upgrade", "websocket"}, nil, []string{"Upgrade"}},
		{"connection close alone is fine", []string{"Connection", "close"}, nil, nil},
		{"connection keep-alive token alone is fine", []string{"Connection", "keep-alive"}, nil, nil},
		{"header named in connection", []string{"Connection", "close, X-Hop", "X-Hop", "1"}, nil, []string{"X-Hop"}},
		{"both kinds", []string{"X-UAPK-Override", "o", "Upgrade", "h2c", "Connection", "Upgrade"},
			[]string{"X-Uapk-Override"}, []string{"Upgrade"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			do(t, s, "GET", "/api/v1/accounts/1000/balance", "", tc.hdr...)
			hits := s.Hits()
			if len(hits) != 1 {
				t.Fatalf("%d hits, want 1", len(hits))
			}
			h := hits[0]
			if !slices.Equal(h.LeakedUAPK, tc.wantUAPK) || !slices.Equal(h.LeakedHopByHop, tc.wantHop) {
				t.Errorf("leaks: uapk %v hop %v, want %v %v", h.LeakedUAPK, h.LeakedHopByHop, tc.wantUAPK, tc.wantHop)
			}
			st := s.Stats()
			if want := min(len(tc.wantUAPK), 1); st.LeakedUAPKHeaders != want {
				t.Errorf("leaked_uapk_headers = %d, want %d", st.LeakedUAPKHeaders, want)
			}
			if want := min(len(tc.wantHop), 1); st.LeakedHopByHop != want {
				t.Errorf("leaked_hop_by_hop = %d, want %d", st.LeakedHopByHop, want)
			}
		})
	}
}

func TestHitsRecorded(t *testing.T) {
	s := New()
	body := `{"account":"1000","amount":"99.95"}`
	do(t, s, "POST", "/api/v1/journal-entries?dry_run=false&src=agent", body,
		"X-UAPK-Capability", "v4.public.token", "Content-Type", "application/json", "X-Request-Id", "r-1")
	hits := s.Hits()
	if len(hits) != 1 {
		t.Fatalf("%d hits, want 1", len(hits))
	}
	h := hits[0]
	sum := sha256.Sum256([]byte(body))
	want := Hit{
		Time: h.Time, Method: "POST", Path: "/api/v1/journal-entries", Query: "dry_run=false&src=agent",
		Route: "POST /api/v1/journal-entries", BodySHA256: hex.EncodeToString(sum[:]), BodySize: len(body),
		Headers:    []string{"Content-Type", "Host", "X-Request-Id", "X-Uapk-Capability"},
		Capability: "v4.public.token",
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("hit = %+v\nwant  %+v", h, want)
	}
	if h.Time.IsZero() {
		t.Error("hit has no time")
	}

	// /_mock/requests serves the same list.
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/_mock/requests", nil))
	var got []map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != 1 {
		t.Fatalf("/_mock/requests: %v %s", err, w.Body)
	}
	for k, v := range map[string]any{"method": "POST", "path": "/api/v1/journal-entries", "query": "dry_run=false&src=agent",
		"body_sha256": want.BodySHA256, "body_size": float64(len(body)), "capability": "v4.public.token"} {
		if got[0][k] != v {
			t.Errorf("/_mock/requests %q = %v, want %v", k, got[0][k], v)
		}
	}
	if _, ok := got[0]["headers"].([]any); !ok {
		t.Errorf("/_mock/requests lacks headers: %v", got[0])
	}
}

func TestHitsKeepLast1000(t *testing.T) {
	s := New()
	for i := range 1005 {
		do(t, s, "GET", fmt.Sprintf("/api/v1/accounts/1000/balance?i=%d", i), "")
	}
	hits := s.Hits()
	if len(hits) != 1000 {
		t.Fatalf("%d hits, want 1000", len(hits))
	}
	if hits[0].Query != "i=5" || hits[999].Query != "i=1004" {
		t.Errorf("hits run from %q to %q, want i=5 to i=1004", hits[0].Query, hits[999].Query)
	}
	if got := s.Stats().Total; got != 1005 {
		t.Errorf("total = %d, want 1005", got)
	}
}

func TestReset(t *testing.T) {
	for _, via := range []string{"method", "http"} {
		t.Run(via, func(t *testing.T) {
			s := New()
			do(t, s, "POST", "/api/v1/journal-entries", `{"account":"1000","amount":"1.00"}`, "X-UAPK-App", "a", "TE", "trailers")
			do(t, s, "DELETE", "/api/v1/records/1", "")
			if via == "method" {
				s.Reset()
			} else if status, got := do(t, s, "POST", "/_mock/reset", ""); status != 200 || got["status"] != "reset" {
				t.Fatalf("POST /_mock/reset: %d %v", status, got)
			}
			if st := s.Stats(); !reflect.DeepEqual(st, Stats{ByRoute: map[string]int{}}) {
				t.Errorf("after reset: %+v", st)
			}
			if h := s.Hits(); len(h) != 0 {
				t.Errorf("after reset: %d hits", len(h))
			}
			if status, _ := do(t, s, "GET", "/api/v1/journal-entries/JE-000001", ""); status != 404 {
				t.Errorf("entry survived reset: %d", status)
			}
			if _, got := do(t, s, "POST", "/api/v1/journal-entries", `{"account":"1000"}`); got["id"] != "JE-000001" {
				t.Errorf("ids did not restart: %v", got["id"])
			}
		})
	}
}

func TestIntrospectionErrors(t *testing.T) {
	s := New()
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/_mock/reset", 405},
		{"POST", "/_mock/stats", 405},
		{"DELETE", "/_mock/requests", 405},
		{"GET", "/_mock/nothing", 404},
		{"GET", "/_mock", 404},
	} {
		if status, got := do(t, s, c.method, c.path, ""); status != c.want || got["error"] == nil {
			t.Errorf("%s %s: %d %v, want %d with an error", c.method, c.path, status, got, c.want)
		}
	}
	if st := s.Stats(); st.Total != 0 {
		t.Errorf("introspection was counted: %+v", st)
	}
}

// TestRealSocket checks what a real client's request looks like after
// net/http parsed it: Host, chunked bodies and declared trailers still show.
func TestRealSocket(t *testing.T) {
	s := New()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	body := `{"account":"1000","period":"2025-01"}`
	req, err := http.NewRequest("POST", srv.URL+"/api/v1/reconciliations", io.MultiReader(strings.NewReader(body))) // unknown length: chunked
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-UAPK-Capability", "v4.public.x")
	req.Trailer = http.Header{"X-Body-Digest": nil}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rec Reconciliation
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || rec.ID != "REC-000001" || rec.Difference != "0.00" {
		t.Fatalf("reconciliation over a socket: %d %+v", resp.StatusCode, rec)
	}

	h := s.Hits()[0]
	sum := sha256.Sum256([]byte(body))
	if h.BodySHA256 != hex.EncodeToString(sum[:]) || h.BodySize != len(body) {
		t.Errorf("chunked body recorded as %s/%d", h.BodySHA256, h.BodySize)
	}
	for _, name := range []string{"Host", "Transfer-Encoding", "Trailer", "User-Agent", "X-Uapk-Capability"} {
		if !slices.Contains(h.Headers, name) {
			t.Errorf("headers %v lack %s", h.Headers, name)
		}
	}
	if !slices.Equal(h.LeakedHopByHop, []string{"Trailer"}) || s.Stats().LeakedHopByHop != 1 {
		t.Errorf("declared trailer not reported: %v", h.LeakedHopByHop)
	}
}

func TestConcurrent(t *testing.T) {
	s := New()
	const workers, each = 16, 40
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]bool{}
	)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := httptest.NewRequest("POST", "/api/v1/journal-entries",
					strings.NewReader(fmt.Sprintf(`{"account":"1000","amount":"%d.00"}`, g*each+i)))
				if i%4 == 0 {
					r.Header.Set("X-UAPK-App", "leaky")
				}
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				var e JournalEntry
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != 201 {
					t.Errorf("post: %d %v", w.Code, err)
					return
				}
				mu.Lock()
				ids[e.ID] = true
				mu.Unlock()

				s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/v1/journal-entries/"+e.ID, nil))
				_ = s.Stats()
				if i%10 == 0 { // the full list is costly under -race
					_ = s.Hits()
					s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/_mock/requests", nil))
				}
			}
		}()
	}
	wg.Wait()

	const n = workers * each
	if len(ids) != n {
		t.Errorf("%d distinct ids, want %d", len(ids), n)
	}
	st := s.Stats()
	want := map[string]int{"POST /api/v1/journal-entries": n, "GET /api/v1/journal-entries/{id}": n}
	if st.Total != 2*n || !maps.Equal(st.ByRoute, want) || st.LeakedUAPKHeaders != n/4 {
		t.Errorf("stats = %+v", st)
	}
	if got := len(s.Hits()); got != min(2*n, maxHits) {
		t.Errorf("%d hits", got)
	}
}

// TestConcurrentReset only has to be race free: resets interleave with traffic.
func TestConcurrentReset(t *testing.T) {
	s := New()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				path, method := "/api/v1/reconciliations", "POST"
				if g == 0 && i%5 == 0 {
					path = "/_mock/reset"
				}
				resp, err := srv.Client().Post(srv.URL+path, "application/json", strings.NewReader(`{"account":"1000"}`))
				if err != nil {
					t.Error(method, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.Total > 8*25 {
		t.Errorf("total %d", st.Total)
	}
}
