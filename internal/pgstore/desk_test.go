package pgstore

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// hubBrowser talks to two desks in turn, as through a round-robin load
// balancer with no session affinity, keeping the session cookie itself
// (it is Secure, for the https desk origin).
type hubBrowser struct {
	t      *testing.T
	desks  []string
	next   atomic.Uint64
	cookie string
	csrf   string
}

func (b *hubBrowser) do(method, path string, body any) (int, []byte, http.Header) {
	b.t.Helper()
	url := b.desks[b.next.Add(1)%uint64(len(b.desks))] + path
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", deskRP.Origin)
	req.Header.Set("X-CSRF-Token", b.csrf)
	if b.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "uapk_desk", Value: b.cookie})
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, ck := range resp.Cookies() {
		if ck.Name == "uapk_desk" {
			b.cookie = ck.Value
		}
	}
	if m := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindSubmatch(raw); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode, raw, resp.Header
}

func (b *hubBrowser) post(path string, body any) (int, map[string]any) {
	b.t.Helper()
	code, raw, _ := b.do("POST", path, body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return code, m
}

func challengeOf(t *testing.T, m map[string]any) []byte {
	t.Helper()
	s, _ := m["challenge"].(string)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("no challenge in %v", m)
	}
	return b
}

// TestDeskAcrossHubs: two desks over one database's sessions, every call
// of one browser landing on the other desk from the last: the CFO signs in
// (begin at one, finish at the other), reads the queue, asks for the
// decision's challenge at one and answers it at the other, and the
// approval is decided. A replayed sign-in is refused at either; signing
// out at one ends the session at both; the database keeps no session id.
func TestDeskAcrossHubs(t *testing.T) {
	cfo := passkeytest.New("ES256")
	dsn := server.NewDB(t)
	svcs, _ := servicesOn(t, dsn, 1, cfo)
	a := hold(t, svcs[0])
	type cred struct {
		ID  string `json:"credential_id"`
		Key string `json:"public_key"`
	}
	data, _ := json.Marshal(map[string]any{"principals": []any{
		map[string]any{"id": "cfo@corp.example", "roles": []string{"cfo"}, "webauthn": []cred{{cfo.CredentialID(), cfo.PublicKeyPEM()}}},
	}})
	ps, err := rules.ParsePrincipals(data, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Each desk's sessions in the approvals' database, through a store of
	// its own, as each hub opens one.
	b := &hubBrowser{t: t}
	for i := 0; i < 2; i++ {
		st, _ := proxy(t, dsn, "hub")
		d, err := desk.New(desk.Config{Approvals: svcs[0], Principals: func() *rules.Principals { return ps }, RP: deskRP,
			Logger: zerolog.Nop(), Sessions: st.DeskSessions()})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(d)
		t.Cleanup(srv.Close)
		b.desks = append(b.desks, srv.URL)
	}

	code, begin := b.post("/ui/signin/begin", map[string]string{"principal": "cfo@corp.example"})
	if code != 200 {
		t.Fatalf("begin: %d %v", code, begin)
	}
	signin := cfo.Assert(deskRP, challengeOf(t, begin))
	if code, m := b.post("/ui/signin/finish", signin); code != 200 {
		t.Fatalf("finish at the other desk: %d %v", code, m)
	}
	if code, body, _ := b.do("GET", "/ui/", nil); code != 200 || !bytes.Contains(body, []byte(a.ID)) {
		t.Fatalf("queue at the first desk: %d", code)
	}
	session := b.cookie
	code, ch := b.post("/ui/approvals/"+a.ID+"/challenge", map[string]string{"decision": "approve"})
	if code != 200 {
		t.Fatalf("challenge: %d %v", code, ch)
	}
	code, m := b.post("/ui/approvals/"+a.ID+"/decide", map[string]any{"reason": "reviewed",
		"webauthn": cfo.AssertWith(deskRP.ID, deskRP.Origin, challengeOf(t, ch), passkeytest.UP|passkeytest.UV, 7)})
	if code != 200 || m["status"] != approvals.StatusApproved {
		t.Fatalf("decision answered at the other desk: %d %v", code, m)
	}
	// The same sign-in assertion again, at either desk: used.
	for i := 0; i < 2; i++ {
		if code, m := b.post("/ui/signin/finish", signin); code != 403 || m["error"] != "bad_challenge" {
			t.Fatalf("a replayed sign-in: %d %v", code, m)
		}
	}
	if n := sql(t, dsn, "SELECT count(*)::text FROM desk_sessions WHERE id_sha256 = $1 OR principal = $1", session); n != "0" {
		t.Fatalf("the database keeps the session id itself (%s rows)", n)
	}
	b.cookie = session
	if code, m := b.post("/ui/signout", nil); code != 200 {
		t.Fatalf("sign out: %d %v", code, m)
	}
	b.cookie = session
	for i := 0; i < 2; i++ {
		if code, _, h := b.do("GET", "/ui/", nil); code != http.StatusSeeOther || h.Get("Location") != "/ui/signin" {
			t.Fatalf("after sign-out, desk %d: %d", i, code)
		}
	}
}
