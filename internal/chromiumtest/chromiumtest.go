// Package chromiumtest runs Debian's headless Chromium for tests that need a
// real browser, such as the approvers' desk and its passkeys.
//
// # Browsers and people
//
// Start starts one Chromium with a fresh profile for the test. NewPerson
// opens a browser context of its own in it (cookies, storage and
// credentials apart from every other person's) with one tab that has a
// CDP virtual authenticator: a platform passkey that creates and signs for
// real, with user presence and verification answered at once, so that
// navigator.credentials.create and get run without a device or a prompt.
//
// # Console
//
// A Person keeps what its tab wrote to the console (console calls,
// uncaught exceptions, the browser's log, where Chromium reports
// Content-Security-Policy violations) and the HTTP answers it received
// with their headers, so that a test can assert that a page ran clean and
// was served with the headers it needs.
//
// A missing Chromium fails the test; it never skips, so that a machine
// without one cannot pass the browser tests by not running them.
package chromiumtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// Install is what to do when no Chromium is found.
const Install = "install Debian's chromium (.ci/run does)"

// Path returns the Chromium to run: $CHROMIUM, or chromium on the PATH. It
// fails t when there is none.
func Path(t testing.TB) string {
	t.Helper()
	name := os.Getenv("CHROMIUM")
	if name == "" {
		name = "chromium"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("no Chromium (%v): %s", err, Install)
	}
	return p
}

// Start starts a headless Chromium with a profile in t.TempDir and returns
// the context of its first tab; person contexts derive from it. The browser
// lives until ctx ends or the test is cleaned up.
func Start(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	exe := Path(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Containers have a small /dev/shm; a full one crashes the renderer.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
	)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v (%s)", exe, err, Install)
	}
	return bctx
}

// Person is one person's browser: a browser context of their own with one
// tab and a virtual authenticator in it.
type Person struct {
	// Ctx runs actions in the person's tab (chromedp.Do, chromedp.Run).
	Ctx context.Context
	// Authenticator is the tab's virtual authenticator.
	Authenticator webauthn.AuthenticatorID

	mu        sync.Mutex
	console   []string
	responses []Response
}

// Response is one HTTP answer the tab received: a page, a script, a fetch.
type Response struct {
	URL     string
	Status  int64
	Headers map[string]string // names in lower case
}

// NewPerson opens a browser context in the browser Start returned, with a
// tab whose virtual authenticator holds resident keys and verifies its
// user at once (a platform passkey: CTAP2, internal transport).
func NewPerson(t testing.TB, browser context.Context) *Person {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &Person{Ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("open a browser context: %v", err)
	}
	if err := chromedp.Listen(ctx, p.listen); err != nil {
		t.Fatalf("listen to the console: %v", err)
	}
	id, err := chromedp.Run(ctx, func(ctx context.Context, tab *chromedp.Target) (webauthn.AuthenticatorID, error) {
		if _, err := cdp.Call(ctx, tab, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return "", err
		}
		res, err := cdp.Call(ctx, tab, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol:                    webauthn.AuthenticatorProtocolCtap2,
				Transport:                   webauthn.AuthenticatorTransportInternal,
				HasResidentKey:              true,
				HasUserVerification:         true,
				IsUserVerified:              true,
				AutomaticPresenceSimulation: true,
			},
		})
		return res.AuthenticatorID, err
	})
	if err != nil {
		t.Fatalf("virtual authenticator: %v", err)
	}
	p.Authenticator = id
	return p
}

// listen runs in the tab's read loop: it only copies text out.
func (p *Person) listen(ev any) {
	var line string
	switch ev := ev.(type) {
	case *network.EventResponseReceived:
		r := Response{URL: ev.Response.URL, Status: ev.Response.Status, Headers: map[string]string{}}
		for k, v := range ev.Response.Headers {
			r.Headers[strings.ToLower(k)] = fmt.Sprint(v)
		}
		p.mu.Lock()
		p.responses = append(p.responses, r)
		p.mu.Unlock()
		return
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, strings.Trim(string(a.Value), `"`))
			} else {
				args = append(args, a.Description)
			}
		}
		line = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		line = "exception: " + ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil {
			line += " " + ex.Description
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		line = "log." + string(e.Level) + " (" + string(e.Source) + "): " + e.Text + " " + e.URL
	default:
		return
	}
	p.mu.Lock()
	p.console = append(p.console, line)
	p.mu.Unlock()
}

// Console returns what the tab wrote to the console so far, one line per
// message.
func (p *Person) Console() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.console...)
}

// Responses returns the HTTP answers the tab received so far.
func (p *Person) Responses() []Response {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Response(nil), p.responses...)
}

// CSPViolations returns the console lines in which Chromium reports a
// Content-Security-Policy violation.
func (p *Person) CSPViolations() []string {
	var out []string
	for _, l := range p.Console() {
		if strings.Contains(l, "Content Security Policy") || strings.Contains(l, "Content-Security-Policy") {
			out = append(out, l)
		}
	}
	return out
}
