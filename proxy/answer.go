package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
	"github.com/valyala/fasthttp"
)

// The one place a verdict that forwards nothing becomes a status code and a
// JSON body (docs/reference.md#status-codes-and-bodies); both doors write
// what answer returns.

// The "error" words of the proxy's own answers. Two of them are also the
// reason codes of the records that go with them.
const (
	errDenied      = "denied"
	errNotUsable   = "approval_not_usable"
	errBadRequest  = "bad_request"
	errMisdirected = "misdirected"
	errLedger      = string(record.LedgerUnavailable)
	errTooLarge    = string(record.BodyTooLarge)

	errUnauthenticated = "unauthenticated"
)

// refusal is the status and "error" word of each reason a request can be
// refused with; every other reason is a plain 403 denial.
func refusal(r record.Reason) (int, string) {
	switch r {
	case record.LedgerUnavailable:
		return http.StatusServiceUnavailable, errLedger
	case record.BodyTooLarge:
		return http.StatusRequestEntityTooLarge, errTooLarge
	case record.UnauthenticatedCaller, record.UnauthenticatedApp:
		return http.StatusUnauthorized, errUnauthenticated
	case record.TooManyPending:
		return http.StatusTooManyRequests, string(record.TooManyPending)
	case record.BadTarget, record.AmbiguousRequest, record.AmbiguousPath, record.AmbiguousBody:
		return http.StatusBadRequest, errBadRequest
	case record.ConnectInTunnel:
		return http.StatusMethodNotAllowed, errBadRequest
	case record.HostMismatch:
		return http.StatusMisdirectedRequest, errMisdirected
	case record.NotApproved, record.ApprovalExpired, record.Consumed, record.DigestMismatch, record.HeadersMismatch,
		record.InvalidToken, record.AppMismatch, record.ActionMismatch:
		return http.StatusConflict, errNotUsable
	}
	return http.StatusForbidden, errDenied
}

// answer returns the status and body of a verdict that forwards nothing:
// a JSON-RPC answer for an MCP tools/call, else the plain one.
func answer(v *gate.Verdict) (int, []byte) {
	if v.MCP != nil {
		return mcpAnswer(v)
	}
	return plainAnswer(v)
}

func plainAnswer(v *gate.Verdict) (int, []byte) {
	if v.Outcome == rules.Pending {
		return http.StatusAccepted, jsonBody(pendingBody{Status: "PENDING_APPROVAL", ApprovalID: v.ApprovalID,
			Action: v.Action, RequiredRoles: v.RequiredRoles, ExpiresAt: v.ExpiresAt.Format(time.RFC3339)})
	}
	status, kind := refusal(v.Reason)
	if v.Reason == record.LedgerUnavailable {
		return status, jsonBody(map[string]string{"error": kind}) // nothing was recorded: no record to name
	}
	return status, jsonBody(refusalBody{Error: kind, Reason: v.Reason, Action: v.Action, Record: v.Record, ApprovalID: v.ApprovalID, Message: v.Message})
}

// upstreamFailure is the answer when the exchange with the ERP failed: 502
// upstream_unavailable when the ERP cannot have received the request (an
// approval it used is usable again), 502 upstream_error when it did and
// the answer broke, 504 upstream_timeout when no answer came in time.
// delivered says whether the ERP may have the request. A tunnel that could
// not open names no action.
func upstreamFailure(v *gate.Verdict, o gate.ERPOutcome, tunnel bool) (int, []byte) {
	body := map[string]any{"error": string(o.Reason()), "record": v.Record, "delivered": !o.Undelivered}
	if !tunnel {
		body["action"] = v.Action
	}
	status := http.StatusBadGateway
	if o.Timeout && !o.Undelivered {
		status = http.StatusGatewayTimeout
	}
	return status, jsonBody(body)
}

// erpFailure classifies a failed exchange with the ERP: undelivered when
// the request cannot have reached it (no connection, or no TLS session, was
// made), timeout when no answer came in time.
func erpFailure(err error) gate.ERPOutcome {
	o := gate.ERPOutcome{Err: err}
	var op *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrNoFreeConns),
		errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &badCert),
		errors.As(err, &verify), errors.As(err, &rh):
		o.Undelivered = true
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		o.Timeout = true
	default:
		var ne net.Error
		o.Timeout = errors.As(err, &ne) && ne.Timeout()
	}
	return o
}

// badRequest is the 400 answer to a request that could not be read at all
// (nothing was decided or recorded).
func badRequest(message string) []byte {
	return jsonBody(map[string]string{"error": errBadRequest, "message": message})
}

type pendingBody struct {
	Status        string   `json:"status"`
	ApprovalID    string   `json:"approval_id"`
	Action        string   `json:"action"`
	RequiredRoles []string `json:"required_roles"`
	ExpiresAt     string   `json:"expires_at"`
}

// refusalBody is the 403/409/413 body, fields in the reference's order.
type refusalBody struct {
	Error      string        `json:"error"`
	Reason     record.Reason `json:"reason"`
	Action     string        `json:"action"`
	Record     uint64        `json:"record"`
	ApprovalID string        `json:"approval_id,omitempty"`
	Message    string        `json:"message,omitempty"`
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":"internal"}`)
	}
	return b
}
