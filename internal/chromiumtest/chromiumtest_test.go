package chromiumtest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// page makes a passkey and signs with it; the inline script after it is
// refused by the page's policy, which the console must show.
const page = `<!doctype html><title>t</title><script src="/a.js"></script><script>document.title = "inline ran"</script>`

const script = `window.ceremony = async () => {
  const c = await navigator.credentials.create({publicKey: {
    rp: {id: location.hostname, name: "t"}, user: {id: new Uint8Array(16), name: "u", displayName: "u"},
    challenge: new Uint8Array(32), pubKeyCredParams: [{type: "public-key", alg: -7}],
    authenticatorSelection: {residentKey: "required", userVerification: "required"}}});
  const a = await navigator.credentials.get({publicKey: {challenge: new Uint8Array(32), rpId: location.hostname,
    allowCredentials: [{type: "public-key", id: c.rawId}], userVerification: "required"}});
  return new Uint8Array(a.response.authenticatorData)[32]; // flags
};`

// TestVirtualAuthenticatorAndConsole: a person's tab makes and uses a
// passkey with user presence and verification, and a CSP violation shows
// in its console; another person's tab does not see the first one's
// passkey.
func TestVirtualAuthenticatorAndConsole(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'")
		if r.URL.Path == "/a.js" {
			w.Header().Set("Content-Type", "text/javascript")
			w.Write([]byte(script))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	url := "http://localhost:" + port + "/" // a secure context, so WebAuthn runs

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	browser := Start(t, ctx)
	ann, bob := NewPerson(t, browser), NewPerson(t, browser)
	if err := chromedp.Do(ann.Ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	flags, err := chromedp.Run(ann.Ctx, chromedp.Evaluate[int]("ceremony()", chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("ceremony: %v\nconsole: %q", err, ann.Console())
	}
	if flags&0x05 != 0x05 { // UP and UV
		t.Errorf("authenticator data flags %#x lack user presence or verification", flags)
	}
	if title, _ := chromedp.Run(ann.Ctx, chromedp.Title()); title == "inline ran" {
		t.Error("the inline script ran despite the policy")
	}
	if v := ann.CSPViolations(); len(v) == 0 || !strings.Contains(strings.Join(v, "\n"), "script-src") {
		t.Errorf("no CSP violation reported; console: %q", ann.Console())
	}
	var policy string
	for _, r := range ann.Responses() {
		if r.URL == url {
			policy = r.Headers["content-security-policy"]
		}
	}
	if !strings.HasPrefix(policy, "default-src 'none'") {
		t.Errorf("the page's answer seen with Content-Security-Policy %q", policy)
	}
	// Bob's tab has its own authenticator: Ann's passkey is not in it.
	if err := chromedp.Do(bob.Ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	_, err = chromedp.Run(bob.Ctx, chromedp.Evaluate[int](`navigator.credentials.get({publicKey: {
		challenge: new Uint8Array(32), rpId: location.hostname, userVerification: "required"}}).then(() => 1)`,
		chromedp.EvalAwaitPromise))
	if err == nil {
		t.Error("another person's browser signed with Ann's passkey")
	}
}
