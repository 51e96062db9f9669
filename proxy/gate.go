package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Ledger is what the gate needs from the hash chain.
type Ledger interface {
	Append(ctx context.Context, e ledger.Entry) (ledger.Record, error)
	AppendAsync(e ledger.Entry, done func(ledger.Record, error))
}

// ApprovalReader reads approvals; the gate writes them only inside ledger
// transactions.
type ApprovalReader interface {
	Get(id string) (*approvals.Approval, error)
	List(status string, now time.Time) ([]*approvals.Approval, error)
	Due(now time.Time) ([]*approvals.Approval, error)
}

// Call is one agent request as a door hands it to the gate: the
// transport-neutral request plus the X-UAPK-* values the gate acts on.
type Call struct {
	Req rules.Request
	// URL is the absolute URL exactly as sent to the ERP; when empty it is
	// rebuilt from Req.
	URL           string
	Door          string // "sidecar" or "forward"
	Justification string
	ApprovalID    string // X-UAPK-Approval-Id
	Capability    string // X-UAPK-Capability
	Override      string // X-UAPK-Override
	ContentType   string
}

// Verdict is what the gate decided and recorded. When Forward is false the
// door answers Status with Body and forwards nothing.
type Verdict struct {
	Forward    bool
	Status     int
	Body       []byte
	Decision   string // allow | deny | pending
	Reason     string
	Action     string
	App        string
	Record     uint64 // ledger seq of the request record, 0 if none was written
	ApprovalID string
	Digest     string
	// Capability is the token the ERP receives in X-UAPK-Capability with an
	// approved request.
	Capability string
	// Hold is how long the door may keep the agent waiting for this
	// pending approval (Gate.Await).
	Hold     time.Duration
	started  time.Time
	errKind  string // "error" field of a refusal body
	door     string
	consumes bool // the entry's Tx uses an approval; its failure is a refusal, not an outage
}

// GateConfig configures a Gate.
type GateConfig struct {
	Engine    *rules.Engine
	Ledger    Ledger
	Approvals ApprovalReader
	// Tokens signs and checks capability and override tokens.
	Tokens *tokens.Issuer
	// Observer receives decisions and latencies for metrics (optional).
	Observer Observer
	Logger   zerolog.Logger
	// Now is the gate's clock; rules see only this time.
	Now func() time.Time
	// AppendTimeout bounds a ledger write; it is the ledger's own deadline,
	// not the client's (default 5s).
	AppendTimeout time.Duration
}

// Gate decides and records every request, whichever door it came through.
type Gate struct {
	engine    atomic.Pointer[rules.Engine]
	ledger    Ledger
	approvals ApprovalReader
	tokens    *tokens.Issuer
	obs       Observer
	hub       hub
	log       zerolog.Logger
	now       func() time.Time
	timeout   time.Duration
}

// NewGate returns a gate; Engine, Ledger and Approvals are required.
func NewGate(cfg GateConfig) (*Gate, error) {
	if cfg.Engine == nil || cfg.Ledger == nil || cfg.Approvals == nil || cfg.Tokens == nil {
		return nil, errors.New("gate needs an engine, a ledger, an approval store and a token issuer")
	}
	g := &Gate{ledger: cfg.Ledger, approvals: cfg.Approvals, tokens: cfg.Tokens, obs: cfg.Observer, log: cfg.Logger, now: cfg.Now, timeout: cfg.AppendTimeout}
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.timeout <= 0 {
		g.timeout = 5 * time.Second
	}
	g.engine.Store(cfg.Engine)
	return g, nil
}

// Engine returns the rules engine in force.
func (g *Gate) Engine() *rules.Engine { return g.engine.Load() }

// Digest is CONTRACT §3's request digest: hex SHA-256 of
// METHOD "\n" URL "\n" hex(SHA-256(body)).
func Digest(method, url string, body []byte) string {
	return digestOf(method, url, sha256.Sum256(body))
}

func digestOf(method, url string, bh [32]byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{'\n'})
	h.Write([]byte(url))
	h.Write([]byte{'\n'})
	var hexBody [64]byte
	hex.Encode(hexBody[:], bh[:])
	h.Write(hexBody[:])
	return hex.EncodeToString(h.Sum(nil))
}

// Reasons the gate itself gives, beside the rules' reason codes.
const (
	ReasonUnknownApp  = "unknown_app"
	ReasonNotApproved = "not_approved"
	ReasonExpired     = "expired"
	ReasonConsumed    = "consumed"
	ReasonDigest      = "digest_mismatch"
	ReasonRejected    = "rejected"
	ReasonBodyTooBig  = "body_too_large"
	ReasonApproved    = "approved"   // allow: retry of an approved request
	ReasonCapability  = "capability" // allow: capability token presented
	ReasonOverride    = "override"   // allow: override token skipped the approval policy
)

// Check decides c, records the decision durably and says what the door must do.
func (g *Gate) Check(c *Call) *Verdict {
	c.sanitize()
	now := g.now()
	c.Req.Time = now
	eng := g.engine.Load()
	m := eng.Manifest()
	url := c.url()
	bodyHash := sha256.Sum256(c.Req.Body)
	v := &Verdict{started: now, App: c.Req.App, Digest: digestOf(c.Req.Method, url, bodyHash), door: c.Door}

	var d rules.Decision
	if c.Req.App != m.AppID {
		d = rules.Decision{Outcome: rules.Deny, Reason: ReasonUnknownApp,
			Detail: "X-UAPK-App " + strconv.Quote(c.Req.App) + " is not the manifest's app_id " + strconv.Quote(m.AppID)}
	} else {
		d = eng.Decide(&c.Req)
	}
	v.Action = d.Action

	data := map[string]any{
		"door":        c.Door,
		"method":      c.Req.Method,
		"url":         url,
		"body_sha256": hex.EncodeToString(bodyHash[:]),
		"body_size":   len(c.Req.Body),
	}
	if d.Amount != "" {
		data["amount"] = d.Amount
	}
	if c.Req.OnBehalfOf != "" {
		data["on_behalf_of"] = c.Req.OnBehalfOf
	}
	if c.Justification != "" {
		data["justification"] = c.Justification
	}
	if c.Req.Escalation != "" {
		data["escalation"] = c.Req.Escalation
	}
	if d.Detail != "" {
		data["detail"] = d.Detail
	}
	entry := ledger.Entry{
		Kind: record.KindRequest, App: c.Req.App, Action: d.Action,
		Digest: v.Digest, Policy: m.Hash, Data: data,
	}

	switch {
	case d.Outcome == rules.Pending && c.Capability != "":
		g.useCapability(c, d, v, &entry, now)
	case d.Outcome == rules.Pending && c.ApprovalID != "":
		g.useApproval(c, d, v, &entry, now)
	case d.Outcome == rules.Pending && c.Override != "":
		g.useOverride(c, d, v, &entry, now)
	case d.Outcome == rules.Pending:
		g.hold(c, d, v, &entry, now)
	case d.Outcome == rules.Allow:
		v.Forward, v.Decision, v.Reason = true, "allow", d.Reason
	default:
		g.deny(v, 403, "denied", d.Reason)
	}
	entry.Decision, entry.Reason, entry.ApprovalID = record.Decision(v.Decision), record.Reason(v.Reason), v.ApprovalID

	rec, err := g.append(entry)
	if err != nil && v.consumes && isRefusal(err) {
		// Another request used the approval first (or it changed state):
		// record this one as refused.
		g.deny(v, 409, "approval_not_usable", refusalReason(err))
		v.Capability = ""
		entry.Tx, entry.Decision, entry.Reason = nil, record.Decision(v.Decision), record.Reason(v.Reason)
		entry.Data["detail"] = err.Error()
		rec, err = g.append(entry)
	}
	if err != nil {
		g.log.Error().Err(err).Str("action", v.Action).Str("app", v.App).Str("digest", v.Digest).
			Msg("ledger append failed; request refused")
		u := &Verdict{Status: 503, Body: jsonBody(map[string]any{"error": "ledger_unavailable"}),
			Decision: "deny", Reason: "ledger_unavailable", Action: v.Action, App: v.App, Digest: v.Digest, started: now, door: c.Door}
		g.logDecision(c, u, url, now)
		return u
	}
	v.Record = rec.Seq
	if !v.Forward {
		g.finishBody(v)
	}
	g.logDecision(c, v, url, now)
	return v
}

// logDecision writes the one canonical line per decision; field names are
// constant so that log queries keep working.
func (g *Gate) logDecision(c *Call, v *Verdict, url string, start time.Time) {
	g.obs.Decision(c.Door, v.Action, v.Decision, g.now().Sub(start))
	g.log.Info().Str("door", c.Door).Str("decision", v.Decision).Str("reason", v.Reason).
		Str("action", v.Action).Str("app", v.App).Uint64("seq", v.Record).Str("approval_id", v.ApprovalID).
		Str("method", c.Req.Method).Str("url", url).Int("status", v.statusForLog()).
		Float64("latency_ms", float64(g.now().Sub(start).Microseconds())/1000).Msg("decision")
}

func (v *Verdict) statusForLog() int {
	if v.Forward {
		return 0 // the ERP's status is in the forward record
	}
	return v.Status
}

// Longest header values the gate keeps; a justification is prose, the rest
// are identifiers or tokens.
const (
	maxJustification = 4096
	maxHeaderValue   = 1024
)

// sanitize makes the agent's header values safe to record: valid UTF-8 (the
// ledger refuses anything else, and a bad header must get a clear answer,
// not a 503) and bounded in length. An app id changed by this no longer
// matches the manifest and is denied as unknown_app.
func (c *Call) sanitize() {
	c.Req.App = clip(c.Req.App, maxHeaderValue)
	c.Req.OnBehalfOf = clip(c.Req.OnBehalfOf, maxHeaderValue)
	c.Req.Escalation = clip(c.Req.Escalation, maxHeaderValue)
	c.Justification = clip(c.Justification, maxJustification)
	c.ApprovalID = clip(c.ApprovalID, maxHeaderValue)
	c.Capability = clip(c.Capability, 4*maxHeaderValue)
	c.Override = clip(c.Override, 4*maxHeaderValue)
}

func (c *Call) url() string {
	if c.URL != "" {
		return c.URL
	}
	return c.Req.URL()
}

// Refuse records a request the door refuses before any policy is applied
// (a body over the limit, say) and returns the refusal to write back.
func (g *Gate) Refuse(c *Call, status int, kind, reason string, extra map[string]any) *Verdict {
	c.sanitize()
	now := g.now()
	url := c.url()
	v := &Verdict{started: now, App: c.Req.App, Digest: Digest(c.Req.Method, url, c.Req.Body), door: c.Door}
	g.deny(v, status, kind, reason)
	data := map[string]any{"door": c.Door, "method": c.Req.Method, "url": url}
	for k, x := range extra {
		data[k] = x
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	rec, err := g.ledger.Append(ctx, ledger.Entry{
		Kind: record.KindRequest, App: c.Req.App, Decision: record.Decision(v.Decision), Reason: record.Reason(reason),
		Digest: v.Digest, Policy: g.engine.Load().Manifest().Hash, Data: data,
	})
	cancel()
	if err != nil {
		// The refusal stands; only its record is missing, and the log says so.
		g.log.Error().Err(err).Str("reason", reason).Msg("ledger append failed for a refused request")
	} else {
		v.Record = rec.Seq
	}
	g.finishBody(v)
	g.logDecision(c, v, url, now)
	return v
}

// hold makes a new pending approval, committed with the request record.
func (g *Gate) hold(c *Call, d rules.Decision, v *Verdict, e *ledger.Entry, now time.Time) {
	a := &approvals.Approval{
		ID: approvals.NewID(), Kind: approvals.KindRequest, Status: approvals.StatusPending, Action: d.Action, App: c.Req.App,
		Method: c.Req.Method, URL: c.url(), Justification: c.Justification, OnBehalfOf: c.Req.OnBehalfOf,
		Digest: v.Digest, Amount: d.Amount, Reason: d.Reason, Requirement: d.Requirement,
		RequiredRoles: d.Requirement.Roles(), Decisions: []approvals.Decision{},
		CreatedAt: now.UTC(), ExpiresAt: now.Add(d.ApprovalTTL).UTC(),
	}
	a.Body, a.BodyBase64 = bodyText(c.Req.Body)
	if c.ContentType != "" {
		a.Headers = map[string]string{"Content-Type": c.ContentType}
	}
	v.Decision, v.Reason, v.ApprovalID, v.Status, v.Hold = "pending", d.Reason, a.ID, 202, d.Hold
	e.Data["required_roles"] = toAny(a.RequiredRoles)
	e.Data["expires_at"] = a.ExpiresAt.Format(time.RFC3339)
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		a.RequestRecord = rec.Seq
		return approvals.Put(tx, a)
	}
	v.Body = jsonBody(pendingBody{Status: "PENDING_APPROVAL", ApprovalID: a.ID, Action: d.Action,
		RequiredRoles: a.RequiredRoles, ExpiresAt: a.ExpiresAt.Format(time.RFC3339)})
}

type pendingBody struct {
	Status        string   `json:"status"`
	ApprovalID    string   `json:"approval_id"`
	Action        string   `json:"action"`
	RequiredRoles []string `json:"required_roles"`
	ExpiresAt     string   `json:"expires_at"`
}

// useApproval handles the retry of a held request (X-UAPK-Approval-Id).
func (g *Gate) useApproval(c *Call, d rules.Decision, v *Verdict, e *ledger.Entry, now time.Time) {
	e.Data["approval_id_presented"] = c.ApprovalID
	if !approvals.ValidID(c.ApprovalID) {
		g.deny(v, 409, "approval_not_usable", ReasonNotApproved)
		return
	}
	a, err := g.approvals.Get(c.ApprovalID)
	if err != nil {
		g.deny(v, 409, "approval_not_usable", ReasonNotApproved)
		return
	}
	v.ApprovalID = a.ID
	switch {
	case a.Kind == approvals.KindOverride:
		g.deny(v, 409, "approval_not_usable", ReasonNotApproved)
	case a.Digest != v.Digest || a.App != c.Req.App || a.Action != d.Action:
		g.deny(v, 409, "approval_not_usable", ReasonDigest)
	case a.Status == approvals.StatusRejected:
		g.deny(v, 403, "denied", ReasonRejected)
	case a.Consumed != 0:
		g.deny(v, 409, "approval_not_usable", ReasonConsumed)
	case a.Effective(now) == approvals.StatusExpired:
		g.deny(v, 409, "approval_not_usable", ReasonExpired)
	case a.Status != approvals.StatusApproved || a.Token == "":
		g.deny(v, 409, "approval_not_usable", ReasonNotApproved)
	case !now.Before(a.TokenExp):
		g.deny(v, 409, "approval_not_usable", ReasonExpired)
	default:
		g.allowApproved(v, e, a.ID, a.TokenID, a.Token, ReasonApproved)
	}
}

// useCapability handles a request that presents a capability token.
func (g *Gate) useCapability(c *Call, d rules.Decision, v *Verdict, e *ledger.Entry, now time.Time) {
	cl, err := g.tokens.Verify(c.Capability, tokens.KindCapability, now)
	if err == nil {
		err = cl.Bind(c.Req.App, d.Action, v.Digest)
	}
	if err != nil {
		e.Data["token_error"] = err.Error()
		g.deny(v, 409, "approval_not_usable", tokens.Reason(err))
		return
	}
	e.Data["token_id"] = cl.ID
	g.allowApproved(v, e, cl.ApprovalID, cl.ID, c.Capability, ReasonCapability)
}

// allowApproved lets an approved request through once: the record that
// allows it also marks the approval and its token used, in one transaction.
func (g *Gate) allowApproved(v *Verdict, e *ledger.Entry, approvalID, tokenID, token, reason string) {
	v.Forward, v.Decision, v.Reason, v.ApprovalID, v.Capability, v.consumes = true, "allow", reason, approvalID, token, true
	e.Data["token_id"] = tokenID
	e.Tx = func(tx *bolt.Tx, rec *ledger.Record) error {
		a, err := approvals.GetTx(tx, approvalID)
		if err != nil {
			return fmt.Errorf("%w: %v", errNotApproved, err)
		}
		if a.Consumed != 0 {
			return fmt.Errorf("%w: approval %s was used by record %d", tokens.ErrConsumed, a.ID, a.Consumed)
		}
		if a.Status != approvals.StatusApproved || a.TokenID != tokenID {
			return fmt.Errorf("%w: approval %s is %s", errNotApproved, a.ID, a.Status)
		}
		if err := tokens.MarkUsed(tx, tokenID, rec.Seq); err != nil {
			return err
		}
		a.Consumed = rec.Seq
		return approvals.Put(tx, a)
	}
}

// useOverride lets a request skip its approval policy with an override
// token. The denylist and every deny are decided before this point, so an
// override can never reach them. Each use is a record of kind override.
func (g *Gate) useOverride(c *Call, d rules.Decision, v *Verdict, e *ledger.Entry, now time.Time) {
	cl, err := g.tokens.Verify(c.Override, tokens.KindOverride, now)
	if err == nil {
		err = cl.Bind(c.Req.App, d.Action, "")
	}
	if err == nil {
		var a *approvals.Approval
		if a, err = g.approvals.Get(cl.ApprovalID); err == nil && (a.Status != approvals.StatusApproved || a.TokenID != cl.ID) {
			err = fmt.Errorf("%w: override %s is %s", tokens.ErrInvalid, a.ID, a.Status)
		}
	}
	if err != nil {
		e.Data["token_error"] = err.Error()
		g.deny(v, 409, "approval_not_usable", tokens.Reason(err))
		return
	}
	e.Kind = record.KindOverride
	e.Data["override_id"] = cl.ApprovalID
	e.Data["token_id"] = cl.ID
	e.Data["override_expires_at"] = cl.Expires.UTC().Format(time.RFC3339)
	e.Data["policy_skipped"] = string(d.Requirement.Policy)
	v.Forward, v.Decision, v.Reason, v.ApprovalID = true, "allow", ReasonOverride, cl.ApprovalID
}

var errNotApproved = errors.New(ReasonNotApproved)

// isRefusal tells a failed Tx hook of allowApproved (a refusal to record)
// from a ledger outage (a 503).
func isRefusal(err error) bool {
	return errors.Is(err, tokens.ErrConsumed) || errors.Is(err, errNotApproved)
}

func refusalReason(err error) string {
	if errors.Is(err, tokens.ErrConsumed) {
		return ReasonConsumed
	}
	return ReasonNotApproved
}

// append writes e with the ledger's own deadline, not the client's.
func (g *Gate) append(e ledger.Entry) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	return g.ledger.Append(ctx, e)
}

func (g *Gate) deny(v *Verdict, status int, kind, reason string) {
	v.Forward, v.Status, v.Decision, v.Reason = false, status, "deny", reason
	v.Body = nil
	v.errKind = kind
}

// finishBody writes the JSON body of a refusal once the record's seq is known.
func (g *Gate) finishBody(v *Verdict) {
	if v.Decision == "pending" {
		return
	}
	v.Body = jsonBody(refusalBody{Error: v.errKind, Reason: v.Reason, Action: v.Action, Record: v.Record, ApprovalID: v.ApprovalID})
}

// refusalBody is CONTRACT §3's 403/409/413 body, fields in its order.
type refusalBody struct {
	Error      string `json:"error"`
	Reason     string `json:"reason"`
	Action     string `json:"action"`
	Record     uint64 `json:"record"`
	ApprovalID string `json:"approval_id,omitempty"`
}

// eachHeader calls set with the X-UAPK-* response headers of v (CONTRACT
// §3); each door writes them into its own header type.
func (v *Verdict) eachHeader(set func(name, value string)) {
	set(HeaderDecision, v.Decision)
	if v.Action != "" {
		set(HeaderAction, v.Action)
	}
	if v.Record != 0 {
		set(HeaderRecord, strconv.FormatUint(v.Record, 10))
	}
	if v.ApprovalID != "" {
		set(HeaderApprovalID, v.ApprovalID)
	}
}

// Outcome is what came back from the ERP for a forwarded request.
type Outcome struct {
	Status   int
	Body     []byte
	Err      error
	Duration time.Duration
}

// Forwarded records the outcome of a forwarded request. It does not wait
// for the record to be durable: the request record already is, and the
// ledger writes this one in order with the next group commit.
func (g *Gate) Forwarded(v *Verdict, o Outcome) {
	g.obs.Upstream(v.door, o.Duration, o.Err)
	if o.Err != nil {
		g.appendForward(v, "upstream_error", o.Duration, map[string]any{"error": o.Err.Error()})
		return
	}
	g.appendForward(v, "forwarded", o.Duration, map[string]any{
		"status": o.Status, "response_sha256": sha256Hex(o.Body), "response_size": len(o.Body),
	})
}

// appendForward writes a forward record (what came of a forwarded request)
// after its request record, without waiting for durability.
func (g *Gate) appendForward(v *Verdict, reason string, d time.Duration, data map[string]any) {
	data["request_record"] = v.Record
	data["latency_ms"] = d.Milliseconds()
	data["latency_us"] = d.Microseconds()
	g.ledger.AppendAsync(ledger.Entry{
		Kind: record.KindForward, App: v.App, Action: v.Action, Decision: record.Decision(v.Decision), Reason: record.Reason(reason),
		ApprovalID: v.ApprovalID, Digest: v.Digest, Policy: g.engine.Load().Manifest().Hash, Data: data,
	}, func(_ ledger.Record, err error) {
		if err != nil {
			g.log.Error().Err(err).Uint64("request_seq", v.Record).Msg("forward record not written")
		}
	})
}

// bodyText keeps a body as text when it is UTF-8 (JSON bodies always are),
// base64 otherwise, so an approver sees what the agent sent.
func bodyText(b []byte) (string, bool) {
	if utf8.Valid(b) {
		return string(b), false
	}
	return base64.StdEncoding.EncodeToString(b), true
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":"internal"}`)
	}
	return b
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
