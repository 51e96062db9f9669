package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// MaxRecordsPage bounds one GET /v1/ledger/records answer.
const MaxRecordsPage = 10000

// AdminLedger is what the admin API reads from the chain.
type AdminLedger interface {
	Head() ledger.Head
	Healthy() error
	Verify(ctx context.Context, expect ...ledger.Head) (ledger.Report, error)
	Range(from, to uint64, fn func(seq uint64, raw []byte) error) error
}

// ApprovalLister serves the approval endpoints.
type ApprovalLister interface {
	Get(id string) (*approvals.Approval, error)
	List(status string, now time.Time) ([]*approvals.Approval, error)
}

// AdminConfig configures the admin API.
type AdminConfig struct {
	Ledger    AdminLedger
	Approvals ApprovalLister
	Logger    zerolog.Logger
	Now       func() time.Time
}

// NewAdmin returns the admin API handler (CONTRACT §4).
func NewAdmin(cfg AdminConfig) http.Handler {
	a := &admin{cfg: cfg}
	if a.cfg.Now == nil {
		a.cfg.Now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", a.livez)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /v1/ledger/head", a.head)
	mux.HandleFunc("GET /v1/ledger/verify", a.verify)
	mux.HandleFunc("GET /v1/ledger/records", a.records)
	mux.HandleFunc("GET /v1/approvals", a.listApprovals)
	mux.HandleFunc("GET /v1/approvals/{id}", a.getApproval)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: r.Method + " " + r.URL.Path + " is not an admin endpoint"})
	})
	return mux
}

type admin struct {
	cfg AdminConfig
}

type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

func (a *admin) livez(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is ready only while the ledger is writable (CONTRACT §4).
func (a *admin) readyz(w http.ResponseWriter, _ *http.Request) {
	checks := map[string]string{"ledger": "ok"}
	status, code := "ready", http.StatusOK
	if err := a.cfg.Ledger.Healthy(); err != nil {
		checks["ledger"] = err.Error()
		status, code = "not_ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}

func (a *admin) head(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.cfg.Ledger.Head())
}

// verify re-derives the live chain; 200 when intact, 500 naming the first
// broken record otherwise.
func (a *admin) verify(w http.ResponseWriter, r *http.Request) {
	rep, err := a.cfg.Ledger.Verify(r.Context())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "verify_failed", Message: err.Error()})
		return
	}
	code := http.StatusOK
	if !rep.OK {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, rep)
}

// records streams whole stored records as a JSON array, byte for byte as
// they were hashed, so any program can re-verify a live chain.
func (a *admin) records(w http.ResponseWriter, r *http.Request) {
	head := a.cfg.Ledger.Head().Seq
	from, err := seqParam(r, "from", 1)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Message: err.Error()})
		return
	}
	to, err := seqParam(r, "to", from+MaxRecordsPage-1)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Message: err.Error()})
		return
	}
	if from == 0 || to < from {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Message: "want 1 <= from <= to"})
		return
	}
	if to-from >= MaxRecordsPage {
		to = from + MaxRecordsPage - 1
	}
	if to > head {
		to = head
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-UAPK-Ledger-Head", strconv.FormatUint(head, 10))
	w.Write([]byte{'['})
	first := true
	if from <= to {
		err = a.cfg.Ledger.Range(from, to, func(_ uint64, raw []byte) error {
			if !first {
				w.Write([]byte{','})
			}
			first = false
			_, err := w.Write(raw)
			return err
		})
	}
	if err != nil {
		// Headers are gone; a truncated array is the honest signal left.
		a.cfg.Logger.Error().Err(err).Msg("ledger range read failed")
		return
	}
	w.Write([]byte("]\n"))
}

func seqParam(r *http.Request, name string, def uint64) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New(name + " must be a record sequence number")
	}
	return n, nil
}

func (a *admin) listApprovals(w http.ResponseWriter, r *http.Request) {
	list, err := a.cfg.Approvals.List(r.URL.Query().Get("status"), a.cfg.Now())
	if errors.Is(err, approvals.ErrBadStatus) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Message: err.Error()})
		return
	}
	if err != nil {
		a.internal(w, err)
		return
	}
	out := make([]*approvals.Approval, 0, len(list))
	for _, ap := range list {
		out = append(out, a.view(ap))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
}

func (a *admin) getApproval(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !approvals.ValidID(id) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: "no approval " + strconv.Quote(id)})
		return
	}
	ap, err := a.cfg.Approvals.Get(id)
	if errors.Is(err, approvals.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: "no approval " + id})
		return
	}
	if err != nil {
		a.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(ap))
}

// view shows the effective status: a pending approval past its expiry reads
// as expired.
func (a *admin) view(ap *approvals.Approval) *approvals.Approval {
	ap.Status = ap.Effective(a.cfg.Now())
	return ap
}

func (a *admin) internal(w http.ResponseWriter, err error) {
	a.cfg.Logger.Error().Err(err).Msg("admin request failed")
	writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal", Message: "internal error; see the proxy log"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
