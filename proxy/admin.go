package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// MaxRecordsPage bounds one GET /v1/ledger/records answer.
const MaxRecordsPage = 10000

// AdminLedger is what the admin API reads from the chain.
type AdminLedger interface {
	Head() ledger.Head
	Healthy() error
	Scan(ctx context.Context, fn func(key, raw []byte) error) (head []byte, err error) // for verifier.Verify
	Range(from, to uint64, fn func(seq uint64, raw []byte) error) error
}

// AdminConfig configures the admin API.
type AdminConfig struct {
	// Ledger is the chain the ledger endpoints read; nil for a fleet's
	// hub, which keeps none (they answer 404 saying so).
	Ledger AdminLedger
	// Approvals serves the approval endpoints and takes approvers'
	// decisions and override requests.
	Approvals approvals.Queue
	// GatewayKey is the public key that signs tokens and checkpoints (nil:
	// a hub, which signs nothing).
	GatewayKey ed25519.PublicKey
	Logger     zerolog.Logger
	Now        func() time.Time
	// CACert is the interception CA's certificate (PEM) served at
	// GET /ca.pem; nil when the forward door does not intercept.
	CACert []byte
	// Metrics serves GET /metrics (nil: 404).
	Metrics http.Handler
	// Archive reports the WORM archive's state for /readyz (nil: no check).
	// It returns a JSON-able detail and an error when the archive refuses
	// to work (a bucket without Object Lock, a conflicting segment); an
	// outage is not an error, the backlog shows in the detail.
	Archive func() (detail any, err error)
	// Evidence serves POST /v1/evidence (nil: 404).
	Evidence http.Handler
	// Auth recognises admin tokens; every endpoint but the public ones
	// needs one (nil: every such endpoint answers 401).
	Auth AdminAuth
	// Refused is told of each admin call refused for its token (reason
	// missing_token, bad_token or missing_scope), for metrics and the
	// ledger's rate-limited summary; it must not block.
	Refused func(reason string)
	// Identity, when set, proves an override request's requested_by: the
	// request must carry the person's identity token in
	// X-UAPK-On-Behalf-Of, and requested_by must be its caller.
	Identity gate.Identity
	// Ready reports more checks for /readyz by name (the ERP credential);
	// a non-nil error makes the proxy not ready.
	Ready map[string]func() error
	// UI serves /ui/, the approvers' dashboard, which signs people in with
	// passkeys itself (nil: 404).
	UI http.Handler
}

// AdminAuth recognises the holder of an Authorization header's token.
type AdminAuth interface {
	Authenticate(authorization string) (adminauth.Holder, error)
}

// NewAdmin returns the admin API handler (docs/reference.md#admin-api).
func NewAdmin(cfg AdminConfig) http.Handler {
	a := &admin{cfg: cfg}
	if a.cfg.Now == nil {
		a.cfg.Now = time.Now
	}
	if a.cfg.Refused == nil {
		a.cfg.Refused = func(string) {}
	}
	mux := http.NewServeMux()
	// Public: probes, scrapes and what clients must trust.
	mux.HandleFunc("GET /livez", a.livez)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /v1/keys/gateway", a.gatewayKey)
	mux.HandleFunc("GET /ca.pem", a.caPEM)
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	// Behind a token with a scope (docs/reference.md#admin-tokens).
	read, override := []adminauth.Scope{adminauth.Read}, []adminauth.Scope{adminauth.Override}
	if cfg.Ledger != nil {
		mux.Handle("GET /v1/ledger/head", a.guard(read, a.head))
		mux.Handle("GET /v1/ledger/verify", a.guard(read, a.verify))
		mux.Handle("GET /v1/ledger/records", a.guard(read, a.records))
	} else {
		mux.Handle("/v1/ledger/", a.guard(read, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, apiError{Error: "no_ledger",
				Message: "this is the fleet's hub: it keeps no ledger; each proxy has its own, at its admin API"})
		}))
	}
	mux.Handle("GET /v1/approvals", a.guard(read, a.listApprovals))
	mux.Handle("GET /v1/approvals/{id}", a.guard(read, a.getApproval))
	mux.Handle("POST /v1/approvals/{id}/decisions", a.guard([]adminauth.Scope{adminauth.Decide}, a.postDecision))
	mux.Handle("POST /v1/overrides", a.guard(override, a.postOverride))
	mux.Handle("GET /v1/overrides/{id}", a.guard([]adminauth.Scope{adminauth.Read, adminauth.Override}, a.getOverride))
	if cfg.Evidence != nil {
		mux.Handle("POST /v1/evidence", a.guard([]adminauth.Scope{adminauth.Evidence}, cfg.Evidence.ServeHTTP))
	}
	if cfg.UI != nil {
		// The dashboard has its own sign-in (passkeys, session cookies):
		// no admin token in a browser.
		mux.Handle("/ui/", cfg.UI)
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusSeeOther))
		// Browsers ask for it on their own: a plain 404, not a refused
		// admin call.
		mux.HandleFunc("GET /favicon.ico", http.NotFound)
	}
	// Unknown paths need a token too: without one nothing about the API
	// shows, not even which paths exist.
	mux.Handle("/", a.guard(nil, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: r.Method + " " + r.URL.Path + " is not an admin endpoint"})
	}))
	return mux
}

type holderKey struct{}

// holder is the token holder guard let through.
func holder(r *http.Request) adminauth.Holder {
	h, _ := r.Context().Value(holderKey{}).(adminauth.Holder)
	return h
}

// guard lets a request through to h only with a recognised token holding
// one of scopes (any recognised token when scopes is empty). Refusals
// write nothing to the ledger: they are counted, and summarised there at
// a bounded rate by whoever Refused reports to.
func (a *admin) guard(scopes []adminauth.Scope, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Auth == nil {
			a.refuse(w, http.StatusUnauthorized, "missing_token", "the admin API has no tokens configured")
			return
		}
		who, err := a.cfg.Auth.Authenticate(r.Header.Get("Authorization"))
		switch {
		case errors.Is(err, adminauth.ErrMissing):
			a.refuse(w, http.StatusUnauthorized, "missing_token", "send Authorization: Bearer TOKEN (the CLI reads --admin-token, UAPK_ADMIN_TOKEN or DATA/admin.token)")
			return
		case err != nil:
			a.refuse(w, http.StatusUnauthorized, "bad_token", "the bearer token is not one this proxy accepts")
			return
		}
		ok := len(scopes) == 0
		names := make([]string, len(scopes))
		for i, s := range scopes {
			ok = ok || who.Has(s)
			names[i] = string(s)
		}
		if !ok {
			a.refuse(w, http.StatusForbidden, "missing_scope", "token "+strconv.Quote(who.Name)+" lacks scope "+strings.Join(names, " or "))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), holderKey{}, who)))
	})
}

func (a *admin) refuse(w http.ResponseWriter, code int, reason, msg string) {
	a.cfg.Refused(reason)
	word := "unauthenticated"
	if code == http.StatusForbidden {
		word = "forbidden"
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="uapk-proxy admin"`)
	}
	writeJSON(w, code, apiError{Error: word, Reason: reason, Message: msg})
}

type admin struct {
	cfg AdminConfig
}

type apiError struct {
	Error   string `json:"error"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func (a *admin) livez(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is ready only while the ledger is writable (docs/reference.md#health).
func (a *admin) readyz(w http.ResponseWriter, _ *http.Request) {
	checks := map[string]string{}
	status, code := "ready", http.StatusOK
	if a.cfg.Ledger != nil {
		checks["ledger"] = "ok"
		if err := a.cfg.Ledger.Healthy(); err != nil {
			checks["ledger"] = err.Error()
			status, code = "not_ready", http.StatusServiceUnavailable
		}
	}
	for name, check := range a.cfg.Ready {
		checks[name] = "ok"
		if err := check(); err != nil {
			checks[name] = err.Error()
			status, code = "not_ready", http.StatusServiceUnavailable
		}
	}
	body := map[string]any{"status": status, "checks": checks}
	if a.cfg.Archive != nil {
		detail, err := a.cfg.Archive()
		checks["archive"] = "ok"
		if err != nil {
			checks["archive"] = err.Error()
			code = http.StatusServiceUnavailable
			body["status"] = "not_ready"
		}
		body["archive"] = detail
	}
	writeJSON(w, code, body)
}

func (a *admin) head(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.cfg.Ledger.Head())
}

// verify re-derives the live chain; 200 when intact, 500 naming the first
// broken record otherwise.
func (a *admin) verify(w http.ResponseWriter, r *http.Request) {
	rep, err := verifier.Verify(r.Context(), a.cfg.Ledger)
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
		writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: err.Error()})
		return
	}
	to, err := seqParam(r, "to", from+MaxRecordsPage-1)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: err.Error()})
		return
	}
	if from == 0 || to < from {
		writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: "want 1 <= from <= to"})
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

// listApprovals answers one page: limit (default 100, at most 1000) and
// cursor (the next_cursor of the page before).
func (a *admin) listApprovals(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > approvals.MaxPage {
			writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: fmt.Sprintf("limit must be a number from 1 to %d", approvals.MaxPage)})
			return
		}
		limit = n
	}
	page, err := a.cfg.Approvals.ListPage(q.Get("status"), q.Get("cursor"), limit)
	if errors.Is(err, approvals.ErrBadStatus) || errors.Is(err, approvals.ErrBadCursor) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: err.Error()})
		return
	}
	if err != nil {
		a.internal(w, err)
		return
	}
	out := make([]*approvals.Approval, 0, len(page.Approvals))
	for _, ap := range page.Approvals {
		out = append(out, a.view(ap, false))
	}
	body := map[string]any{"approvals": out, "total": page.Total}
	if page.Next != "" {
		body["next_cursor"] = page.Next
	}
	writeJSON(w, http.StatusOK, body)
}

// defaultPage is GET /v1/approvals' page size without limit.
const defaultPage = 100

func (a *admin) getApproval(w http.ResponseWriter, r *http.Request) {
	a.showApproval(w, r.PathValue("id"), approvals.KindRequest, false)
}

// getOverride shows an override; its token only to scope override.
func (a *admin) getOverride(w http.ResponseWriter, r *http.Request) {
	a.showApproval(w, r.PathValue("id"), approvals.KindOverride, holder(r).Has(adminauth.Override))
}

func (a *admin) showApproval(w http.ResponseWriter, id, kind string, withToken bool) {
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
	if kind == approvals.KindOverride && ap.Kind != approvals.KindOverride {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: id + " is not an override; see /v1/approvals/" + id})
		return
	}
	writeJSON(w, http.StatusOK, a.view(ap, withToken && ap.Kind == approvals.KindOverride))
}

// maxAdminBody bounds a JSON body posted to the admin API.
const maxAdminBody = 64 << 10

// decodeStrict reads a JSON object with no unknown fields and nothing after it.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: errBadRequest, Message: "body: " + err.Error()})
		return false
	}
	return true
}

// postDecision takes an approver's signed decision.
func (a *admin) postDecision(w http.ResponseWriter, r *http.Request) {
	var s approvals.Submission
	if !decodeStrict(w, r, &s) {
		return
	}
	ap, ref, err := a.cfg.Approvals.Decide(r.PathValue("id"), s)
	if errors.Is(err, approvals.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "not_found", Message: "no approval " + strconv.Quote(r.PathValue("id"))})
		return
	}
	if ref != nil {
		if err != nil {
			a.cfg.Logger.Error().Err(err).Msg("refusal not recorded")
		}
		writeJSON(w, ref.HTTPStatus(), map[string]string{"error": "refused", "reason": string(ref.Code), "message": ref.Detail})
		return
	}
	if errors.Is(err, approvals.ErrQueued) {
		q := queued{Status: "queued", Message: queuedMessage}
		if ap != nil && holder(r).Has(adminauth.Read) {
			// Nothing was checked yet: a decide-only token sees no more
			// than a refusal would show it.
			q.Approval = a.view(ap, false)
		}
		writeJSON(w, http.StatusAccepted, q)
		return
	}
	if err != nil {
		a.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(ap, false))
}

// queued is the answer of a hub whose decision or override request no
// proxy has taken yet: it stays queued, and is decided when one does.
type queued struct {
	Status   string              `json:"status"`
	Message  string              `json:"message"`
	Approval *approvals.Approval `json:"approval,omitempty"`
}

const queuedMessage = "no proxy of the fleet has taken it yet; it stays queued and is decided, against that proxy's principals, when one does"

// postOverride records a request for an emergency override.
func (a *admin) postOverride(w http.ResponseWriter, r *http.Request) {
	var req approvals.OverrideRequest
	if !decodeStrict(w, r, &req) {
		return
	}
	req.CallerToken = r.Header.Get(gate.HeaderOnBehalfOf)
	if a.cfg.Identity != nil {
		if ce := gate.ProveRequester(a.cfg.Identity, req.CallerToken, req.RequestedBy); ce != nil {
			writeCallerError(w, ce)
			return
		}
	}
	ap, err := a.cfg.Approvals.RequestOverride(req)
	var bad *approvals.BadRequestError
	if errors.As(err, &bad) {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": errBadRequest, "message": bad.Error(), "problems": bad.Problems})
		return
	}
	var ce *approvals.CallerError
	if errors.As(err, &ce) {
		// A hub's proxy proved the requester with its own identity settings.
		writeCallerError(w, ce)
		return
	}
	if errors.Is(err, approvals.ErrQueued) {
		writeJSON(w, http.StatusAccepted, queued{Status: "queued", Message: queuedMessage})
		return
	}
	if err != nil {
		a.unavailable(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, a.view(ap, false))
}

func writeCallerError(w http.ResponseWriter, ce *approvals.CallerError) {
	word := errUnauthenticated
	if ce.Status == http.StatusForbidden {
		word = "forbidden"
	}
	writeJSON(w, ce.Status, apiError{Error: word, Reason: ce.Reason, Message: ce.Message})
}

// gatewayKey serves the key that signs capability and override tokens, so
// an ERP can check X-UAPK-Capability itself.
func (a *admin) gatewayKey(w http.ResponseWriter, _ *http.Request) {
	if a.cfg.GatewayKey == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no_gateway_key",
			Message: "this is the fleet's hub: it signs nothing; each proxy serves its own key at its admin API"})
		return
	}
	der, err := x509.MarshalPKIXPublicKey(a.cfg.GatewayKey)
	if err != nil {
		a.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"algorithm":         "Ed25519",
		"public_key_pem":    string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"paseto_public_hex": hex.EncodeToString(a.cfg.GatewayKey),
		"paseto_version":    "v4.public",
	})
}

// caPEM serves the interception CA's certificate, for clients to trust.
func (a *admin) caPEM(w http.ResponseWriter, _ *http.Request) {
	if len(a.cfg.CACert) == 0 {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no_ca",
			Message: "HTTPS interception is off: no CA is configured; make one with 'uapk-proxy ca init --out DIR' and start serve with --ca-dir DIR"})
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="uapk-proxy-ca.pem"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(a.cfg.CACert)))
	_, _ = w.Write(a.cfg.CACert)
}

// unavailable answers a ledger failure: nothing was decided.
func (a *admin) unavailable(w http.ResponseWriter, err error) {
	a.cfg.Logger.Error().Err(err).Msg("admin write failed")
	writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errLedger, Message: "nothing was recorded; retry when /readyz is ready"})
}

// view shows the effective status: a pending approval past its expiry reads
// as expired. Tokens are bearer secrets: a capability token is in no
// answer (the ERP gets it on the forwarded request; the agent retries by
// approval id), an override token only where withToken says.
func (a *admin) view(ap *approvals.Approval, withToken bool) *approvals.Approval {
	if !withToken && ap.Token != "" {
		ap = ap.Clone()
		ap.Token = ""
	}
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
