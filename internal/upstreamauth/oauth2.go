package upstreamauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	// defaultTimeout bounds one token request with the default client.
	defaultTimeout = 10 * time.Second
	// fetchTimeout bounds a background refresh even with a caller's client
	// that has no timeout: nobody waits on it but the requests it serves.
	fetchTimeout = 30 * time.Second
	// earlyMax and earlyDivisor set when a token is refreshed: this long
	// before its expiry, min(60 s, a tenth of its lifetime), so that a
	// request sent just before the refresh still arrives with a token the
	// ERP accepts, and a short-lived token is not refreshed on every call.
	earlyMax     = 60 * time.Second
	earlyDivisor = 10
	// noExpiryLifetime is how long a token is used when the endpoint says
	// nothing of its lifetime (expires_in is only RECOMMENDED): not forever,
	// so a revoked token does not outlive the next refresh by much.
	noExpiryLifetime = 5 * time.Minute
	// retryMin and retryMax bound the back-off after a failed fetch, so
	// that an outage of the endpoint is not met with a request per call.
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// defaultHTTPClient is the token endpoint's client when Config.HTTPClient is
// nil. The environment's proxy is never used: the client secret goes to the
// configured endpoint and nowhere else. Redirects are not followed, because
// a 307 would carry the form (and a secret sent in it) to another host; the
// 3xx is reported as the endpoint's answer.
func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &http.Client{
		Timeout:   defaultTimeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// tokenSource caches a client-credentials token. The hot path is an atomic
// load and a clock read. From refreshAt on, the first caller starts one
// background fetch and every caller goes on with the still valid token;
// only past expiry do callers wait, all on that one fetch.
//
// It does not use oauth2.ReuseTokenSource: that one holds a mutex across the
// fetch (every request waits while a token is refreshed) and reads
// time.Now, where this reads Config.Now.
type tokenSource struct {
	conf   *clientcredentials.Config // ClientSecret written only by the one fetch under way
	client *http.Client
	secret *fileValue
	now    func() time.Time
	log    zerolog.Logger

	cur atomic.Pointer[tokenState]

	mu       sync.Mutex
	inflight chan struct{} // closed when the fetch under way ends; nil if none
	lastErr  error         // the last fetch's failure, nil after a success
	failures int           // consecutive failures, for the back-off
	retryAt  time.Time     // no new fetch before this after a failure
}

// tokenState is published whole.
type tokenState struct {
	value     string // "Bearer <token>"
	refreshAt time.Time
	expiry    time.Time
}

func newTokenSource(ctx context.Context, o *OAuth2, client *http.Client, now func() time.Time, log zerolog.Logger) (*tokenSource, error) {
	secret, err := newFileValue(o.ClientSecretFile, "client secret file", now, log)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = defaultHTTPClient()
	}
	s := &tokenSource{
		conf: &clientcredentials.Config{
			ClientID: o.ClientID,
			TokenURL: o.TokenURL,
			Scopes:   append([]string(nil), o.Scopes...),
		},
		client: client,
		secret: secret,
		now:    now,
		log:    log,
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	st, err := s.fetch(fctx)
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	return s, nil
}

func (s *tokenSource) value(ctx context.Context) (string, error) {
	now := s.now()
	st := s.cur.Load()
	if st != nil && now.Before(st.refreshAt) {
		return st.value, nil
	}
	s.mu.Lock()
	st, now = s.cur.Load(), s.now() // fresh under the lock, as the back-off is
	if st != nil && now.Before(st.refreshAt) {
		s.mu.Unlock()
		return st.value, nil
	}
	done := s.startLocked(now)
	err := s.lastErr
	s.mu.Unlock()
	if st != nil && now.Before(st.expiry) {
		return st.value, nil
	}
	if done == nil {
		return "", unavailable(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return "", unavailable(ctx.Err())
	}
	if st = s.cur.Load(); st != nil && s.now().Before(st.expiry) {
		return st.value, nil
	}
	s.mu.Lock()
	err = s.lastErr
	s.mu.Unlock()
	return "", unavailable(err)
}

func unavailable(cause error) error {
	if cause == nil {
		cause = errors.New("token expired")
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// ready reports the last fetch's failure, an expired token or a refused
// client secret file. It also starts a refresh when one is due: a proxy
// taken out of service by a failing probe gets no requests that would.
func (s *tokenSource) ready() error {
	now := s.now()
	s.mu.Lock()
	st := s.cur.Load()
	if st == nil || !now.Before(st.refreshAt) {
		s.startLocked(now)
	}
	err := s.lastErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if st == nil || !now.Before(st.expiry) {
		return unavailable(nil)
	}
	return s.secret.get().err
}

// startLocked starts a background fetch unless one is under way or the
// back-off after a failure has not passed, and returns the channel that is
// closed when the fetch under way ends (nil if none). Called with s.mu held.
func (s *tokenSource) startLocked(now time.Time) chan struct{} {
	if s.inflight != nil {
		return s.inflight
	}
	if s.lastErr != nil && now.Before(s.retryAt) {
		return nil
	}
	done := make(chan struct{})
	s.inflight = done
	go s.run(done)
	return done
}

func (s *tokenSource) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	st, err := s.fetch(ctx)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures++
		back := retryMin << min(s.failures-1, 10)
		s.retryAt = s.now().Add(min(back, retryMax))
		s.lastErr = err
	} else {
		if s.lastErr != nil {
			s.log.Info().Str("kind", KindOAuth2).Msg("token endpoint recovered")
		}
		s.cur.Store(st)
		s.lastErr, s.failures = nil, 0
	}
	s.inflight = nil
	close(done)
}

// fetch asks the endpoint for a new token. Only one fetch runs at a time
// (New's, then the one behind s.inflight), which is what makes writing
// s.conf.ClientSecret safe.
func (s *tokenSource) fetch(ctx context.Context) (*tokenState, error) {
	s.conf.ClientSecret = s.secret.get().value
	start := s.now()
	tok, err := s.conf.Token(context.WithValue(ctx, oauth2.HTTPClient, s.client))
	if err != nil {
		return nil, s.failed(sanitise(err))
	}
	if typ := tok.TokenType; typ != "" && !strings.EqualFold(typ, "bearer") {
		return nil, s.failed(&EndpointError{Reason: "issued a token that is not a bearer token"})
	}
	if !validTokenValue(tok.AccessToken) {
		return nil, s.failed(&EndpointError{Reason: "issued an access_token that is not a valid header value"})
	}
	// The lifetime is taken from expires_in and counted from before the
	// request, so the token is never believed valid longer than it is.
	var life time.Duration
	switch {
	case tok.ExpiresIn > 0:
		life = time.Duration(tok.ExpiresIn) * time.Second
	case !tok.Expiry.IsZero():
		life = time.Until(tok.Expiry) // a form-encoded answer: the library set Expiry from time.Now
	default:
		life = noExpiryLifetime
	}
	if life <= 0 {
		return nil, s.failed(&EndpointError{Reason: "issued a token that has already expired"})
	}
	early := min(earlyMax, life/earlyDivisor)
	st := &tokenState{
		value:     "Bearer " + tok.AccessToken,
		expiry:    start.Add(life),
		refreshAt: start.Add(life - early),
	}
	s.log.Debug().Str("kind", KindOAuth2).Float64("lifetime_s", life.Seconds()).Msg("token fetched")
	return st, nil
}

// failed logs a failed fetch, with the status and code as fields of their
// own for alerting, and returns it.
func (s *tokenSource) failed(e *EndpointError) error {
	ev := s.log.Warn().Str("kind", KindOAuth2).Str("error", e.Error())
	if e.Status != 0 {
		ev = ev.Int("status", e.Status).Str("code", e.Code)
	}
	ev.Msg("token endpoint failed")
	return e
}

// validTokenValue admits visible ASCII only: RFC 6750's b64token is a subset,
// and anything else could not be sent in a header or would split it.
func validTokenValue(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x21 || t[i] > 0x7e {
			return false
		}
	}
	return true
}

// sanitise turns what golang.org/x/oauth2 returns into an *EndpointError
// that carries no byte of the answer's body: RetrieveError.Error includes
// the body, and endpoints echo requests, secrets included, in their errors.
func sanitise(err error) *EndpointError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		e := &EndpointError{Code: errorCode(re.ErrorCode)}
		if re.Response != nil {
			e.Status = re.Response.StatusCode
		}
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// ue.Err is the transport's own error (dial, TLS, timeout): it holds
		// no part of the request or the answer. The URL is left out; the
		// config names it.
		return &EndpointError{Reason: "request failed: " + ue.Err.Error()}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &EndpointError{Reason: "request failed: " + err.Error()}
	}
	if strings.Contains(err.Error(), "missing access_token") {
		return &EndpointError{Reason: "answered without an access_token"}
	}
	// A body that did not parse: the parser's message may quote it.
	return &EndpointError{Reason: "answered something that is not a token response"}
}

// errorCode keeps an RFC 6749 error code if it is one (section 5.2:
// %x20-21 / %x23-5B / %x5D-7E), short enough for a log line, else "".
func errorCode(c string) string {
	if c == "" || len(c) > 64 {
		return ""
	}
	for i := 0; i < len(c); i++ {
		if b := c[i]; b < 0x20 || b > 0x7e || b == '"' || b == '\\' {
			return ""
		}
	}
	return c
}
