package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Ledger is what the service needs of the hash chain for the records that
// change no approval (refused decisions, issued tokens).
type Ledger interface {
	Append(ctx context.Context, e ledger.Entry) (ledger.Record, error)
}

// Observer receives what the service sees, for metrics; it must not block.
type Observer interface {
	// ApprovalCompleted: an approval became approved or rejected, waited
	// from its creation.
	ApprovalCompleted(action, status string, waited time.Duration)
}

// Config configures a Service. Store, Ledger, Tokens and Engine are required.
type Config struct {
	Store  Store
	Ledger Ledger
	Tokens *tokens.Issuer
	// Engine returns the rules in force: the manifest (policy hash, override
	// section) and the principals who may sign.
	Engine   func() *rules.Engine
	Observer Observer
	Logger   zerolog.Logger
	Now      func() time.Time
	// AppendTimeout bounds a ledger write (default 5s): the ledger's own
	// deadline, not a client's.
	AppendTimeout time.Duration
	// RP is the relying party passkey decisions must be made for (ui.url);
	// nil: passkey decisions are refused.
	RP *passkey.RP
	// Shared: other proxies change the store too (PostgreSQL). An approved
	// approval is then used only after its decisions are verified again
	// against this proxy's principals (Reverify): the database can forge
	// nothing.
	Shared bool
	// Changed, when set, is told of each approval's change of state once
	// it is recorded: created (pending), decided (still pending), approved,
	// rejected, expired; by is who decided. It must not block (the
	// notifier queues): it runs on the request path.
	Changed func(change string, a *Approval, by string)
}

// The changes Config.Changed is told of.
const (
	ChangeCreated  = "created"
	ChangeDecided  = "decided"
	ChangeApproved = "approved"
	ChangeRejected = "rejected"
	ChangeExpired  = "expired"
)

// Service owns an approval's whole life: it is created with the request
// record that needs it, decided by signed statements, expired, used once,
// and it wakes the requests held on it. Every change of state goes through
// here and is a ledger record.
type Service struct {
	store   Store
	ledger  Ledger
	tokens  *tokens.Issuer
	engine  func() *rules.Engine
	obs     Observer
	log     zerolog.Logger
	now     func() time.Time
	timeout time.Duration
	waiters waiters
	pending pendingCount
	rp      *passkey.RP
	changed func(string, *Approval, string)
	shared  bool
}

// pendingCount is how many pending request approvals each app holds, for
// the manifest's max_pending: kept in memory, loaded from the store at
// New, reserved before a hold and released when an approval leaves
// pending.
type pendingCount struct {
	mu    sync.Mutex
	byApp map[string]int
	ids   map[string]string // approval id -> app, the ones counted
}

// reserve counts approval id as one more pending approval of app if app
// holds fewer than max. The id is counted from here on, so an approval
// decided or expired the moment it is stored is released all the same;
// a hold that fails gives it back with done.
func (p *pendingCount) reserve(id, app string, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byApp[app] >= max {
		return false
	}
	p.byApp[app]++
	p.ids[id] = app
	return true
}

// done releases approval id's count, once, when it leaves pending (or its
// hold failed).
func (p *pendingCount) done(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if app, ok := p.ids[id]; ok {
		delete(p.ids, id)
		p.byApp[app]--
	}
}

// New returns a service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Ledger == nil || cfg.Tokens == nil || cfg.Engine == nil {
		return nil, errors.New("approvals service needs a store, a ledger, a token issuer and an engine")
	}
	s := &Service{store: cfg.Store, ledger: cfg.Ledger, tokens: cfg.Tokens, engine: cfg.Engine,
		obs: cfg.Observer, log: cfg.Logger, now: cfg.Now, timeout: cfg.AppendTimeout, rp: cfg.RP, changed: cfg.Changed, shared: cfg.Shared}
	if s.changed == nil {
		s.changed = func(string, *Approval, string) {}
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Second
	}
	s.pending = pendingCount{byApp: map[string]int{}, ids: map[string]string{}}
	open, err := s.store.List(StatusPending, s.now())
	if err != nil {
		return nil, fmt.Errorf("count pending approvals: %w", err)
	}
	for _, a := range open {
		if a.Kind == KindRequest {
			s.pending.byApp[a.App]++
			s.pending.ids[a.ID] = a.App
		}
	}
	return s, nil
}

// replayed reports whether counter is not above the highest the store
// recorded for the credential, which the store raises in each decision's
// own transaction (and checks there again, for decisions racing this one).
func (s *Service) replayed(cred string, counter uint32) (bool, uint32) {
	last, err := s.store.PasskeyCounter(cred)
	if err != nil {
		s.log.Error().Err(err).Msg("passkey counter unreadable; the decision is refused")
		return true, 0
	}
	// Once a passkey has counted, 0 is no longer "keeps no counter": it is
	// a clone's, or a forger's (WebAuthn, verifying an assertion, step 21).
	return last != 0 && counter <= last, last
}

type nopObserver struct{}

func (nopObserver) ApprovalCompleted(string, string, time.Duration) {}

// Tokens returns the issuer that signs capability and override tokens.
func (s *Service) Tokens() *tokens.Issuer { return s.tokens }

// Get returns approval id, or an error wrapping ErrNotFound (also for an id
// of the wrong shape, which never reaches the store).
func (s *Service) Get(id string) (*Approval, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return s.store.Get(id)
}

// List returns the approvals whose status is status ("" for all), oldest first.
func (s *Service) List(status string) ([]*Approval, error) {
	if !ValidStatus(status) {
		return nil, ErrBadStatus
	}
	return s.store.List(status, s.now())
}

// Page is one page of approvals and the cursor of the next (""
// none).
type Page struct {
	Approvals []*Approval
	Next      string
	Total     int
}

// MaxPage bounds a page.
const MaxPage = 1000

// ListPage returns the approvals with status, oldest first, from after the
// one whose id is cursor (the start when ""), at most limit (1 to MaxPage).
func (s *Service) ListPage(status, cursor string, limit int) (Page, error) {
	list, err := s.List(status)
	if err != nil {
		return Page{}, err
	}
	return PageOf(list, cursor, limit)
}

// PageOf cuts one page out of list, oldest first: from after the approval
// whose id is cursor (the start when ""), at most limit (1 to MaxPage).
func PageOf(list []*Approval, cursor string, limit int) (Page, error) {
	limit = min(max(limit, 1), MaxPage)
	start := 0
	if cursor != "" {
		start = -1
		for i, a := range list {
			if a.ID == cursor {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return Page{}, ErrBadCursor
		}
	}
	end := min(start+limit, len(list))
	p := Page{Approvals: list[start:end], Total: len(list)}
	if end < len(list) {
		p.Next = list[end-1].ID
	}
	return p, nil
}

func (s *Service) policy() string { return s.engine().Manifest().Hash }

func (s *Service) append(e ledger.Entry) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.ledger.Append(ctx, e)
}

// Pending describes a request the rules held for approval.
type Pending struct {
	Decision        rules.Decision
	App             string
	Method          string
	URL             string
	Body            []byte
	ContentType     string
	ContentEncoding string
	Justification   string
	OnBehalfOf      string
	Digest          string
}

// NewPending returns the approval a held request gets; Hold stores it.
func (s *Service) NewPending(p Pending) *Approval {
	now := s.now()
	d := p.Decision
	a := &Approval{
		ID: NewID(), Kind: KindRequest, Status: StatusPending, Action: d.Action, App: p.App,
		Method: p.Method, URL: p.URL, Justification: p.Justification, OnBehalfOf: p.OnBehalfOf,
		Digest: p.Digest, Amount: d.Amount, Reason: d.Reason, Requirement: d.Requirement,
		RequiredRoles: d.Requirement.Roles(), Decisions: []Decision{},
		CreatedAt: now.UTC(), ExpiresAt: now.Add(d.ApprovalTTL).UTC(),
	}
	a.Body, a.BodyBase64 = bodyText(p.Body)
	for name, v := range map[string]string{"Content-Type": p.ContentType, "Content-Encoding": p.ContentEncoding} {
		if v != "" {
			if a.Headers == nil {
				a.Headers = map[string]string{}
			}
			a.Headers[name] = v
		}
	}
	return a
}

// Hold stores a (from NewPending) with e, the request record that held it.
// It fails with ErrTooManyPending, writing nothing, when a's app already
// holds the manifest's max_pending pending approvals.
func (s *Service) Hold(a *Approval, e ledger.Entry) (ledger.Record, error) {
	if !s.pending.reserve(a.ID, a.App, s.engine().Manifest().MaxPending) {
		return ledger.Record{}, fmt.Errorf("%w: app %s holds %d", ErrTooManyPending, a.App, s.engine().Manifest().MaxPending)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	rec, err := s.store.Create(ctx, a, e)
	if err != nil {
		s.pending.done(a.ID)
		return rec, err
	}
	s.changed(ChangeCreated, a.Clone(), "")
	return rec, nil
}

// Retry says whether approval id lets this request (app, action, digest,
// content type and encoding) through now, and returns it; reason is "" when
// it does, else the code to refuse with. Nothing is changed: Consume does
// that with the record.
func (s *Service) Retry(id, app, action, digest, contentType, contentEncoding string) (*Approval, record.Reason) {
	if !ValidID(id) {
		return nil, record.NotApproved
	}
	a, err := s.store.Get(id)
	if err != nil {
		return nil, record.NotApproved
	}
	now := s.now()
	switch {
	case a.Kind == KindOverride:
		return a, record.NotApproved
	case a.Digest != digest || a.App != app || a.Action != action:
		return a, record.DigestMismatch
	case !sameHeaders(a, contentType, contentEncoding):
		return a, record.HeadersMismatch
	case a.Status == StatusRejected:
		return a, record.Rejected
	case a.Consumed != 0:
		return a, record.Consumed
	case a.Effective(now) == StatusExpired:
		return a, record.ApprovalExpired
	case a.Status != StatusApproved || a.Token == "":
		return a, record.NotApproved
	case !now.Before(a.TokenExp):
		return a, record.ApprovalExpired
	}
	if s.shared {
		if err := Reverify(a, s.engine().Principals(), s.rp); err != nil {
			s.log.Error().Str("approval_id", a.ID).Err(err).Msg("a shared approval does not hold up against this proxy's principals; refused")
			return a, record.NotApproved
		}
	}
	return a, ""
}

// Remote takes note that approval id changed elsewhere (another proxy over
// a shared store): once it is no longer pending, requests held on it here
// are woken to decide again, and it stops counting against max_pending.
func (s *Service) Remote(id string) {
	a, err := s.store.Get(id)
	if err != nil {
		return
	}
	if a.Status == StatusPending {
		return // created, or one decision of several: held requests keep waiting
	}
	s.pending.done(id)
	s.waiters.wake(id)
}

// HeadersOf says whether a request with this content type and encoding may
// use approval id: "" when they are the approved request's (or the approval
// is unknown: Consume refuses that), else headers_mismatch.
func (s *Service) HeadersOf(id, contentType, contentEncoding string) record.Reason {
	a, err := s.store.Get(id)
	if err == nil && !sameHeaders(a, contentType, contentEncoding) {
		return record.HeadersMismatch
	}
	return ""
}

// sameHeaders: the Content-Type and Content-Encoding that change what the
// approved body means are the ones the approver saw, byte for byte.
func sameHeaders(a *Approval, contentType, contentEncoding string) bool {
	return a.Headers["Content-Type"] == contentType && a.Headers["Content-Encoding"] == contentEncoding
}

// Capability checks a presented capability token for this request and
// returns its claims; the error's reason (TokenReason) is the refusal code.
func (s *Service) Capability(token, app, action, digest string) (*tokens.Claims, error) {
	cl, err := s.tokens.Verify(token, tokens.KindCapability, s.now())
	if err == nil {
		err = cl.Bind(app, action, digest)
	}
	return cl, err
}

// Override checks a presented override token for this app and action, and
// that its override is still the approved one that issued it; it returns
// the token's claims and that override. Whether the override covers a
// given request is OverrideCovers'.
func (s *Service) Override(token, app, action string) (*tokens.Claims, *Approval, error) {
	cl, err := s.tokens.Verify(token, tokens.KindOverride, s.now())
	if err == nil {
		err = cl.Bind(app, action, "")
	}
	var a *Approval
	if err == nil {
		if a, err = s.store.Get(cl.ApprovalID); err == nil && (a.Status != StatusApproved || a.TokenID != cl.ID) {
			err = fmt.Errorf("%w: override %s is %s", tokens.ErrInvalid, a.ID, a.Status)
		}
	}
	if err != nil {
		return cl, nil, err
	}
	return cl, a, nil
}

// TokenReason is the refusal code of an error from Capability, Override or
// Consume.
func TokenReason(err error) record.Reason {
	switch {
	case errors.Is(err, ErrConsumed):
		return record.Consumed
	case errors.Is(err, ErrNotApproved):
		return record.NotApproved
	}
	return tokens.Reason(err)
}

// Consume writes e, the record that lets an approved request through, and
// marks approval id and its token used, in one unit. An error wrapping
// ErrConsumed or ErrNotApproved is a refusal (another request used it
// first); any other is the ledger's.
func (s *Service) Consume(id, tokenID string, e ledger.Entry) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.store.Consume(ctx, id, tokenID, e)
}

// Release writes e, the record of a request that never reached the ERP,
// and makes the approval it consumed (record usedBy) usable again, in one
// unit.
func (s *Service) Release(id, tokenID string, usedBy uint64, e ledger.Entry) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.store.Release(ctx, id, tokenID, usedBy, e)
}

// IsRefusal tells a Consume that lost a race (record it as refused) from a
// ledger outage (answer 503).
func IsRefusal(err error) bool {
	return errors.Is(err, ErrConsumed) || errors.Is(err, ErrNotApproved)
}

// Decide records an approver's signed decision. It returns the approval as
// it stands after, or the refusal, which is recorded too. When the decision
// completes an approval a single-use capability token (or, for an override,
// the override token) is issued and recorded, and requests held on it are
// woken.
func (s *Service) Decide(id string, sub Submission) (*Approval, *Refusal, error) {
	if !ValidID(id) {
		return nil, nil, ErrNotFound
	}
	principals := s.engine().Principals()
	for attempt := 0; ; attempt++ {
		a, err := s.store.Get(id)
		if err != nil {
			return nil, nil, err
		}
		now := s.now()
		preview := a.Clone()
		d, ref := ApplyRP(preview, sub, principals, now, s.rp)
		if ref == nil && d.WebAuthn != nil {
			if bad, last := s.replayed(d.WebAuthn.CredentialID, d.counter); bad {
				ref = refuse(RefuseBadSignature, "the passkey's signature counter %d is not above %d, seen before: a replayed or cloned authenticator", d.counter, last)
			}
		}
		if ref != nil {
			return a, ref, s.recordRefusal(a, sub, ref)
		}
		if preview.Status == StatusApproved {
			s.issue(preview, now)
		}
		data := record.Signature{Approver: d.Approver, Role: d.Role, SignedAt: sub.SignedAt,
			Signature: sub.Signature, Reason: clip(sub.Reason, MaxJustification), Status: preview.Status,
			ApprovalKind: a.Kind, StatementSHA256: sha256Hex(Statement(a.ID, a.Digest, sub.Decision, sub.Approver, sub.SignedAt))}
		if w := d.WebAuthn; w != nil {
			data.WebAuthn = &record.WebAuthn{CredentialID: w.CredentialID, AuthenticatorData: w.AuthenticatorData,
				ClientDataJSON: w.ClientDataJSON, Signature: w.Signature, RPID: s.rp.ID, Origin: s.rp.Origin}
		}
		e := ledger.Entry{
			Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
			Decision: record.Decision(sub.Decision), Reason: record.Signed, Policy: s.policy(), Data: data.Map(),
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		rec, err := s.store.Update(ctx, id, e, func(cur *Approval, rec *ledger.Record) error {
			d2, ref2 := ApplyRP(cur, sub, principals, now, s.rp)
			if ref2 != nil || cur.Status != preview.Status || d2.Role != d.Role {
				return ErrChanged
			}
			d2.Record = rec.Seq
			cur.Token, cur.TokenID, cur.TokenExp, cur.Completed = preview.Token, preview.TokenID, preview.TokenExp, preview.Completed
			return nil
		})
		cancel()
		if errors.Is(err, ErrChanged) && attempt < 5 {
			continue
		}
		if errors.Is(err, ErrPasskeyReplayed) {
			// Another decision by the same passkey, with this counter or
			// a higher one, committed first: refused, as a clone's would be.
			ref := refuse(RefuseBadSignature, "the passkey's signature counter %d is not above one it showed before: a replayed or cloned authenticator", d.counter)
			return a, ref, s.recordRefusal(a, sub, ref)
		}
		if err != nil {
			return nil, nil, err
		}
		s.log.Info().Str("approval_id", id).Str("approver", d.Approver).Str("role", d.Role).
			Str("decision", sub.Decision).Str("status", preview.Status).Uint64("seq", rec.Seq).Msg("approval decision")
		if preview.Status == StatusApproved {
			s.recordToken(preview)
		}
		if preview.Status != StatusPending {
			s.obs.ApprovalCompleted(a.Action, preview.Status, now.Sub(a.CreatedAt))
			s.pending.done(id)
			s.waiters.wake(id)
		}
		after, err := s.store.Get(id)
		if err == nil {
			change := ChangeDecided
			switch after.Status {
			case StatusApproved:
				change = ChangeApproved
			case StatusRejected:
				change = ChangeRejected
			}
			s.changed(change, after.Clone(), d.Approver)
		}
		return after, nil, err
	}
}

// issue signs the token an approved approval grants.
func (s *Service) issue(a *Approval, now time.Time) {
	c := &tokens.Claims{Kind: tokens.KindCapability, ApprovalID: a.ID, Action: a.Action, App: a.App,
		Digest: a.Digest, IssuedAt: now, Expires: a.ExpiresAt}
	if a.Kind == KindOverride {
		d, _ := time.ParseDuration(a.Duration) // checked when the override was requested
		c = &tokens.Claims{Kind: tokens.KindOverride, ApprovalID: a.ID, Action: a.Action, App: a.App,
			IssuedAt: now, Expires: now.Add(d)}
	}
	a.Token = s.tokens.Issue(c)
	a.TokenID, a.TokenExp, a.Completed = c.ID, c.Expires.UTC(), now.UTC()
}

// recordToken writes the record of an issued token. The token itself is a
// bearer secret and stays out of the ledger; its id, hash and binding go in.
func (s *Service) recordToken(a *Approval) {
	kind, reason := record.KindCapability, record.Capability
	if a.Kind == KindOverride {
		kind, reason = record.KindOverride, record.OverrideTokenIssued
	}
	data := record.Token{TokenID: a.TokenID, TokenSHA256: sha256Hex([]byte(a.Token)),
		ExpiresAt: a.TokenExp.Format(time.RFC3339), IssuedAt: a.Completed.Format(time.RFC3339)}
	_, err := s.append(ledger.Entry{
		Kind: kind, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: record.Issued, Reason: reason, Policy: s.policy(), Data: data.Map(),
	})
	if err != nil {
		s.log.Error().Err(err).Str("approval_id", a.ID).Msg("token issued but its record was not written")
	}
}

// recordRefusal writes a refused decision: who tried, what and why.
func (s *Service) recordRefusal(a *Approval, sub Submission, ref *Refusal) error {
	data := record.Refusal{Approver: clip(sub.Approver, 256), DecisionRequested: clip(sub.Decision, 256),
		SignedAt: clip(sub.SignedAt, 256), Detail: clip(ref.Detail, 1024)}
	_, err := s.append(ledger.Entry{
		Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: record.Refused, Reason: ref.Code, Policy: s.policy(), Data: data.Map(),
	})
	s.log.Warn().Str("approval_id", a.ID).Str("approver", clip(sub.Approver, 256)).Str("reason", string(ref.Code)).
		Str("detail", ref.Detail).Msg("approval decision refused")
	return err
}

// ExpireDue marks pending approvals past their expiry as expired, one
// ledger record each, and wakes whatever waits on them.
func (s *Service) ExpireDue() (int, error) {
	list, err := s.store.Due(s.now())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range list {
		data := record.Expiry{ExpiresAt: a.ExpiresAt.Format(time.RFC3339), Decisions: len(a.Decisions)}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		_, err := s.store.Update(ctx, a.ID, ledger.Entry{
			Kind: record.KindApproval, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
			Decision: record.Expired, Reason: record.TTLElapsed, Policy: s.policy(), Data: data.Map(),
		}, func(cur *Approval, _ *ledger.Record) error {
			if cur.Status != StatusPending {
				return ErrChanged
			}
			cur.Status = StatusExpired
			return nil
		})
		cancel()
		if errors.Is(err, ErrChanged) {
			continue // decided meanwhile
		}
		if err != nil {
			return n, err
		}
		n++
		s.pending.done(a.ID)
		s.waiters.wake(a.ID)
		if cur, err := s.store.Get(a.ID); err == nil {
			s.changed(ChangeExpired, cur, "")
		}
	}
	return n, nil
}

// OverrideRequest asks for an emergency override.
type OverrideRequest struct {
	Action        string `json:"action"`
	Duration      string `json:"duration"`
	Justification string `json:"justification"`
	RequestedBy   string `json:"requested_by"`
	// MaxAmount, optional, is the most one request may carry under the
	// override; without it the action's amount_cap bounds it. Above the
	// amount_cap it needs the escalation's roles too.
	MaxAmount Amount `json:"max_amount,omitempty"`
	// MaxUses, optional, is how many requests the override may let
	// through; without it the manifest's override.max_uses, if any.
	MaxUses *int `json:"max_uses,omitempty"`
	// CallerToken is the identity token the request came with (the admin
	// API's X-UAPK-On-Behalf-Of), which a hub passes on to the proxy that
	// takes it; never part of the posted JSON.
	CallerToken string `json:"-"`
}

// BadRequestError is an invalid request from a client; its message says why.
type BadRequestError struct{ Problems []string }

func (e *BadRequestError) Error() string { return strings.Join(e.Problems, "; ") }

// OverrideDigest is what override approvers sign in place of a request
// digest. An override without bounds keeps the first form, hex SHA-256 of
//
//	"uapk-override-v1\nAPP\nACTION\nDURATION\nREQUESTED_BY\n" + hex(SHA-256(justification))
//
// so that every override approved before bounds existed still verifies;
// one with a max_amount or a max_uses signs them too:
//
//	"uapk-override-v2\nAPP\nACTION\nDURATION\nREQUESTED_BY\nMAX_AMOUNT\nMAX_USES\n" + hex(SHA-256(justification))
//
// MAX_AMOUNT as plain decimal text, MAX_USES in decimal, either "" when
// absent.
func OverrideDigest(app, action, duration, requestedBy, justification, maxAmount string, maxUses int) string {
	j := sha256.Sum256([]byte(justification))
	if maxAmount == "" && maxUses == 0 {
		return sha256Hex([]byte(fmt.Sprintf("uapk-override-v1\n%s\n%s\n%s\n%s\n%x", app, action, duration, requestedBy, j)))
	}
	uses := ""
	if maxUses != 0 {
		uses = strconv.Itoa(maxUses)
	}
	return sha256Hex([]byte(fmt.Sprintf("uapk-override-v2\n%s\n%s\n%s\n%s\n%s\n%s\n%x",
		app, action, duration, requestedBy, maxAmount, uses, j)))
}

// RequestOverride records an override request as an approval that needs the
// manifest's override.roles_required, and, when its max_amount is above the
// action's amount_cap, the roles of the action's escalation as well: an
// override never lets through what its approvers could not have approved
// themselves. It never covers a denylisted action.
func (s *Service) RequestOverride(r OverrideRequest) (*Approval, error) {
	r.Action, r.Duration = clip(r.Action, MaxHeaderValue), clip(r.Duration, 64)
	r.Justification, r.RequestedBy = clip(r.Justification, MaxJustification), clip(r.RequestedBy, MaxHeaderValue)
	m := s.engine().Manifest()
	var problems []string
	act, ok := m.Action(r.Action)
	switch {
	case m.Override == nil:
		problems = append(problems, "the manifest has no override section: overrides are off")
	case r.Action == "":
		problems = append(problems, "action is required")
	case !ok:
		problems = append(problems, fmt.Sprintf("action %q is not in the manifest", r.Action))
	case m.Denylisted(r.Action) || act.Policy == rules.DenyPolicy:
		problems = append(problems, fmt.Sprintf("action %q is denied by the manifest; no override can allow it", r.Action))
	}
	d, err := time.ParseDuration(r.Duration)
	switch {
	case err != nil || d <= 0:
		problems = append(problems, fmt.Sprintf("duration %q must be a positive duration such as 4h", r.Duration))
	case m.Override != nil && d > m.Override.MaxDuration:
		problems = append(problems, fmt.Sprintf("duration %s is longer than override.max_duration %s", d, m.Override.MaxDuration))
	}
	maxAmount, maxUses, bad := overrideBounds(r, m, act)
	problems = append(problems, bad...)
	if strings.TrimSpace(r.Justification) == "" {
		problems = append(problems, "justification is required")
	}
	if strings.TrimSpace(r.RequestedBy) == "" {
		problems = append(problems, "requested_by is required")
	} else if err := rules.CheckID(r.RequestedBy); err != nil {
		// An override asked for under an id nobody has could never be
		// approved (the requester's own approval is refused by id).
		problems = append(problems, "requested_by: "+err.Error())
	}
	if len(problems) > 0 {
		return nil, &BadRequestError{Problems: problems}
	}
	now := s.now()
	req := overrideRequirement(m.Override, act, maxAmount)
	a := &Approval{
		ID: NewID(), Kind: KindOverride, Status: StatusPending,
		Action: r.Action, App: m.AppID, Justification: r.Justification, RequestedBy: r.RequestedBy,
		Duration: d.String(), MaxAmount: maxAmount, MaxUses: maxUses,
		Digest: OverrideDigest(m.AppID, r.Action, d.String(), r.RequestedBy, r.Justification, maxAmount, maxUses),
		Reason: record.OverrideRequested, Requirement: req, RequiredRoles: req.Roles(), Decisions: []Decision{},
		CreatedAt: now.UTC(), ExpiresAt: now.Add(act.ApprovalTTL).UTC(),
	}
	data := record.OverrideRequest{RequestedBy: r.RequestedBy, Duration: a.Duration,
		Justification: r.Justification, RequiredRoles: a.RequiredRoles, ExpiresAt: a.ExpiresAt.Format(time.RFC3339),
		MaxAmount: maxAmount, MaxUses: maxUses}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if _, err := s.store.Create(ctx, a, ledger.Entry{
		Kind: record.KindOverride, App: a.App, Action: a.Action, ApprovalID: a.ID, Digest: a.Digest,
		Decision: record.Pending, Reason: record.OverrideRequested, Policy: m.Hash, Data: data.Map(),
	}); err != nil {
		return nil, err
	}
	s.changed(ChangeCreated, a.Clone(), "")
	return a, nil
}

// Longest client-given values the service keeps; a justification is prose,
// the rest are identifiers or tokens.
const (
	MaxJustification = 4096
	MaxHeaderValue   = 1024
)

// clip keeps junk from a client valid UTF-8 and at most max bytes (plus an
// ellipsis) before it is recorded.
func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// Clip is clip for the doors' header values: valid UTF-8, at most max bytes.
func Clip(s string, max int) string { return clip(s, max) }

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

// Wait returns a channel closed when approval id is decided or expires, and
// a function to stop waiting.
func (s *Service) Wait(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	w := s.waiters.add(id, &waiter{ch: ch})
	return ch, func() { s.waiters.remove(id, w) }
}

// Notify calls fn once when approval id is decided or expires, unless stop
// is called first; stop reports whether it was. fn runs on the goroutine
// that decided, inside nothing: it must not block (start a goroutine).
// A held request costs this entry and its timer, no goroutine of its own.
func (s *Service) Notify(id string, fn func()) (stop func() bool) {
	w := s.waiters.add(id, &waiter{fn: fn})
	return func() bool { return s.waiters.remove(id, w) }
}

// Held returns how many requests wait on approvals right now.
func (s *Service) Held() int { return s.waiters.count() }

// waiters is the table of held requests by approval id: each entry either
// a channel to close (Wait) or a function to call (Notify).
type waiters struct {
	mu sync.Mutex
	m  map[string][]*waiter
}

type waiter struct {
	ch chan struct{}
	fn func()
}

func (w *waiters) add(id string, x *waiter) *waiter {
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string][]*waiter{}
	}
	w.m[id] = append(w.m[id], x)
	w.mu.Unlock()
	return x
}

// remove takes x off id's list; false when it was not there (woken).
func (w *waiters) remove(id string, x *waiter) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[id]
	found := false
	for i, c := range list {
		if c == x {
			list = append(list[:i], list[i+1:]...)
			found = true
			break
		}
	}
	if len(list) == 0 {
		delete(w.m, id)
	} else {
		w.m[id] = list
	}
	return found
}

func (w *waiters) wake(id string) {
	w.mu.Lock()
	list := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	for _, x := range list {
		if x.fn != nil {
			x.fn()
		} else {
			close(x.ch)
		}
	}
}

func (w *waiters) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.m {
		n += len(l)
	}
	return n
}
