package desk

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func (d *Desk) signinPage(w http.ResponseWriter, r *http.Request) {
	d.render(w, "signin", map[string]any{"Title": "Sign in", "RPID": d.cfg.RP.ID})
}

// credentialIDs are a principal's passkeys, base64url, for allowCredentials.
func credentialIDs(p *rules.Principal) []string {
	var ids []string
	for _, k := range p.Passkeys {
		ids = append(ids, passkey.Encode(k.ID))
	}
	return ids
}

// signinBegin hands out a sign-in challenge for the principal named.
func (d *Desk) signinBegin(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Principal string `json:"principal"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	p, ok := d.cfg.Principals().Get(in.Principal)
	if !ok || len(p.Passkeys) == 0 {
		jsonError(w, http.StatusForbidden, "unknown_approver",
			"no passkey for "+in.Principal+" in the principals file; enroll one at /ui/enroll and have it added")
		return
	}
	ch := d.signin.make(p.ID, d.cfg.Now().Add(challengeTTL))
	writeJSON(w, http.StatusOK, map[string]any{"challenge": ch, "rp_id": d.cfg.RP.ID, "allow": credentialIDs(p)})
}

// signinFinish checks the assertion over the sign-in challenge and starts
// a session.
func (d *Desk) signinFinish(w http.ResponseWriter, r *http.Request) {
	var a passkey.Assertion
	if !decodeJSON(w, r, &a) {
		return
	}
	now := d.cfg.Now()
	chText := clientChallenge(a.ClientDataJSON)
	principal, exp, ok := d.signin.open(chText, now)
	if !ok {
		jsonError(w, http.StatusForbidden, "bad_challenge", "the challenge is unknown, used or expired; sign in again")
		return
	}
	p, ok := d.cfg.Principals().Get(principal)
	id, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(a.CredentialID, "="))
	var pk *rules.Passkey
	if ok && err == nil {
		pk, ok = p.Passkey(id)
	}
	if !ok || err != nil {
		jsonError(w, http.StatusForbidden, "unknown_approver", "that passkey is not "+principal+"'s in the principals file")
		return
	}
	chBytes, _ := base64.RawURLEncoding.DecodeString(chText)
	if _, err := passkey.Verify(a, pk.PublicKey, d.cfg.RP, chBytes); err != nil {
		jsonError(w, http.StatusForbidden, "bad_signature", err.Error())
		return
	}
	// Used once: remembered until it would expire anyway (only answered
	// challenges are, so this grows with real sign-ins alone).
	fresh, err := d.cfg.Sessions.UseSignin(chText, exp, now)
	if err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk sign-in not recorded")
		jsonError(w, http.StatusServiceUnavailable, "unavailable", "the sign-in could not be recorded; try again")
		return
	}
	if !fresh {
		jsonError(w, http.StatusForbidden, "bad_challenge", "the challenge is unknown, used or expired; sign in again")
		return
	}
	s := &session{principal: p.ID, csrf: random(), expires: d.cfg.Now().Add(d.cfg.SessionTTL)}
	sid := random()
	if err := d.cfg.Sessions.Put(sid, Session{Principal: s.principal, CSRF: s.csrf, Expires: s.expires}); err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk session not recorded")
		jsonError(w, http.StatusServiceUnavailable, "unavailable", "the sign-in could not be recorded; try again")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sid, Path: "/ui/", HttpOnly: true,
		Secure: strings.HasPrefix(d.cfg.RP.Origin, "https://"), SameSite: http.SameSiteStrictMode, Expires: s.expires})
	d.cfg.Logger.Info().Str("principal", p.ID).Msg("desk sign-in")
	writeJSON(w, http.StatusOK, map[string]string{"principal": p.ID, "next": "/ui/"})
}

// clientChallenge is the challenge member of a client data, as sent.
func clientChallenge(clientDataJSON string) string {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(clientDataJSON, "="))
	if err != nil {
		return ""
	}
	var cd struct{ Challenge string }
	if json.Unmarshal(raw, &cd) != nil {
		return ""
	}
	return cd.Challenge
}

func (d *Desk) signout(w http.ResponseWriter, r *http.Request, s *session, _ *rules.Principal) {
	if err := d.cfg.Sessions.Delete(s.id); err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk sign-out not recorded")
		jsonError(w, http.StatusServiceUnavailable, "unavailable", "the sign-out could not be recorded; try again")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{"next": "/ui/signin"})
}

func (d *Desk) enrollPage(w http.ResponseWriter, r *http.Request) {
	d.render(w, "enroll", map[string]any{"Title": "Enroll a passkey", "RPID": d.cfg.RP.ID})
}

// enrollEntry turns a new credential into the principals file entry that
// names it. It stores and trusts nothing: the entry counts once someone
// adds it to the principals file and the proxy reads it.
func (d *Desk) enrollEntry(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Principal    string `json:"principal"`
		CredentialID string `json:"credential_id"`
		PublicKey    string `json:"public_key"` // SubjectPublicKeyInfo, base64url
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	if err := rules.CheckID(in.Principal); err != nil {
		jsonError(w, http.StatusBadRequest, "bad_request", "principal id: "+err.Error())
		return
	}
	id, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(in.CredentialID, "="))
	der, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(in.PublicKey, "="))
	if err1 != nil || err2 != nil || len(id) == 0 {
		jsonError(w, http.StatusBadRequest, "bad_request", "credential_id and public_key must be base64url")
		return
	}
	k, err := keys.ParsePasskey(der)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "bad_request", err.Error()+" (choose a passkey that uses ES256 or Ed25519)")
		return
	}
	pemText, _ := passkey.PublicKeyPEM(k)
	var b strings.Builder
	fmt.Fprintf(&b, "  - id: %s\n    roles: [ROLE]            # as your principals file gives them\n    webauthn:\n", in.Principal)
	fmt.Fprintf(&b, "      - credential_id: %s\n        public_key: |\n", passkey.Encode(id))
	for _, line := range strings.Split(strings.TrimSpace(pemText), "\n") {
		fmt.Fprintf(&b, "          %s\n", line)
	}
	writeJSON(w, http.StatusOK, map[string]string{"entry": b.String(), "rp_id": d.cfg.RP.ID})
}

func (d *Desk) base(s *session, p *rules.Principal, title string) map[string]any {
	data := map[string]any{"Title": title, "Me": p.ID, "Roles": p.Roles, "CSRF": s.csrf}
	if d.cfg.Ledger != nil {
		data["Head"] = d.cfg.Ledger.Head()
	}
	return data
}

// queuePage lists what waits for the signed-in person's roles.
func (d *Desk) queuePage(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	list, err := d.cfg.Approvals.List(approvals.StatusPending)
	if err != nil {
		http.Error(w, "the approvals cannot be read; see the proxy log", http.StatusInternalServerError)
		d.cfg.Logger.Error().Err(err).Msg("desk queue")
		return
	}
	now := d.cfg.Now()
	var mine, others []row
	for _, a := range list {
		if a.Effective(now) != approvals.StatusPending {
			continue
		}
		if a.Awaits(p.ID, p.Roles) {
			mine = append(mine, rowOf(a))
		} else {
			others = append(others, rowOf(a))
		}
	}
	data := d.base(s, p, "Waiting for you")
	data["Mine"], data["Others"] = limit(mine), limit(others)
	data["MineTotal"], data["OthersTotal"] = len(mine), len(others)
	d.render(w, "queue", data)
}

// pageSize bounds a list page: at quarter end thousands wait.
const pageSize = 200

func limit(rs []row) []row {
	if len(rs) > pageSize {
		return rs[:pageSize]
	}
	return rs
}

// approvalPage shows one approval whole.
func (d *Desk) approvalPage(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	a, err := d.cfg.Approvals.Get(r.PathValue("id"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	data := d.base(s, p, "Approval "+a.ID)
	v := viewOf(a, d.cfg.Now())
	data["A"] = v
	data["CanDecide"] = v.Status == approvals.StatusPending && a.Awaits(p.ID, p.Roles)
	d.render(w, "approval", data)
}

// decideBegin hands out the challenge of a decision: the SHA-256 of the
// statement the person is about to sign, with the signed_at it names.
func (d *Desk) decideBegin(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	var in struct {
		Decision string `json:"decision"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	if in.Decision != approvals.Approve && in.Decision != approvals.Reject {
		jsonError(w, http.StatusBadRequest, "bad_request", "decision must be approve or reject")
		return
	}
	a, err := d.cfg.Approvals.Get(r.PathValue("id"))
	if err != nil {
		jsonError(w, http.StatusNotFound, "not_found", "no such approval")
		return
	}
	signedAt := d.cfg.Now().UTC().Format(time.RFC3339)
	stmt := approvals.Statement(a.ID, a.Digest, in.Decision, p.ID, signedAt)
	ch := passkey.Encode(passkey.Challenge(stmt))
	if err := d.issue(s, &challenge{principal: p.ID, approval: a.ID, decision: in.Decision, signedAt: signedAt}, ch); err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk challenge not recorded")
		jsonError(w, http.StatusServiceUnavailable, "unavailable", "the challenge could not be recorded; try again")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"challenge": ch, "rp_id": d.cfg.RP.ID, "allow": credentialIDs(p),
		"statement": string(stmt), "signed_at": signedAt})
}

// decideFinish posts the decision the assertion signs to the approvals
// service, which checks it like any other.
func (d *Desk) decideFinish(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	var in struct {
		Reason   string            `json:"reason"`
		WebAuthn passkey.Assertion `json:"webauthn"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	c := d.take(s, in.WebAuthn.ClientDataJSON, r.PathValue("id"))
	if c == nil {
		jsonError(w, http.StatusForbidden, "bad_challenge", "the challenge is unknown, used, expired or another's; try again")
		return
	}
	if c.decision == approvals.Reject && strings.TrimSpace(in.Reason) == "" {
		jsonError(w, http.StatusBadRequest, "bad_request", "a rejection needs a reason")
		return
	}
	as := in.WebAuthn
	a, ref, err := d.cfg.Approvals.Decide(c.approval, approvals.Submission{Approver: p.ID, Decision: c.decision,
		Reason: in.Reason, SignedAt: c.signedAt, WebAuthn: &as})
	switch {
	case errors.Is(err, approvals.ErrNotFound):
		jsonError(w, http.StatusNotFound, "not_found", "no such approval")
	case ref != nil:
		writeJSON(w, ref.HTTPStatus(), map[string]string{"error": "refused", "reason": string(ref.Code), "message": ref.Detail})
	case errors.Is(err, approvals.ErrQueued):
		// A hub: the proxy holding the request takes it shortly.
		writeJSON(w, http.StatusAccepted, map[string]any{"status": "queued", "message": "no proxy has taken your decision yet; it is kept and decided when one does",
			"next": "/ui/approvals/" + c.approval})
	case err != nil:
		d.cfg.Logger.Error().Err(err).Msg("desk decision not recorded")
		jsonError(w, http.StatusServiceUnavailable, "ledger_unavailable", "nothing was recorded; try again")
	default:
		writeJSON(w, http.StatusOK, map[string]any{"status": a.Status, "still_needed": a.StillNeeded(), "next": "/ui/approvals/" + a.ID})
	}
}

// historyPage lists decided approvals, newest first, by status and action.
func (d *Desk) historyPage(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	status := r.URL.Query().Get("status")
	if !slices.Contains([]string{approvals.StatusApproved, approvals.StatusRejected, approvals.StatusExpired}, status) {
		status = ""
	}
	action := r.URL.Query().Get("action")
	var rows []row
	for _, st := range []string{approvals.StatusApproved, approvals.StatusRejected, approvals.StatusExpired} {
		if status != "" && st != status {
			continue
		}
		list, err := d.cfg.Approvals.List(st)
		if err != nil {
			http.Error(w, "the approvals cannot be read; see the proxy log", http.StatusInternalServerError)
			return
		}
		for _, a := range list {
			if action == "" || a.Action == action {
				rows = append(rows, rowOf(a))
			}
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return b.Created.Compare(a.Created) })
	data := d.base(s, p, "History")
	data["Rows"], data["Total"], data["Status"], data["Action"] = limit(rows), len(rows), status, action
	d.render(w, "history", data)
}

// ledgerPage shows the chain's head and, on request, re-derives it.
func (d *Desk) ledgerPage(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal) {
	data := d.base(s, p, "Ledger")
	if r.URL.Query().Get("verify") == "1" && d.cfg.Verify != nil {
		ok, n, problem := d.cfg.Verify(r.Context())
		data["Verified"], data["OK"], data["Records"], data["Problem"] = true, ok, n, problem
	}
	data["CanVerify"] = d.cfg.Verify != nil
	d.render(w, "ledger", data)
}
