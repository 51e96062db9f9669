package approvals

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// StatementVersion is the first line of every signed decision statement.
const StatementVersion = "uapk-approval-v1"

// MaxClockSkew is how far signed_at may be from the proxy's clock (docs/reference.md#approval-statement-and-rules).
const MaxClockSkew = 5 * time.Minute

// Decisions an approver can sign.
const (
	Approve = string(record.Approve)
	Reject  = string(record.Reject)
)

// Statement returns the exact bytes an approver signs (docs/reference.md#approval-statement-and-rules): UTF-8,
// "\n" line ends, no trailing newline.
func Statement(approvalID, digest, decision, approver, signedAt string) []byte {
	return []byte(strings.Join([]string{StatementVersion, approvalID, digest, decision, approver, signedAt}, "\n"))
}

// Sign signs the statement for a decision with an approver's private key and
// returns the signature in base64, as POST /v1/approvals/{id}/decisions wants it.
func Sign(key ed25519.PrivateKey, approvalID, digest, decision, approver, signedAt string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(key, Statement(approvalID, digest, decision, approver, signedAt)))
}

// Submission is a signed decision as posted to the admin API.
type Submission struct {
	Approver  string `json:"approver"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	SignedAt  string `json:"signed_at"`
	Signature string `json:"signature,omitempty"`
	// WebAuthn, instead of Signature, is a passkey's assertion over the
	// statement: its challenge is the statement's SHA-256 (the dashboard).
	WebAuthn *passkey.Assertion `json:"webauthn,omitempty"`
	// Digest, optional, is the request digest the approver reviewed. When
	// given and different from the approval's, the refusal says so
	// (digest_mismatch) instead of a plain bad_signature.
	Digest string `json:"digest,omitempty"`
}

// Refusal codes for a decision that does not count; each rule has its
// own (docs/reference.md#approval-statement-and-rules). They are the record
// package's codes under the names this package has always used.
const (
	RefuseBadRequest   = record.RefuseBadRequest
	RefuseExpired      = record.RefuseExpired
	RefuseClosed       = record.RefuseClosed
	RefuseUnknown      = record.RefuseUnknown
	RefuseBadSignature = record.RefuseBadSignature
	RefuseDigest       = record.RefuseDigest
	RefuseStale        = record.RefuseStale
	RefuseSelf         = record.RefuseSelf
	RefuseDuplicate    = record.RefuseDuplicate
	RefuseWrongRole    = record.RefuseWrongRole
	RefuseRoleFilled   = record.RefuseRoleFilled
)

// Refusal is a decision that was not counted, with its stable code.
type Refusal struct {
	Code   record.Reason
	Detail string
}

func (r *Refusal) Error() string { return string(r.Code) + ": " + r.Detail }

// HTTPStatus maps a refusal to the admin API's status code.
func (r *Refusal) HTTPStatus() int {
	switch r.Code {
	case RefuseBadRequest:
		return 400
	case RefuseExpired, RefuseClosed, RefuseDuplicate:
		return 409
	default:
		return 403
	}
}

func refuse(code record.Reason, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Apply checks a signed decision against the approval and every approval rule and, if it counts, adds it to a (status and all). It changes
// nothing when it refuses. Callers run it inside the ledger transaction that
// records the decision, so concurrent decisions see each other.
func Apply(a *Approval, s Submission, principals *rules.Principals, now time.Time) (*Decision, *Refusal) {
	return ApplyRP(a, s, principals, now, nil)
}

// ApplyRP is Apply with the relying party that passkey decisions must be
// made for (ui.url); with rp nil a passkey decision is refused.
func ApplyRP(a *Approval, s Submission, principals *rules.Principals, now time.Time, rp *passkey.RP) (*Decision, *Refusal) {
	if s.Decision != Approve && s.Decision != Reject {
		return nil, refuse(RefuseBadRequest, "decision must be %q or %q", Approve, Reject)
	}
	if s.Approver == "" || s.SignedAt == "" || (s.Signature == "") == (s.WebAuthn == nil) {
		return nil, refuse(RefuseBadRequest, "approver, signed_at and one of signature or webauthn are required")
	}
	switch a.Effective(now) {
	case StatusExpired:
		return nil, refuse(RefuseExpired, "approval %s expired at %s", a.ID, a.ExpiresAt.Format(time.RFC3339))
	case StatusApproved, StatusRejected:
		return nil, refuse(RefuseClosed, "approval %s is already %s", a.ID, a.Status)
	}
	// One person, one id: an approver id not in canonical form is nobody,
	// never folded into someone (ToLower and EqualFold disagree on "İ").
	if err := rules.CheckID(s.Approver); err != nil {
		return nil, refuse(RefuseUnknown, "approver %v", err)
	}
	var p *rules.Principal
	if principals != nil {
		p, _ = principals.Get(s.Approver)
	}
	if p == nil {
		return nil, refuse(RefuseUnknown, "%q is not in the principals file", s.Approver)
	}
	if !p.CanSign() {
		return nil, refuse(RefuseUnknown, "%q has no public key in the principals file", s.Approver)
	}
	signedAt, err := time.Parse(time.RFC3339, s.SignedAt)
	if err != nil || !strings.HasSuffix(s.SignedAt, "Z") {
		return nil, refuse(RefuseBadRequest, "signed_at %q must be RFC 3339 in UTC, e.g. 2026-09-30T14:05:00Z", s.SignedAt)
	}
	if d := now.Sub(signedAt); d > MaxClockSkew || d < -MaxClockSkew {
		return nil, refuse(RefuseStale, "signed_at %s is %s from the proxy's clock (limit %s)", s.SignedAt, d.Round(time.Second), MaxClockSkew)
	}
	if s.Digest != "" && s.Digest != a.Digest {
		return nil, refuse(RefuseDigest, "signed over digest %s, but approval %s is for request digest %s", s.Digest, a.ID, a.Digest)
	}
	stmt := Statement(a.ID, a.Digest, s.Decision, s.Approver, s.SignedAt)
	var counter uint32
	if s.WebAuthn != nil {
		if rp == nil {
			return nil, refuse(RefuseBadSignature, "passkey decisions need the dashboard's ui.url configured")
		}
		id, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s.WebAuthn.CredentialID, "="))
		if err != nil {
			return nil, refuse(RefuseBadRequest, "webauthn.credential_id must be base64url")
		}
		pk, ok := p.Passkey(id)
		if !ok {
			return nil, refuse(RefuseUnknown, "the credential is not one of %s's passkeys in the principals file", p.ID)
		}
		res, err := passkey.Verify(*s.WebAuthn, pk.PublicKey, *rp, passkey.Challenge(stmt))
		if err != nil {
			return nil, refuse(RefuseBadSignature, "%s's passkey assertion over this approval's statement: %v", p.ID, err)
		}
		counter = res.Counter
	} else {
		sig, err := base64.StdEncoding.DecodeString(s.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, refuse(RefuseBadSignature, "signature must be a base64 Ed25519 signature (64 bytes)")
		}
		if len(p.PublicKey) != ed25519.PublicKeySize {
			return nil, refuse(RefuseUnknown, "%q has no Ed25519 public key in the principals file (only passkeys: approve in the dashboard)", s.Approver)
		}
		if !ed25519.Verify(p.PublicKey, stmt, sig) {
			return nil, refuse(RefuseBadSignature, "signature does not verify with %s's key over this approval's statement", p.ID)
		}
	}
	self, unsure := askedBy(a, p.ID)
	if self {
		return nil, refuse(RefuseSelf, "%s asked for this request and cannot approve it", p.ID)
	}
	if unsure != "" && s.Decision == Approve {
		return nil, refuse(RefuseSelf, "this request was asked for by %q, which is no principal id even in ASCII lower case; "+
			"nobody can be shown not to be its requester, so nobody may approve it (a rejection still counts)", unsure)
	}
	for _, d := range a.Decisions {
		if recordedAs(d.Approver, p.ID) {
			return nil, refuse(RefuseDuplicate, "%s has already decided (%s); one person counts once", p.ID, d.Decision)
		}
	}
	needed := a.Requirement.Roles()
	if !holdsAny(p, needed) {
		return nil, refuse(RefuseWrongRole, "%s holds %v; this approval needs %v", p.ID, p.Roles, needed)
	}
	// The approver id is kept as signed, which is now always the principals
	// file's spelling: an auditor rebuilds the signed statement from the
	// stored decision alone.
	d := Decision{Approver: s.Approver, Decision: s.Decision, Reason: s.Reason, SignedAt: s.SignedAt, Signature: s.Signature,
		counter: counter}
	if s.WebAuthn != nil {
		// One spelling of the credential id (base64url, no padding), so
		// that its counter is one counter however the id was sent.
		w := *s.WebAuthn
		id, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(w.CredentialID, "="))
		w.CredentialID = passkey.Encode(id)
		d.WebAuthn = &w
	}
	if s.Decision == Reject {
		// Any holder of a needed role may stop the request: a rejection can
		// only make the outcome safer.
		d.Role = firstHeld(p, needed)
		a.Decisions = append(a.Decisions, d)
		a.Status = StatusRejected
		return &a.Decisions[len(a.Decisions)-1], nil
	}
	signers := append(approversOf(a, principals), p)
	match := matchSlots(a.Requirement.Slots, signers)
	if match[len(signers)-1] < 0 {
		return nil, refuse(RefuseRoleFilled, "every role %s could fill (%v) is already filled by another approver", p.ID, p.Roles)
	}
	a.Decisions = append(a.Decisions, d)
	// Re-label every approver with the role the matching gives them. The
	// j-th approve decision is signers[j] (approversOf keeps their order),
	// so no id is compared here.
	j := 0
	for i := range a.Decisions {
		if a.Decisions[i].Decision != Approve {
			continue
		}
		if match[j] >= 0 {
			a.Decisions[i].Role = slotRole(a.Requirement.Slots[match[j]], signers[j])
		}
		j++
	}
	if countMatched(match) == len(a.Requirement.Slots) {
		a.Status = StatusApproved
	}
	return &a.Decisions[len(a.Decisions)-1], nil
}

// approversOf returns the principals who approved so far, in order. One who
// has since left the principals file keeps counting with the roles recorded.
func approversOf(a *Approval, principals *rules.Principals) []*rules.Principal {
	var out []*rules.Principal
	for _, d := range a.Decisions {
		if d.Decision != Approve {
			continue
		}
		if p, ok := principals.Get(strings.ToLower(d.Approver)); ok { // as recordedAs matches
			out = append(out, p)
		} else {
			out = append(out, &rules.Principal{ID: d.Approver, Roles: []string{d.Role}})
		}
	}
	return out
}

// askedBy compares approver, a canonical id, with each id the request was
// asked for by: the On-Behalf-Of caller, the app, the override's requester.
// Those come from the agent or an identity provider, in any spelling, so
// each is first lower-cased in ASCII (Jim@Corp.Example, an email claim as
// IdPs send it, is jim@corp.example). self is true when one of them is the
// approver; unsure names one that is still no canonical id
// (j\u0130m@corp.example): it equals no approver's id, yet may be anybody's,
// so nobody can be shown not to be the requester.
func askedBy(a *Approval, approver string) (self bool, unsure string) {
	for _, who := range []string{a.OnBehalfOf, a.App, a.RequestedBy} {
		if who == "" {
			continue
		}
		low := asciiLower(who)
		if rules.CheckID(low) != nil {
			unsure = who
			continue
		}
		if low == approver {
			return true, ""
		}
	}
	return false, unsure
}

// asciiLower maps A-Z to a-z and nothing else: Unicode lower-casing is what
// turns j\u0130m into jim.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// recordedAs reports whether a decision recorded with approver id recorded
// is the canonical id's. Decisions recorded before ids had to be canonical
// (a pending approval survives an upgrade, and a shared store may hold
// decisions by older proxies) were matched to their principal with
// strings.ToLower, so they are matched the same way here: such a decision
// keeps counting as the person it counted as, and as nobody else.
func recordedAs(recorded, id string) bool { return strings.ToLower(recorded) == id }

// matchSlots assigns each signer at most one slot and each slot at most one
// signer, maximizing the slots filled (augmenting paths; sizes are tiny).
// It returns, per signer, the slot index or -1.
func matchSlots(slots [][]string, signers []*rules.Principal) []int {
	slotOf := make([]int, len(signers))
	signerOf := make([]int, len(slots))
	for i := range slotOf {
		slotOf[i] = -1
	}
	for i := range signerOf {
		signerOf[i] = -1
	}
	var try func(s int, seen []bool) bool
	try = func(s int, seen []bool) bool {
		for j, slot := range slots {
			if seen[j] || !holdsAny(signers[s], slot) {
				continue
			}
			seen[j] = true
			if signerOf[j] < 0 || try(signerOf[j], seen) {
				signerOf[j], slotOf[s] = s, j
				return true
			}
		}
		return false
	}
	for s := range signers {
		try(s, make([]bool, len(slots)))
	}
	return slotOf
}

func countMatched(m []int) int {
	n := 0
	for _, j := range m {
		if j >= 0 {
			n++
		}
	}
	return n
}

func holdsAny(p *rules.Principal, roles []string) bool {
	return firstHeld(p, roles) != ""
}

func firstHeld(p *rules.Principal, roles []string) string {
	for _, r := range roles {
		if p.HasRole(r) {
			return r
		}
	}
	return ""
}

func slotRole(slot []string, p *rules.Principal) string { return firstHeld(p, slot) }

// Reverify checks that a stored approval's decisions are signed statements
// that, applied in order to the approval as it was created, give its
// status: with a store other proxies and their database share, the store
// is not trusted to say who approved. Each decision is judged at its own
// signed_at, as it was when it was made.
func Reverify(a *Approval, principals *rules.Principals, rp *passkey.RP) error {
	fresh := a.Clone()
	fresh.Decisions, fresh.Status = nil, StatusPending
	for i, d := range a.Decisions {
		at, err := time.Parse(time.RFC3339, d.SignedAt)
		if err != nil {
			return fmt.Errorf("decision %d by %s: signed_at %q", i+1, d.Approver, d.SignedAt)
		}
		sub := Submission{Approver: d.Approver, Decision: d.Decision, Reason: d.Reason, SignedAt: d.SignedAt,
			Signature: d.Signature, WebAuthn: d.WebAuthn}
		if _, ref := ApplyRP(fresh, sub, principals, at, rp); ref != nil {
			return fmt.Errorf("decision %d by %s does not count: %s", i+1, d.Approver, ref)
		}
	}
	if fresh.Status != a.Status {
		return fmt.Errorf("its decisions make it %s, the store says %s", fresh.Status, a.Status)
	}
	return nil
}
