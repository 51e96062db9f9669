package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Ledger is what the gate needs from the hash chain.
type Ledger interface {
	Append(ctx context.Context, e ledger.Entry) (ledger.Record, error)
	AppendAsync(e ledger.Entry, done func(ledger.Record, error))
}

// Observer receives what the gate sees, for metrics. It is called on the
// request path and must not block. Labels are fixed sets (door, action,
// decision): never a request id, approval id or URL.
type Observer interface {
	// Decision: one request decided and recorded; took is the gate's time,
	// ledger write included.
	Decision(door, action, decision string, took time.Duration)
	// Upstream: one ERP round trip (err != nil when it failed).
	Upstream(door string, took time.Duration, err error)
}

type nopObserver struct{}

func (nopObserver) Decision(string, string, string, time.Duration) {}
func (nopObserver) Upstream(string, time.Duration, error)          {}

// Cumulative keeps, per action, the amounts let through below the
// escalation level, for cumulative_cap (internal/cumulative).
type Cumulative interface {
	// Sum returns the amounts counted for action in the window ending at
	// now.
	Sum(action string, now time.Time, window time.Duration) (*big.Rat, error)
	// Charge returns e with amount counted for action at time at, in the
	// transaction of e's record, if the window's sum plus amount stays
	// within limit; else the append fails with ErrCumulativeOverCap and
	// writes nothing.
	Charge(e ledger.Entry, action string, at time.Time, window time.Duration, amount, limit *big.Rat) ledger.Entry
}

// ErrCumulativeOverCap fails an append whose amount would take its
// action's cumulative sum over cumulative_cap (requests racing it got
// there first).
var ErrCumulativeOverCap = errors.New("cumulative sum over cumulative_cap")

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
	// ContentEncoding is the request's Content-Encoding: with Req.ContentType
	// it changes what the body means, so an approval binds both.
	ContentEncoding string
	// Rewrites names the headers present that servers take to change the
	// method or the target (RewriteHeaders); the gate refuses such a call.
	Rewrites []string
	// Repeated names the headers that change what the body means
	// (Content-Type, Content-Encoding, Content-Length) sent more than
	// once: parsers take different ones, so the gate refuses such a call.
	Repeated []string
	// UpstreamCredential is the kind of ERP credential the door sets on
	// the forwarded request ("header", "oauth2"; "" none), and
	// AgentCredential the header of the agent's own credential the door
	// removes for it: both go into the record, never a value.
	UpstreamCredential, AgentCredential string

	// Via is "execute" for a request made from an action's execute
	// template (POST /v1/execute), "" for a plain call; it goes into the
	// record. ExecuteAction is the action that call named: the request
	// must classify as it, else it is denied execute_mismatch, so that no
	// choice of parameters reaches another action.
	Via, ExecuteAction string

	// AppProof is the app signature the request carried, with the request
	// as the app sent it (nil: none). Required when the principals list a
	// key for the app.
	AppProof *AppProof
	// appProven: AppProof verified once; a held call decided again when
	// its approval completes (Await) is not refused for its own nonce.
	appProven bool

	// proven is the caller identity verified for this call: a held call
	// decided again when its approval completes (Await) keeps it, as its
	// token is gone from Req and may have expired meanwhile.
	proven *Caller
}

// Caller is who a verified identity token says the agent acts for.
type Caller struct {
	ID                   string // the token's claim (identity.claim)
	Issuer, Subject, JTI string
}

// Identity verifies the token an agent sends in X-UAPK-On-Behalf-Of
// (internal/identity). Its errors name why in fixed words, never any part
// of the token.
type Identity interface {
	Verify(ctx context.Context, token string) (Caller, error)
}

// RewriteHeaders are the request headers by which common servers and
// frameworks change a request's method or target behind the gate's back
// (Rails, Laravel, Symfony, ASP.NET, IIS URL Rewrite, Express
// method-override). The doors report which are present.
var RewriteHeaders = []string{
	"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL", "X-Rewrite-URL",
}

// Config configures a Gate.
type Config struct {
	Engine    *rules.Engine
	Ledger    Ledger
	Approvals *approvals.Service
	// Observer receives decisions and latencies for metrics (optional).
	Observer Observer
	Logger   zerolog.Logger
	// Now is the gate's clock; rules see only this time.
	Now func() time.Time
	// AppendTimeout bounds a ledger write; it is the ledger's own deadline,
	// not the client's (default 5s).
	AppendTimeout time.Duration
	// Cumulative keeps the sums behind cumulative_cap. Without it an action
	// with cumulative_cap gets its escalation on every request (fail
	// closed).
	Cumulative Cumulative
	// Identity, when set, requires every call's X-UAPK-On-Behalf-Of to be
	// a token it verifies; the caller is then the token's claim. Without
	// it the header is taken as asserted, and records say so.
	Identity Identity
}

// Gate decides and records every request, whichever door it came through.
type Gate struct {
	nonces    nonces // of app signatures seen (appsig.go)
	engine    atomic.Pointer[rules.Engine]
	ledger    Ledger
	approvals *approvals.Service
	obs       Observer
	log       zerolog.Logger
	now       func() time.Time
	timeout   time.Duration
	deadlines deadlines // of ledger writes, after timeout
	cumul     Cumulative
	identity  Identity
}

// New returns a gate; Engine, Ledger and Approvals are required.
func New(cfg Config) (*Gate, error) {
	if cfg.Engine == nil || cfg.Ledger == nil || cfg.Approvals == nil {
		return nil, errors.New("gate needs an engine, a ledger and an approvals service")
	}
	g := &Gate{ledger: cfg.Ledger, approvals: cfg.Approvals, obs: cfg.Observer, log: cfg.Logger, now: cfg.Now, timeout: cfg.AppendTimeout, cumul: cfg.Cumulative, identity: cfg.Identity}
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.timeout <= 0 {
		g.timeout = 5 * time.Second
	}
	g.deadlines.timeout = g.timeout
	g.engine.Store(cfg.Engine)
	return g, nil
}

// Engine returns the rules engine in force.
func (g *Gate) Engine() *rules.Engine { return g.engine.Load() }

// Approvals returns the approvals service the gate holds requests with.
func (g *Gate) Approvals() *approvals.Service { return g.approvals }

// Digest is the request digest (docs/reference.md#request-digest): hex
// SHA-256 of METHOD "\n" URL "\n" hex(SHA-256(body)).
func Digest(method, url string, body []byte) string {
	return digestOf(method, url, sha256.Sum256(body))
}

func digestOf(method, url string, bh [32]byte) string {
	// One buffer, on the stack for any common target, one hash call.
	var stack [512]byte
	b := append(stack[:0], method...)
	b = append(b, '\n')
	b = append(b, url...)
	b = append(b, '\n')
	b = hex.AppendEncode(b, bh[:])
	return hexString(sha256.Sum256(b))
}

// hexString is the lower-case hex of a SHA-256 sum, in one allocation.
func hexString(sum [32]byte) string {
	var out [64]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// plan is how Check writes the request record: plainly, with a new pending
// approval, or consuming an approved one.
type plan int

const (
	planAppend plan = iota
	planHold
	planConsume
	planOverride
)

// Check decides c, records the decision durably and returns the verdict.
// Nothing may be forwarded unless the verdict says so, and it says so only
// once the request record is durable.
func (g *Gate) Check(c *Call) *Verdict {
	ambiguous := ambiguousTarget(c.Req.Path, c.Req.RawQuery) // on the bytes received, before sanitize escapes any
	caller, unauthenticated := g.verifyCaller(c)             // on the whole token, before sanitize clips it
	c.sanitize()
	now := g.now()
	c.Req.Time = now
	eng := g.engine.Load()
	m := eng.Manifest()
	url := c.url()
	bodyHash := sha256.Sum256(c.Req.Body)
	v := &Verdict{started: now, App: c.Req.App, Digest: digestOf(c.Req.Method, url, bodyHash), door: c.Door}

	var d rules.Decision
	appVerified, appRefused := false, ""
	if ambiguous != "" {
		d = rules.Decision{Outcome: rules.Deny, Reason: record.AmbiguousPath, Detail: ambiguous}
	} else if detail := c.rewrite(); detail != "" {
		d = rules.Decision{Outcome: rules.Deny, Reason: record.AmbiguousRequest, Detail: detail}
	} else if unauthenticated != "" {
		d = rules.Decision{Outcome: rules.Deny, Reason: record.UnauthenticatedCaller, Detail: unauthenticated}
		v.Message = unauthenticated
	} else if c.Req.App != m.AppID {
		d = rules.Decision{Outcome: rules.Deny, Reason: record.UnknownApp,
			Detail: "X-UAPK-App " + strconv.Quote(c.Req.App) + " is not the manifest's app_id " + strconv.Quote(m.AppID)}
	} else if appVerified, appRefused = g.verifyApp(c, eng.Principals()); appRefused != "" {
		d = rules.Decision{Outcome: rules.Deny, Reason: record.UnauthenticatedApp, Detail: appRefused}
		v.Message = appRefused
	} else {
		d = eng.Decide(&c.Req)
		if c.ExecuteAction != "" && d.Action != c.ExecuteAction {
			got := "no action"
			if d.Action != "" {
				got = "action " + d.Action
			}
			d = rules.Decision{Outcome: rules.Deny, Reason: record.ExecuteMismatch, Action: c.ExecuteAction,
				Detail: "execute of action " + c.ExecuteAction + ": the templated request " + c.Req.Method + " " +
					strconv.Quote(c.Req.Path) + " classifies as " + got + " (" + string(d.Reason) + "); refused"}
		}
	}
	v.Action = d.Action
	if d.MCP != nil {
		// An MCP tools/call (docs/reference.md#mcp): the digest covers the
		// call's params in canonical form, not the body, whose JSON-RPC id
		// changes with every call; the door answers in JSON-RPC.
		v.MCP = d.MCP
		v.Digest = digestOf(c.Req.Method, url, sha256.Sum256(d.MCP.Params))
	}
	// cumulative_cap: a request that would take the window's sum below the
	// escalation level over the cap gets the escalation instead.
	cc := g.cumulative(m, d, now)
	if cc != nil && cc.over {
		d = cc.escalate(d, c.Req.Escalation)
	}

	data := record.Request{Door: c.Door, Via: c.Via, Method: c.Req.Method, URL: url,
		BodySHA256: hexString(bodyHash), BodySize: len(c.Req.Body),
		Amount: d.Amount, OnBehalfOf: c.Req.OnBehalfOf, Justification: c.Justification,
		Escalation: c.Req.Escalation, Detail: d.Detail,
		CallerVerified: caller != nil, AppVerified: appVerified, UpstreamCredential: c.UpstreamCredential, AgentCredential: c.AgentCredential}
	if d.MCP != nil {
		data.MCPTool = d.MCP.Tool
	}
	if caller != nil {
		data.CallerIssuer, data.CallerSubject, data.CallerTokenID = caller.Issuer, caller.Subject, caller.JTI
	}
	kind := record.KindRequest

	var (
		how     plan
		pending *approvals.Approval
		useID   string // approval to consume
		tokenID string
		charge  bool // the record lets c through below the escalation level: count its amount
	)
	svc := g.approvals
	// hold makes c a pending approval, recorded with the request.
	hold := func() {
		pending = svc.NewPending(approvals.Pending{Decision: d, App: c.Req.App, Method: c.Req.Method,
			URL: url, Body: c.Req.Body, ContentType: c.Req.ContentType, ContentEncoding: c.ContentEncoding, Justification: c.Justification,
			OnBehalfOf: c.Req.OnBehalfOf, Digest: v.Digest})
		v.Outcome, v.Reason, v.ApprovalID, v.Hold = rules.Pending, d.Reason, pending.ID, d.Hold
		v.RequiredRoles, v.ExpiresAt = pending.RequiredRoles, pending.ExpiresAt
		data.RequiredRoles, data.ExpiresAt = pending.RequiredRoles, pending.ExpiresAt.Format(time.RFC3339)
		how = planHold
	}
	// uncovered: an override token came with c, but its override does not
	// cover it; c goes to its approval policy, and the record says why.
	uncovered := func(why record.Reason, detail string) {
		kind = record.KindRequest
		data.OverrideNotApplied, data.OverrideExpiresAt, data.PolicySkipped = why, "", ""
		if data.Detail != "" {
			detail = data.Detail + "; " + detail
		}
		data.Detail = detail
		hold()
	}
	switch {
	case d.Outcome == rules.Pending && c.Capability != "":
		cl, err := svc.Capability(c.Capability, c.Req.App, d.Action, v.Digest)
		if err != nil {
			data.TokenError = err.Error()
			v.deny(approvals.TokenReason(err))
			break
		}
		data.TokenID = cl.ID
		if reason := svc.HeadersOf(cl.ApprovalID, c.Req.ContentType, c.ContentEncoding); reason != "" {
			v.ApprovalID = cl.ApprovalID
			v.deny(reason)
			break
		}
		if cc != nil && !g.countApproved(cc, cl.ApprovalID, &charge) {
			data.TokenID = ""
			hold()
			break
		}
		v.allowApproved(cl.ApprovalID, c.Capability, record.Capability)
		how, useID, tokenID = planConsume, cl.ApprovalID, cl.ID
	case d.Outcome == rules.Pending && c.ApprovalID != "":
		data.ApprovalIDPresented = c.ApprovalID
		a, reason := svc.Retry(c.ApprovalID, c.Req.App, d.Action, v.Digest, c.Req.ContentType, c.ContentEncoding)
		if a != nil {
			v.ApprovalID = a.ID
		}
		if reason != "" {
			v.deny(reason)
			break
		}
		data.TokenID = a.TokenID
		if cc != nil && !g.countApproved(cc, a.ID, &charge) {
			data.TokenID = ""
			hold()
			break
		}
		v.allowApproved(a.ID, a.Token, record.Approved)
		how, useID, tokenID = planConsume, a.ID, a.TokenID
	case d.Outcome == rules.Pending && c.Override != "":
		// The denylist and every deny are decided before this point, so an
		// override can never reach them. An override covers a request
		// within its amount bound and its uses; each use is a record of
		// kind override, counted with it. Any other request goes to its
		// approval policy, as if no token had come.
		cl, ov, err := svc.Override(c.Override, c.Req.App, d.Action)
		if err != nil {
			data.TokenError = err.Error()
			v.deny(approvals.TokenReason(err))
			break
		}
		data.OverrideID, data.TokenID = cl.ApprovalID, cl.ID
		bound, why, detail := svc.OverrideCovers(ov, d)
		data.OverrideMaxAmount, data.OverrideMaxUses = bound, ov.MaxUses
		if why != "" {
			uncovered(why, detail)
			break
		}
		kind = record.KindOverride
		data.OverrideExpiresAt = cl.Expires.UTC().Format(time.RFC3339)
		data.PolicySkipped = string(d.Requirement.Policy)
		v.Outcome, v.Reason, v.ApprovalID = rules.Allow, record.Override, cl.ApprovalID
		how, useID, tokenID = planOverride, cl.ApprovalID, cl.ID
	case d.Outcome == rules.Pending:
		hold()
	case d.Outcome == rules.Allow:
		v.Outcome, v.Reason = rules.Allow, d.Reason
		charge = cc != nil
	default:
		v.deny(d.Reason)
	}

	entry := func() ledger.Entry {
		e := ledger.Entry{Kind: kind, App: c.Req.App, Action: d.Action, Decision: v.Decision(),
			Reason: v.Reason, ApprovalID: v.ApprovalID, Digest: v.Digest, Policy: m.Hash, Data: data.Map()}
		if charge {
			e = g.charge(cc, e, now)
		}
		return e
	}
	writeHold := func() (ledger.Record, error) {
		rec, err := svc.Hold(pending, entry())
		if errors.Is(err, approvals.ErrTooManyPending) {
			// Refused before anything was stored: recorded as a denial,
			// with no approval and nothing to wait for.
			v.deny(record.TooManyPending)
			v.ApprovalID, v.RequiredRoles, v.ExpiresAt = "", nil, time.Time{}
			data.RequiredRoles, data.ExpiresAt, data.Detail = nil, "", err.Error()
			rec, err = g.append(entry())
		}
		return rec, err
	}
	// overCap: requests racing c took the window's room first, so nothing
	// was written; c gets the escalation.
	overCap := func() (ledger.Record, error) {
		charge, cc.over, cc.why = false, true, "requests let through meanwhile took the room under cumulative_cap "+cc.a.CumulativeCap.AmountText()
		d = cc.escalate(d, c.Req.Escalation)
		data.Detail = d.Detail
		v.Capability, v.usedID, v.usedToken = "", "", ""
		hold()
		return writeHold()
	}
	var rec ledger.Record
	var err error
	if how == planOverride {
		rec, err = svc.UseOverride(useID, tokenID, entry())
		switch {
		case errors.Is(err, approvals.ErrOverrideExhausted):
			// Requests racing this one took the last uses: nothing was
			// written, and this one goes to its approval policy.
			uncovered(record.OverrideExhausted, err.Error()+"; the request goes to its approval policy")
		case err != nil && approvals.IsRefusal(err):
			// The override changed state since it was read: refused.
			kind = record.KindRequest
			v.deny(approvals.TokenReason(err))
			data.OverrideExpiresAt, data.PolicySkipped, data.Detail = "", "", err.Error()
			how = planAppend
		}
	}
	switch how {
	case planOverride:
		// Written above.
	case planHold:
		rec, err = writeHold()
	case planConsume:
		rec, err = svc.Consume(useID, tokenID, entry())
		if charge && errors.Is(err, ErrCumulativeOverCap) {
			rec, err = overCap()
			break
		}
		if err == nil {
			v.usedID, v.usedToken = useID, tokenID
		}
		if err != nil && approvals.IsRefusal(err) {
			// Another request used the approval first (or it changed
			// state): record this one as refused.
			v.deny(approvals.TokenReason(err))
			v.Capability = ""
			data.Detail = err.Error()
			rec, err = g.append(entry())
		}
	default:
		rec, err = g.append(entry())
		if charge && errors.Is(err, ErrCumulativeOverCap) {
			rec, err = overCap()
		}
	}
	if err != nil {
		g.log.Error().Err(err).Str("action", v.Action).Str("app", v.App).Str("digest", v.Digest).
			Msg("ledger append failed; request refused")
		u := &Verdict{Outcome: rules.Deny, Reason: record.LedgerUnavailable, Action: v.Action, App: v.App,
			Digest: v.Digest, started: now, door: c.Door}
		g.logDecision(c, u, url, now)
		return u
	}
	v.Record = rec.Seq
	g.logDecision(c, v, url, now)
	return v
}

func (v *Verdict) deny(reason record.Reason) {
	v.Outcome, v.Reason, v.Capability, v.Hold = rules.Deny, reason, "", 0
}

func (v *Verdict) allowApproved(approvalID, token string, reason record.Reason) {
	v.Outcome, v.Reason, v.ApprovalID, v.Capability = rules.Allow, reason, approvalID, token
}

// verifyCaller, with an identity configured, replaces c's On-Behalf-Of
// token by the caller it proves, or says why it proves none (the value is
// then cleared: a token is a bearer secret, and an unproven name must not
// reach a record as if it were someone's). Without identity it changes
// nothing.
func (g *Gate) verifyCaller(c *Call) (*Caller, string) {
	if g.identity == nil {
		return nil, ""
	}
	if c.proven != nil {
		return c.proven, ""
	}
	token := c.Req.OnBehalfOf
	c.Req.OnBehalfOf = ""
	cl, err := ProveCaller(g.identity, token)
	if err != nil {
		return nil, err.Error()
	}
	c.Req.OnBehalfOf = cl.ID
	c.proven = &cl
	return &cl, ""
}

// ProveCaller verifies an X-UAPK-On-Behalf-Of token and returns the caller
// it proves, its id in the one canonical form of principal ids. The error
// says why in words fit for the caller, never with any part of the token.
func ProveCaller(id Identity, token string) (Caller, error) {
	if token == "" {
		return Caller{}, errors.New("identity is configured: X-UAPK-On-Behalf-Of must carry the caller's identity token")
	}
	ctx, cancel := context.WithTimeout(context.Background(), identityTimeout)
	defer cancel()
	cl, err := id.Verify(ctx, token)
	if err != nil {
		return Caller{}, fmt.Errorf("X-UAPK-On-Behalf-Of: %w", err)
	}
	// Identity providers keep an address's case as it was typed; a
	// principal id is its ASCII lower case (one person, one spelling).
	// Only A-Z are folded: Unicode case rules would fold K (U+212A) into
	// k, making someone else's id of a name no one reviewed.
	cl.ID = asciiLower(cl.ID)
	if err := rules.CheckID(cl.ID); err != nil {
		return Caller{}, fmt.Errorf("X-UAPK-On-Behalf-Of: the token's claim is not a principal id: %w", err)
	}
	return cl, nil
}

// ProveRequester checks that token, an identity token, proves requestedBy,
// an override request's requester; nil when it does.
func ProveRequester(id Identity, token, requestedBy string) *approvals.CallerError {
	cl, err := ProveCaller(id, token)
	if err != nil {
		return &approvals.CallerError{Status: 401, Reason: string(record.UnauthenticatedCaller),
			Message: err.Error() + " (identity is configured: an override request carries its requester's identity token)"}
	}
	if requestedBy != cl.ID {
		return &approvals.CallerError{Status: 403, Reason: "requested_by_mismatch",
			Message: "requested_by " + strconv.Quote(requestedBy) + " is not the caller the identity token proves, " + strconv.Quote(cl.ID)}
	}
	return nil
}

// asciiLower folds A-Z only; any other byte is left for CheckID to judge
// (it refuses every non-ASCII one).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// identityTimeout bounds a caller check, a JWKS refresh included.
const identityTimeout = 10 * time.Second

// logDecision writes the one canonical line per decision; field names are
// constant so that log queries keep working.
func (g *Gate) logDecision(c *Call, v *Verdict, url string, start time.Time) {
	g.obs.Decision(c.Door, v.Action, string(v.Decision()), g.now().Sub(start))
	g.log.Info().Str("door", c.Door).Str("decision", string(v.Decision())).Str("reason", string(v.Reason)).
		Str("action", v.Action).Str("app", v.App).Uint64("seq", v.Record).Str("approval_id", v.ApprovalID).
		Str("method", c.Req.Method).Str("url", url).
		Float64("latency_ms", float64(g.now().Sub(start).Microseconds())/1000).Msg("decision")
}

// sanitize makes the agent's header values safe to record: valid UTF-8 (the
// ledger refuses anything else, and a bad header must get a clear answer,
// not a 503) and bounded in length. An app id changed by this no longer
// matches the manifest and is denied as unknown_app.
func (c *Call) sanitize() {
	const maxV, maxJ = approvals.MaxHeaderValue, approvals.MaxJustification
	c.Req.App = approvals.Clip(c.Req.App, maxV)
	c.Req.OnBehalfOf = approvals.Clip(c.Req.OnBehalfOf, maxV)
	c.Req.Escalation = approvals.Clip(c.Req.Escalation, maxV)
	c.Justification = approvals.Clip(c.Justification, maxJ)
	c.ApprovalID = approvals.Clip(c.ApprovalID, maxV)
	c.Capability = approvals.Clip(c.Capability, 4*maxV)
	c.Override = approvals.Clip(c.Override, 4*maxV)
	c.URL, c.Req.Path, c.Req.RawQuery = escapeTarget(c.URL), escapeTarget(c.Req.Path), escapeTarget(c.Req.RawQuery)
}

// rewrite says why the call names another method or target than the one
// the gate sees ("" when it does not): a rewrite header, or a _method
// parameter in the query however it is spelt.
func (c *Call) rewrite() string {
	if len(c.Repeated) > 0 {
		return "the request carries " + strings.Join(c.Repeated, ", ") + " more than once; servers read different ones"
	}
	if len(c.Rewrites) > 0 {
		return "the request carries " + strings.Join(c.Rewrites, ", ") + ", by which servers change its method or target"
	}
	if hasMethodParam(c.Req.RawQuery) {
		return "the query carries a _method parameter, by which servers change the method"
	}
	// Rails, Laravel and Symfony read _method from a form body too.
	mt, _, _ := strings.Cut(strings.ToLower(c.Req.ContentType), ";")
	switch strings.TrimSpace(mt) {
	case "application/x-www-form-urlencoded":
		if hasMethodParam(string(c.Req.Body)) {
			return "the form body carries a _method field, by which servers change the method"
		}
	case "multipart/form-data":
		b := strings.ToLower(string(c.Req.Body))
		if strings.Contains(b, `name="_method"`) || strings.Contains(b, "name=_method") {
			return "the multipart body carries a _method field, by which servers change the method"
		}
	}
	return ""
}

// hasMethodParam reports whether any parameter of the raw query decodes to
// _method in any case, whether a server splits on & or ;, decodes + or not.
func hasMethodParam(q string) bool {
	for q != "" {
		var kv string
		if i := strings.IndexAny(q, "&;"); i >= 0 {
			kv, q = q[:i], q[i+1:]
		} else {
			kv, q = q, ""
		}
		k, _, _ := strings.Cut(kv, "=")
		if u, err := url.QueryUnescape(k); err == nil {
			k = u
		}
		if strings.EqualFold(strings.TrimSpace(k), "_method") {
			return true
		}
	}
	return false
}

func (c *Call) url() string {
	if c.URL != "" {
		return c.URL
	}
	return c.Req.URL()
}

// Refuse records a request the door refuses before any policy is applied (a
// body over the limit, a bad target) and returns the refusal. data carries
// what the door knows of it beside door, method and url.
func (g *Gate) Refuse(c *Call, reason record.Reason, data record.Request) *Verdict {
	c.sanitize()
	now := g.now()
	url := c.url()
	v := &Verdict{started: now, App: c.Req.App, Digest: Digest(c.Req.Method, url, c.Req.Body), door: c.Door}
	v.deny(reason)
	data.Door, data.Method, data.URL = c.Door, c.Req.Method, url
	if data.Via == "" {
		data.Via = c.Via
	}
	if g.identity != nil {
		// Not verified here: never record the header, a token or a claim.
		data.OnBehalfOf, data.CallerVerified = "", false
	}
	rec, err := g.append(ledger.Entry{
		Kind: record.KindRequest, App: c.Req.App, Decision: v.Decision(), Reason: reason,
		Digest: v.Digest, Policy: g.engine.Load().Manifest().Hash, Data: data.Map(),
	})
	if err != nil {
		// The refusal stands; only its record is missing, and the log says so.
		g.log.Error().Err(err).Str("reason", string(reason)).Msg("ledger append failed for a refused request")
	} else {
		v.Record = rec.Seq
	}
	g.logDecision(c, v, url, now)
	return v
}

// append writes e with the ledger's own deadline, not the client's.
func (g *Gate) append(e ledger.Entry) (ledger.Record, error) {
	return g.ledger.Append(g.deadlines.get(), e)
}
