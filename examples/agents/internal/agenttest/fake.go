// Package agenttest runs the example agents' tests against uapk-proxy: a
// small fake that answers as docs/reference.md#status-codes-and-bodies says (to drive every branch of an
// agent quickly, and to act as an HTTP proxy for the Python agent), and the
// real binary built from cmd/uapk-proxy in front of the mock ERP.
package agenttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
)

// Fake decides the seed's requests the way the sox-financial manifest
// does, for the few routes the agents use: reconciliations are allowed for
// a staff accountant, journal entries wait for approval (cfo + controller
// above $1M), everything else is denied. Allowed requests go to ERP.
type Fake struct {
	ERP *erpmock.Server

	mu        sync.Mutex
	seq       int
	approvals map[string]*FakeApproval
	order     []string
	requests  []Request
}

// FakeApproval is one approval the fake holds.
type FakeApproval struct {
	ID       string
	Action   string
	Digest   string
	Roles    []string
	Status   string // pending, approved, rejected, expired, consumed
	Rejecter string
	Reason   string
}

// Request is a request as the fake's door received it.
type Request struct {
	Method     string
	RequestURI string // absolute-form when sent to an HTTP proxy
	Path       string
	ApprovalID string
	Body       []byte
}

// ViaProxy tells whether the client sent the request to an HTTP proxy.
func (r Request) ViaProxy() bool { return strings.HasPrefix(r.RequestURI, "http://") }

// NewFake returns a fake with an empty mock ERP behind it.
func NewFake() *Fake {
	return &Fake{ERP: erpmock.New(), approvals: map[string]*FakeApproval{}}
}

// ServeHTTP is the door: the sidecar (origin-form requests) and the
// forward proxy (absolute-form requests) at once. CONNECT is refused: the
// tests use plain HTTP.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		http.Error(w, "no CONNECT in this fake", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	approvalID := r.Header.Get("X-UAPK-Approval-Id")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, Request{r.Method, r.RequestURI, r.URL.Path, approvalID, body})
	f.seq++
	w.Header().Set("X-UAPK-Record", strconv.Itoa(f.seq))
	digest := digestOf(r, body)

	if approvalID != "" {
		a := f.approvals[approvalID]
		switch {
		case a == nil:
			refuse(w, 409, "approval_not_usable", "not_approved", "")
		case a.Digest != digest:
			refuse(w, 409, "approval_not_usable", "digest_mismatch", a.Action)
		case a.Status == "pending":
			refuse(w, 409, "approval_not_usable", "not_approved", a.Action)
		case a.Status == "rejected":
			refuse(w, 403, "denied", "rejected", a.Action)
		case a.Status == "expired" || a.Status == "consumed":
			refuse(w, 409, "approval_not_usable", a.Status, a.Action)
		default:
			a.Status = "consumed"
			f.forward(w, r, body, a.Action)
		}
		return
	}

	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/reconciliations":
		if r.Header.Get("X-UAPK-On-Behalf-Of") != "accountant@corp.example" {
			refuse(w, 403, "denied", "role_not_allowed", "account_reconciliation")
			return
		}
		f.forward(w, r, body, "account_reconciliation")
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/journal-entries":
		roles := []string{"finance_manager"}
		if amount(body) > 1_000_000 {
			roles = []string{"cfo", "controller"}
		}
		id := fmt.Sprintf("apr_fake%03d", len(f.order)+1)
		f.approvals[id] = &FakeApproval{ID: id, Action: "journal_entry", Digest: digest, Roles: roles, Status: "pending"}
		f.order = append(f.order, id)
		w.Header().Set("X-UAPK-Decision", "pending")
		w.Header().Set("X-UAPK-Approval-Id", id)
		writeJSON(w, http.StatusAccepted, map[string]any{
			"status": "PENDING_APPROVAL", "approval_id": id, "action": "journal_entry",
			"required_roles": roles, "expires_at": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
		})
	default:
		refuse(w, 403, "denied", "unclassified", "")
	}
}

// forward sends the request to the mock ERP without the X-UAPK-* headers.
func (f *Fake) forward(w http.ResponseWriter, r *http.Request, body []byte, action string) {
	req := httptest.NewRequest(r.Method, r.URL.RequestURI(), bytes.NewReader(body))
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	rec := httptest.NewRecorder()
	f.ERP.ServeHTTP(rec, req)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("X-UAPK-Decision", "allow")
	w.Header().Set("X-UAPK-Action", action)
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// FakeAdminToken is the one token the fake's admin API accepts.
const FakeAdminToken = "uapk_fake-read-scoped-token"

// Admin serves GET /v1/approvals/{id} like the admin API, to a caller with
// Authorization: Bearer FakeAdminToken; without it, 401 as the admin API
// answers (docs/reference.md#admin-api).
func (f *Fake) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch auth := r.Header.Get("Authorization"); auth {
		case "Bearer " + FakeAdminToken:
		case "":
			unauthenticated(w, "missing_token")
			return
		default:
			unauthenticated(w, "bad_token")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.approvals[r.PathValue("id")]
		if a == nil {
			writeJSON(w, 404, map[string]any{"error": "not_found"})
			return
		}
		status := a.Status
		if status == "consumed" {
			status = "approved"
		}
		decisions := []map[string]any{}
		if a.Rejecter != "" {
			decisions = append(decisions, map[string]any{"approver": a.Rejecter, "decision": "reject", "reason": a.Reason})
		}
		writeJSON(w, 200, map[string]any{"id": a.ID, "status": status, "action": a.Action,
			"digest": a.Digest, "required_roles": a.Roles, "decisions": decisions})
	})
	return mux
}

// Pending lists the ids of pending approvals, oldest first.
func (f *Fake) Pending() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, id := range f.order {
		if f.approvals[id].Status == "pending" {
			ids = append(ids, id)
		}
	}
	return ids
}

// Approval returns a copy of an approval.
func (f *Fake) Approval(id string) FakeApproval {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.approvals[id]
}

// Approve completes an approval.
func (f *Fake) Approve(id string) { f.set(id, "approved", "", "") }

// Reject ends an approval with a rejection.
func (f *Fake) Reject(id, who, reason string) { f.set(id, "rejected", who, reason) }

// Expire lets an approval run out.
func (f *Fake) Expire(id string) { f.set(id, "expired", "", "") }

func (f *Fake) set(id, status, who, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.approvals[id]
	a.Status, a.Rejecter, a.Reason = status, who, reason
}

// Requests returns every request the door received, in order.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// digestOf is the request digest (docs/reference.md#request-digest) over the URL as received.
func digestOf(r *http.Request, body []byte) string {
	u := r.URL.String()
	if !r.URL.IsAbs() {
		u = "http://erp.fake" + r.URL.RequestURI()
	}
	b := sha256.Sum256(body)
	d := sha256.Sum256([]byte(r.Method + "\n" + u + "\n" + hex.EncodeToString(b[:])))
	return hex.EncodeToString(d[:])
}

// amount is the largest of the body's amount, debit and credit.
func amount(body []byte) float64 {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	var max float64
	for _, k := range []string{"amount", "debit", "credit"} {
		if v, ok := m[k].(float64); ok && v > max {
			max = v
		}
	}
	return max
}

func refuse(w http.ResponseWriter, status int, kind, reason, action string) {
	w.Header().Set("X-UAPK-Decision", "deny")
	if action != "" {
		w.Header().Set("X-UAPK-Action", action)
	}
	rec, _ := strconv.Atoi(w.Header().Get("X-UAPK-Record"))
	writeJSON(w, status, map[string]any{"error": kind, "reason": reason, "action": action, "record": rec})
}

func unauthenticated(w http.ResponseWriter, reason string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="uapk-proxy admin"`)
	writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "unauthenticated", "reason": reason,
		"message": "send Authorization: Bearer TOKEN"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
