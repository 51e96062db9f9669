package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// HandlerOptions configures NewHandler.
type HandlerOptions struct {
	Logger zerolog.Logger
	// MaxConcurrent bounds exports running at once (default 2); more get
	// 429. An export is I/O and CPU the proxy's requests also need.
	MaxConcurrent int
}

// Request is the body of POST /v1/evidence. From and To are dates
// (2026-09-30, To meaning the end of that day), RFC 3339 times (To
// excluded), or seqs as JSON numbers (both included).
type Request struct {
	From              json.RawMessage `json:"from"`
	To                json.RawMessage `json:"to"`
	Framework         string          `json:"framework"`
	IncludeApprovals  *bool           `json:"include_approvals,omitempty"`
	IncludeRejections *bool           `json:"include_rejections,omitempty"`
}

// Options turns the request into export options.
func (q Request) Options() (Options, error) {
	var o Options
	fw, err := NormalizeFramework(q.Framework)
	if err != nil {
		return o, err
	}
	o.Framework = fw
	if o.Range.From, o.Range.FromSeq, err = ParseBound(q.From, false); err != nil {
		return o, fmt.Errorf("from: %w", err)
	}
	if o.Range.To, o.Range.ToSeq, err = ParseBound(q.To, true); err != nil {
		return o, fmt.Errorf("to: %w", err)
	}
	o.OmitApprovals = q.IncludeApprovals != nil && !*q.IncludeApprovals
	o.OmitRejections = q.IncludeRejections != nil && !*q.IncludeRejections
	return o, o.Range.check()
}

// NewHandler serves POST /v1/evidence on the admin API: the body names the
// range and framework, the answer is the bundle, streamed as it is written
// (Content-Type application/zip). Errors found before the first byte get a
// JSON error and a status (400 bad request, 404 empty range, 429 busy, 500);
// an error while streaming aborts the connection, so that a client never
// takes a cut ZIP for a whole one. The records are read with src.Range, in
// bounded transactions: the proxy's requests keep being appended while a
// long range is exported.
func NewHandler(src Source, opts HandlerOptions) http.Handler {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 2
	}
	return &handler{src: src, log: opts.Logger, slots: make(chan struct{}, opts.MaxConcurrent)}
}

type handler struct {
	src   Source
	log   zerolog.Logger
	slots chan struct{}
}

type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(apiError{Error: code, Message: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "POST a JSON body {\"from\",\"to\",\"framework\"}")
		return
	}
	var q Request
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "body must be JSON {\"from\",\"to\",\"framework\"[,\"include_approvals\",\"include_rejections\"]}: "+err.Error())
		return
	}
	opts, err := q.Options()
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusTooManyRequests, "busy", ErrBusy.Error()+"; retry later")
		return
	}
	ctx := r.Context()
	start := time.Now()
	b, err := Prepare(ctx, h.src, opts)
	if err != nil {
		h.fail(w, ctx, err)
		return
	}
	defer b.Close()
	s := b.Summary()
	name := fmt.Sprintf("evidence-%s-%s-%d-%d.zip", safeFilePart(s.App), s.Framework, s.FromSeq, s.ToSeq)
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("X-UAPK-Evidence-Range", fmt.Sprintf("%d-%d", s.FromSeq, s.ToSeq))
	w.Header().Set("X-UAPK-Evidence-Sums", sha256Hex(s.Sums))
	w.WriteHeader(http.StatusOK)
	if err := b.Write(ctx, w); err != nil {
		h.log.Error().Err(err).Uint64("from_seq", s.FromSeq).Uint64("to_seq", s.ToSeq).Msg("evidence export failed while streaming; connection aborted")
		panic(http.ErrAbortHandler)
	}
	h.log.Info().Uint64("from_seq", s.FromSeq).Uint64("to_seq", s.ToSeq).Uint64("records", s.Records).
		Int("approvals", s.Approvals).Str("framework", s.Framework).Str("checkpoint", s.Checkpoint.Source).
		Float64("latency_ms", float64(time.Since(start).Microseconds())/1000).Msg("evidence exported")
}

func (h *handler) fail(w http.ResponseWriter, ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil:
		return // the client went away
	case errors.Is(err, ErrBadRange), errors.Is(err, ErrFramework):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, ErrEmptyRange):
		writeError(w, http.StatusNotFound, "no_records", err.Error())
	case errors.Is(err, ErrChainBroken), errors.Is(err, ErrCheckpoint), errors.Is(err, ErrNoManifest),
		errors.Is(err, ErrNoPrincipals), errors.Is(err, ErrPrincipalsMismatch), errors.Is(err, ErrPrincipalsDisagree),
		errors.Is(err, ErrMissingApproval), errors.Is(err, ErrApprovalMismatch):
		// Operator-facing (the admin API is theirs) and specific: these
		// say what in the ledger or the configuration stops the export.
		h.log.Error().Err(err).Msg("evidence export refused")
		writeError(w, http.StatusInternalServerError, "export_refused", err.Error())
	default:
		h.log.Error().Err(err).Msg("evidence export failed")
		writeError(w, http.StatusInternalServerError, "export_failed", "the export failed; the proxy's log has the cause")
	}
}

func safeFilePart(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "ledger"
	}
	return string(b)
}
