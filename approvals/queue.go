package approvals

import (
	"errors"
	"fmt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Queue is what the admin API and the approvers' desk need of the
// approvals: reading them, and taking decisions and override requests.
// *Service is one. A fleet's hub is another: it keeps no ledger, so it
// hands each decision on to a proxy, which decides it with a Service.
type Queue interface {
	Get(id string) (*Approval, error)
	List(status string) ([]*Approval, error)
	ListPage(status, cursor string, limit int) (Page, error)
	Decide(id string, sub Submission) (*Approval, *Refusal, error)
	RequestOverride(r OverrideRequest) (*Approval, error)
}

var _ Queue = (*Service)(nil)

// ErrQueued: a decision or override request was handed on and is not
// decided yet; a proxy will take it. The approval returned beside it is as
// it stood when it was queued.
var ErrQueued = errors.New("queued for the fleet's proxies")

// Answer is a Service's answer to a decision or override request, in the
// form a hub gets it back from the proxy that took it: exactly one of
// Approval (taken), Refusal (a decision refused, and recorded so),
// Problems (a bad override request) and Error (Code not_found or
// unavailable) says what happened.
type Answer struct {
	Instance string         `json:"instance"` // the proxy that decided
	Approval *Approval      `json:"approval,omitempty"`
	Refusal  *AnswerRefusal `json:"refusal,omitempty"`
	Problems []string       `json:"problems,omitempty"`
	Caller   *CallerError   `json:"caller,omitempty"`
	Code     string         `json:"code,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// CallerError is an override request whose requested_by is not the
// caller its identity token proves (or has no token where identity is
// configured): 401 or 403, with the reason code.
type CallerError struct {
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *CallerError) Error() string { return e.Reason + ": " + e.Message }

// RelayedOverride is an override request as a hub queues it: with the
// identity token it came with, for the proxy that takes it to prove the
// requester again with its own identity settings.
type RelayedOverride struct {
	Request     OverrideRequest `json:"request"`
	CallerToken string          `json:"caller_token,omitempty"`
}

// AnswerRefusal is a Refusal on the wire.
type AnswerRefusal struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Answer codes.
const (
	AnswerNotFound    = "not_found"
	AnswerUnavailable = "unavailable" // not decided; it can be taken again
	AnswerInternal    = "internal"    // the proxy failed on it; final
)

// DecisionAnswer is the Answer to Decide's results.
func DecisionAnswer(instance string, a *Approval, ref *Refusal, err error) Answer {
	out := Answer{Instance: instance}
	switch {
	case ref != nil:
		out.Refusal = &AnswerRefusal{string(ref.Code), ref.Detail}
	case errors.Is(err, ErrNotFound):
		out.Code, out.Error = AnswerNotFound, err.Error()
	case err != nil:
		out.Code, out.Error = AnswerUnavailable, err.Error()
	default:
		out.Approval = a
	}
	return out
}

// OverrideAnswer is the Answer to RequestOverride's results.
func OverrideAnswer(instance string, a *Approval, err error) Answer {
	var bad *BadRequestError
	var ce *CallerError
	switch {
	case errors.As(err, &bad):
		return Answer{Instance: instance, Problems: bad.Problems}
	case errors.As(err, &ce):
		return Answer{Instance: instance, Caller: ce}
	case err != nil:
		return Answer{Instance: instance, Code: AnswerUnavailable, Error: err.Error()}
	}
	return Answer{Instance: instance, Approval: a}
}

// Decision turns the Answer back into Decide's results.
func (an Answer) Decision() (*Approval, *Refusal, error) {
	switch {
	case an.Refusal != nil:
		return nil, &Refusal{Code: record.Reason(an.Refusal.Code), Detail: an.Refusal.Detail}, nil
	case an.Code == AnswerNotFound:
		return nil, nil, fmt.Errorf("%w (proxy %s)", ErrNotFound, an.Instance)
	case an.Approval == nil:
		return nil, nil, fmt.Errorf("proxy %s: %s", an.Instance, an.Error)
	}
	return an.Approval, nil, nil
}

// Override turns the Answer back into RequestOverride's results.
func (an Answer) Override() (*Approval, error) {
	switch {
	case len(an.Problems) > 0:
		return nil, &BadRequestError{Problems: an.Problems}
	case an.Caller != nil:
		return nil, an.Caller
	case an.Approval == nil:
		return nil, fmt.Errorf("proxy %s: %s", an.Instance, an.Error)
	}
	return an.Approval, nil
}
