package desk

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSP is every answer's Content-Security-Policy: nothing inline, nothing
// from another origin, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config configures the desk.
type Config struct {
	Approvals approvals.Queue
	// Principals returns the principals in force: who may sign in, with
	// which passkeys and roles.
	Principals func() *rules.Principals
	// RP is ui.url's relying party: passkeys are made and used for it.
	RP passkey.RP
	// Ledger is the chain whose head the pages show; nil for a fleet's
	// hub, which keeps none.
	Ledger interface{ Head() ledger.Head }
	// Verify re-derives the live chain for the ledger page (nil: no link).
	Verify func(ctx context.Context) (ok bool, records uint64, problem string)
	Now    func() time.Time
	Logger zerolog.Logger
	// SessionTTL is how long a sign-in lasts (default 8h).
	SessionTTL time.Duration
	// Sessions keeps sign-ins and decision challenges (nil: in this
	// process's memory).
	Sessions Sessions
}

// Desk serves /ui/.
type Desk struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux

	signin *signinKeys
}

// session is a signed-in browser: its id (the cookie) and what Sessions
// keeps of it. Its decision challenges are kept by the store, by value:
// only this session can answer or spend them.
type session struct {
	id        string
	principal string
	csrf      string
	expires   time.Time
}

// challenge is a decision challenge the desk handed a session: the
// statement's hash, with the fields of the statement (sign-in challenges
// hold no state; signin.go).
type challenge struct {
	principal string
	approval  string
	decision  string
	signedAt  string
	expires   time.Time
}

// challengeTTL is how long a browser has to answer a challenge.
const challengeTTL = 2 * time.Minute

const cookieName = "uapk_desk"

// New builds the desk.
func New(cfg Config) (*Desk, error) {
	if cfg.Approvals == nil || cfg.Principals == nil {
		return nil, errors.New("desk needs the approvals and the principals")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Sessions == nil {
		cfg.Sessions = NewMemorySessions()
	}
	key, err := cfg.Sessions.SigninKey()
	if err != nil {
		return nil, fmt.Errorf("desk sessions: %w", err)
	}
	d := &Desk{cfg: cfg, pages: map[string]*template.Template{}, signin: newSigninKeys(key)}
	funcs := template.FuncMap{"join": strings.Join, "since": d.until}
	for _, name := range []string{"signin", "enroll", "queue", "approval", "history", "ledger"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		d.pages[name] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/signin", d.signinPage)
	mux.HandleFunc("POST /ui/signin/begin", d.signinBegin)
	mux.HandleFunc("POST /ui/signin/finish", d.signinFinish)
	mux.HandleFunc("POST /ui/signout", d.signedIn(d.signout))
	mux.HandleFunc("GET /ui/enroll", d.enrollPage)
	mux.HandleFunc("POST /ui/enroll/entry", d.enrollEntry)
	mux.HandleFunc("GET /ui/{$}", d.signedIn(d.queuePage))
	mux.HandleFunc("GET /ui/approvals/{id}", d.signedIn(d.approvalPage))
	mux.HandleFunc("POST /ui/approvals/{id}/challenge", d.signedIn(d.decideBegin))
	mux.HandleFunc("POST /ui/approvals/{id}/decide", d.signedIn(d.decideFinish))
	mux.HandleFunc("GET /ui/history", d.signedIn(d.historyPage))
	mux.HandleFunc("GET /ui/ledger", d.signedIn(d.ledgerPage))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	d.mux = mux
	return d, nil
}

// ServeHTTP serves /ui/ with the security headers every answer carries.
func (d *Desk) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost && r.Header.Get("Origin") != d.cfg.RP.Origin {
		// Only the desk's own pages post to it (ui.url's origin).
		jsonError(w, http.StatusForbidden, "bad_origin", "requests must come from "+d.cfg.RP.Origin)
		return
	}
	d.mux.ServeHTTP(w, r)
}

type handler func(w http.ResponseWriter, r *http.Request, s *session, p *rules.Principal)

// signedIn runs h for a signed-in principal still in the principals file;
// others go to the sign-in page (or get 401 for a POST). A POST must carry
// the session's CSRF token.
func (d *Desk) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := d.session(r)
		var p *rules.Principal
		if s != nil {
			p, _ = d.cfg.Principals().Get(s.principal)
		}
		if s == nil || p == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
				return
			}
			jsonError(w, http.StatusUnauthorized, "signin_required", "sign in with your passkey first")
			return
		}
		if r.Method == http.MethodPost && subtle.ConstantTimeCompare([]byte(r.Header.Get("X-CSRF-Token")), []byte(s.csrf)) != 1 {
			jsonError(w, http.StatusForbidden, "bad_csrf", "the request lacks this session's CSRF token")
			return
		}
		h(w, r, s, p)
	}
}

func (d *Desk) session(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	s, err := d.cfg.Sessions.Get(c.Value, d.cfg.Now())
	if err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk session unreadable")
		return nil
	}
	if s == nil {
		return nil
	}
	return &session{id: c.Value, principal: s.Principal, csrf: s.CSRF, expires: s.Expires}
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// issue gives session s a decision challenge; the browser signs it within
// challengeTTL. A session holds a few at most, the oldest making room.
func (d *Desk) issue(s *session, c *challenge, value string) error {
	now := d.cfg.Now()
	return d.cfg.Sessions.PutChallenge(s.id, value, Challenge{Principal: c.principal, Approval: c.approval,
		Decision: c.decision, SignedAt: c.signedAt, Expires: now.Add(challengeTTL)}, now)
}

// take returns and spends session s's challenge that a client data names,
// when it is for approval; any other answer leaves it in place.
func (d *Desk) take(s *session, clientDataJSON, approval string) *challenge {
	ch := clientChallenge(clientDataJSON)
	if ch == "" {
		return nil
	}
	c, err := d.cfg.Sessions.TakeChallenge(s.id, ch, approval, d.cfg.Now())
	if err != nil {
		d.cfg.Logger.Error().Err(err).Msg("desk challenge unreadable")
		return nil
	}
	if c == nil || c.Principal != s.principal {
		return nil
	}
	return &challenge{principal: c.Principal, approval: c.Approval, decision: c.Decision, signedAt: c.SignedAt, expires: c.Expires}
}

func (d *Desk) render(w http.ResponseWriter, page string, data map[string]any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := d.pages[page].Execute(w, data); err != nil {
		d.cfg.Logger.Error().Err(err).Str("page", page).Msg("desk page failed")
	}
}

func jsonError(w http.ResponseWriter, code int, word, msg string) {
	writeJSON(w, code, map[string]string{"error": word, "message": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a small JSON body strictly.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		jsonError(w, http.StatusBadRequest, "bad_request", "body: "+err.Error())
		return false
	}
	return true
}

func (d *Desk) until(t time.Time) string {
	left := t.Sub(d.cfg.Now()).Round(time.Minute)
	if left <= 0 {
		return "expired"
	}
	return "in " + strings.TrimSuffix(left.String(), "0s")
}
