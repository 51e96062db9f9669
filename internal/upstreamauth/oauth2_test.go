package upstreamauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const clientID = "uapk-proxy"

type oauthFixture struct {
	ts         *tokenServer
	clock      *fakeClock
	logs       *logBuffer
	secret     string
	secretFile string
	cfg        Config
}

// newOAuthFixture starts a token endpoint issuing tokens that live
// expiresIn seconds and configures a Source for it (not yet created).
func newOAuthFixture(t *testing.T, expiresIn int64) *oauthFixture {
	t.Helper()
	f := &oauthFixture{clock: newFakeClock(), logs: &logBuffer{}, secret: "cl13nt-s3cr3t-" + randHex(t, 16)}
	f.ts = newTokenServer(t, clientID, f.secret, expiresIn)
	f.secretFile = filepath.Join(t.TempDir(), "client-secret")
	writeFile(t, f.secretFile, f.secret+"\n")
	f.cfg = Config{
		OAuth2: &OAuth2{
			TokenURL:         f.ts.tokenURL(),
			ClientID:         clientID,
			ClientSecretFile: f.secretFile,
			Scopes:           []string{"erp.read", "erp.write"},
		},
		Logger: f.logs.logger(),
		Now:    f.clock.Now,
	}
	return f
}

func (f *oauthFixture) newSource(t *testing.T) *Source {
	t.Helper()
	s, err := New(t.Context(), f.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// secrets is everything that must never show in an error or a log line.
func (f *oauthFixture) secrets() []string {
	return append([]string{f.secret}, f.ts.tokens()...)
}

// valueAll calls Value from n goroutines at once and returns what each got.
func valueAll(t *testing.T, s *Source, n int) []string {
	t.Helper()
	out := make([]string, n)
	errs := make([]error, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			out[i], errs[i] = s.Value(t.Context())
		})
	}
	start.Done()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Value %d: %v", i, err)
		}
	}
	return out
}

func allEqual(t *testing.T, got []string, want string) {
	t.Helper()
	for i, v := range got {
		if v != want {
			t.Fatalf("Value %d = %q, want %q", i, v, want)
		}
	}
}

// TestTokenReusedAndRefreshedOnce drives a token's life on the fake clock:
// 200 concurrent callers share one fetch, inside the early window they get
// the current token while exactly one refresh runs, and past the expiry of
// a token they all wait for one fetch.
func TestTokenReusedAndRefreshedOnce(t *testing.T) {
	f := newOAuthFixture(t, 100) // early window: min(60 s, 10 s) = 10 s
	s := f.newSource(t)
	if s.Kind() != KindOAuth2 || s.Header() != "Authorization" {
		t.Fatalf("Kind, Header = %q, %q", s.Kind(), s.Header())
	}
	if n := f.ts.requests.Load(); n != 1 {
		t.Fatalf("New made %d token requests, want 1", n)
	}
	first := "Bearer " + f.ts.tokens()[0]
	f.ts.mu.Lock()
	scopes := f.ts.scopes
	f.ts.mu.Unlock()
	if !slices.Equal(scopes, []string{"erp.read", "erp.write"}) {
		t.Errorf("scopes asked for = %q", scopes)
	}

	allEqual(t, valueAll(t, s, 200), first)
	f.clock.Add(89 * time.Second)
	allEqual(t, valueAll(t, s, 200), first)
	if n := f.ts.requests.Load(); n != 1 {
		t.Fatalf("%d token requests over the token's life, want 1", n)
	}

	// In the early window: nobody waits; one refresh starts.
	f.clock.Add(6 * time.Second) // 95 s
	for i, v := range valueAll(t, s, 200) {
		if !strings.HasPrefix(v, "Bearer tok-") {
			t.Fatalf("Value %d = %q in the early window", i, v)
		}
	}
	// Past the first token's expiry: the refresh (under way or done) is
	// what every caller gets, and it was the only one.
	f.clock.Add(6 * time.Second) // 101 s
	got := valueAll(t, s, 200)
	if n := f.ts.requests.Load(); n != 2 {
		t.Fatalf("%d token requests after the early window, want 2", n)
	}
	second := "Bearer " + f.ts.tokens()[1]
	allEqual(t, got, second)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}

	// Long past every expiry: 200 callers wait together for one fetch.
	f.clock.Add(time.Hour)
	got = valueAll(t, s, 200)
	if n := f.ts.requests.Load(); n != 3 {
		t.Fatalf("%d token requests after the token expired, want 3", n)
	}
	allEqual(t, got, "Bearer "+f.ts.tokens()[2])
	assertNoSecret(t, "the log", f.logs.String(), f.secrets()...)
}

// TestTokenRefreshRealClock is the same on the real clock with a token
// that lives 2 s, which is what a deployment does: callers that run until
// they see a new token cause one refresh between them, not one per call.
func TestTokenRefreshRealClock(t *testing.T) {
	f := newOAuthFixture(t, 2)
	f.cfg.Now = nil
	s := f.newSource(t)
	first := "Bearer " + f.ts.tokens()[0]

	var calls atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	deadline := time.Now().Add(30 * time.Second) // stops a hang only
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				v, err := s.Value(t.Context())
				calls.Add(1)
				if err != nil {
					errs <- err
					return
				}
				if v != first {
					return
				}
				time.Sleep(time.Millisecond)
			}
			errs <- errors.New("the token was never refreshed")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Exactly 2 unless the machine stalls for more than 1.8 s; a fetch per
	// call would be thousands.
	if n := f.ts.requests.Load(); n < 2 || n > 4 {
		t.Fatalf("%d token requests for %d calls, want 2 (at most 4)", n, calls.Load())
	}
	if calls.Load() < 500 {
		t.Fatalf("only %d calls: the count above says little", calls.Load())
	}
}

// TestTokenLifetime: how long a token is used, by the shape of the answer.
func TestTokenLifetime(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, token string)
		stale  time.Duration // at this age the token is still used
		fresh  time.Duration // at this age a new one has been fetched
	}{
		{"json expires_in number", func(w http.ResponseWriter, tok string) {
			writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "bearer", "expires_in": 100})
		}, 89 * time.Second, 101 * time.Second},
		{"json expires_in string", func(w http.ResponseWriter, tok string) {
			writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": "100"})
		}, 89 * time.Second, 101 * time.Second},
		{"one hour: 60 s early", func(w http.ResponseWriter, tok string) {
			writeJSON(w, 200, map[string]any{"access_token": tok, "expires_in": 3600})
		}, 3539 * time.Second, 3601 * time.Second},
		{"form-encoded", func(w http.ResponseWriter, tok string) {
			w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
			_, _ = w.Write([]byte(url.Values{"access_token": {tok}, "token_type": {"bearer"}, "expires_in": {"100"}}.Encode()))
		}, 89 * time.Second, 101 * time.Second},
		{"no expires_in: 5 minutes", func(w http.ResponseWriter, tok string) {
			writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "Bearer"})
		}, 269 * time.Second, 301 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, 0)
			f.ts.setAnswer(tc.answer)
			s := f.newSource(t)
			f.clock.Add(tc.stale)
			if v, err := s.Value(t.Context()); err != nil || v != "Bearer "+f.ts.tokens()[0] {
				t.Fatalf("Value at %v = %q, %v", tc.stale, v, err)
			}
			if n := f.ts.requests.Load(); n != 1 {
				t.Fatalf("%d token requests at %v, want 1", n, tc.stale)
			}
			f.clock.Add(tc.fresh - tc.stale)
			if v, err := s.Value(t.Context()); err != nil || v != "Bearer "+f.ts.tokens()[1] {
				t.Fatalf("Value at %v = %q, %v", tc.fresh, v, err)
			}
		})
	}
}

// TestTokenEndpointRefusesAtNew: New fails with the status and the OAuth2
// error code, and with nothing of the answer's body, which here echoes the
// secret.
func TestTokenEndpointRefusesAtNew(t *testing.T) {
	echo := func(status int, body string) func(w http.ResponseWriter, _ string) {
		return func(w http.ResponseWriter, _ string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}
	}
	tests := []struct {
		name       string
		answer     func(f *oauthFixture) func(w http.ResponseWriter, token string)
		wrongCreds bool
		want       string
		status     int
		code       string
	}{
		{"500 echoing the secret", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return echo(500, "<h1>boom</h1> request was client_secret="+f.secret)
		}, false, "token endpoint answered 500", 500, ""},
		{"401 invalid_client", nil, true, "token endpoint answered 401 (invalid_client)", 401, "invalid_client"},
		{"400 invalid_scope", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, _ string) {
				writeJSON(w, 400, map[string]string{"error": "invalid_scope", "error_description": "secret " + f.secret + " may not"})
			}
		}, false, "token endpoint answered 400 (invalid_scope)", 400, "invalid_scope"},
		{"error code with a quote is dropped", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, _ string) {
				writeJSON(w, 400, map[string]string{"error": `x"` + f.secret})
			}
		}, false, "token endpoint answered 400", 400, ""},
		{"200 that is not json", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, tok string) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte("access_token=" + tok + "&secret=" + f.secret))
			}
		}, false, "not a token response", 0, ""},
		{"200 without access_token", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, _ string) {
				writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 60})
			}
		}, false, "without an access_token", 0, ""},
		{"not a bearer token", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, tok string) {
				writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "mac", "expires_in": 60})
			}
		}, false, "not a bearer token", 0, ""},
		{"token with a newline", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, tok string) {
				writeJSON(w, 200, map[string]any{"access_token": tok + "\r\nX-Evil: 1", "expires_in": 60})
			}
		}, false, "not a valid header value", 0, ""},
		{"already expired", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, tok string) {
				writeJSON(w, 200, map[string]any{"access_token": tok, "expires_in": -5})
			}
		}, false, "already expired", 0, ""},
		{"redirect is not followed", func(f *oauthFixture) func(http.ResponseWriter, string) {
			return func(w http.ResponseWriter, _ string) {
				w.Header().Set("Location", "http://127.0.0.1:1/steal")
				w.WriteHeader(http.StatusTemporaryRedirect)
			}
		}, false, "token endpoint answered 307", 307, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, 60)
			if tc.answer != nil {
				f.ts.setAnswer(tc.answer(f))
			}
			if tc.wrongCreds {
				f.ts.setSecret("another-secret")
			}
			_, err := New(t.Context(), f.cfg)
			if !errors.Is(err, ErrTokenEndpoint) {
				t.Fatalf("New = %v, want ErrTokenEndpoint", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %q, want it to say %q", err, tc.want)
			}
			var ee *EndpointError
			if !errors.As(err, &ee) || ee.Status != tc.status || ee.Code != tc.code {
				t.Errorf("EndpointError = %+v, want status %d code %q", ee, tc.status, tc.code)
			}
			assertNoSecret(t, "New's error", err.Error(), f.secrets()...)
			assertNoSecret(t, "the log", f.logs.String(), f.secrets()...)
			if !strings.Contains(f.logs.String(), "token endpoint failed") {
				t.Errorf("the failure was not logged:\n%s", f.logs.String())
			}
		})
	}
}

func TestTokenEndpointUnreachable(t *testing.T) {
	f := newOAuthFixture(t, 60)
	f.ts.Close()
	_, err := New(t.Context(), f.cfg)
	if !errors.Is(err, ErrTokenEndpoint) || !strings.Contains(err.Error(), "request failed") {
		t.Fatalf("New = %v", err)
	}
	assertNoSecret(t, "New's error", err.Error(), f.secret)
}

// TestTokenEndpointFailsLater: once the endpoint fails, the current token
// is used while it is valid and Ready says why; past its expiry Value
// refuses, the endpoint is not asked again during the back-off, and Ready
// alone (no traffic) brings the source back when the endpoint recovers.
func TestTokenEndpointFailsLater(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(f *oauthFixture)
		want string
	}{
		{"401 invalid_client after a secret change", func(f *oauthFixture) { f.ts.setSecret("rotated-elsewhere") }, "token endpoint answered 401 (invalid_client)"},
		{"500", func(f *oauthFixture) {
			f.ts.setAnswer(func(w http.ResponseWriter, tok string) {
				http.Error(w, "internal error for "+f.secret+" "+tok, http.StatusInternalServerError)
			})
		}, "token endpoint answered 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, 100)
			s := f.newSource(t)
			first := "Bearer " + f.ts.tokens()[0]
			tc.fail(f)

			f.clock.Add(95 * time.Second) // early window
			allEqual(t, valueAll(t, s, 50), first)
			f.clock.Add(6 * time.Second) // past expiry
			_, err := s.Value(t.Context())
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrTokenEndpoint) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Value past expiry = %v, want ErrUnavailable saying %q", err, tc.want)
			}
			ready := s.Ready()
			if !errors.Is(ready, ErrTokenEndpoint) || !strings.Contains(ready.Error(), tc.want) {
				t.Fatalf("Ready = %v, want it to say %q", ready, tc.want)
			}
			// During the back-off, calls do not reach the endpoint.
			asked := f.ts.requests.Load()
			for range 100 {
				if _, err := s.Value(t.Context()); !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Value = %v", err)
				}
			}
			if n := f.ts.requests.Load(); n != asked {
				t.Fatalf("%d token requests during the back-off", n-asked)
			}
			for _, e := range []error{err, ready} {
				assertNoSecret(t, "an error", e.Error(), f.secrets()...)
			}

			// The endpoint recovers; with no traffic, Ready starts the
			// fetch and, once it is done, says nil.
			f.ts.setSecret(f.secret)
			f.ts.setAnswer(nil)
			f.clock.Add(retryMax)
			_ = s.Ready()
			waitFetch(t, s)
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready after recovery = %v", err)
			}
			tokens := f.ts.tokens()
			if v, err := s.Value(t.Context()); err != nil || v != "Bearer "+tokens[len(tokens)-1] {
				t.Fatalf("Value after recovery = %q, %v", v, err)
			}
			if !strings.Contains(f.logs.String(), "token endpoint recovered") {
				t.Errorf("recovery not logged")
			}
			assertNoSecret(t, "the log", f.logs.String(), f.secrets()...)
		})
	}
}

// waitFetch waits for the background fetch under way, if any.
func waitFetch(t *testing.T, s *Source) {
	t.Helper()
	s.token.mu.Lock()
	done := s.token.inflight
	s.token.mu.Unlock()
	if done != nil {
		<-done
	}
}

// TestClientSecretRotated: a new client secret file is used from the next
// fetch on.
func TestClientSecretRotated(t *testing.T) {
	f := newOAuthFixture(t, 100)
	s := f.newSource(t)
	newSecret := "cl13nt-s3cr3t-new-" + randHex(t, 16)
	replaceFile(t, f.secretFile, newSecret+"\n")
	f.ts.setSecret(newSecret) // the old one is now refused
	f.clock.Add(101 * time.Second)
	v, err := s.Value(t.Context())
	if err != nil || v != "Bearer "+f.ts.tokens()[1] {
		t.Fatalf("Value after the secret's rotation = %q, %v", v, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}

	// A broken secret file keeps the last secret and says so in Ready.
	replaceFile(t, f.secretFile, "")
	f.clock.Add(statEvery)
	if err := s.Ready(); !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), "client secret file") {
		t.Fatalf("Ready with an empty secret file = %v", err)
	}
	f.clock.Add(101 * time.Second)
	if _, err := s.Value(t.Context()); err != nil {
		t.Fatalf("Value with the previous secret = %v", err)
	}
	assertNoSecret(t, "the log", f.logs.String(), append(f.secrets(), newSecret)...)
}

// TestValueHonoursContext: a caller that gives up while every caller waits
// for a slow fetch gets its context's error at once.
func TestValueHonoursContext(t *testing.T) {
	f := newOAuthFixture(t, 100)
	s := f.newSource(t)
	release := make(chan struct{})
	f.ts.setAnswer(func(w http.ResponseWriter, tok string) {
		<-release
		writeJSON(w, 200, map[string]any{"access_token": tok, "expires_in": 100})
	})
	t.Cleanup(func() { close(release); waitFetch(t, s) })
	f.clock.Add(101 * time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Value(ctx); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Value = %v, want context.Canceled", err)
	}
}
