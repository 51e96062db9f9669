package upstreamauth

import (
	"context"
	"net/textproto"
	"time"
)

// Source is the credential the proxy sets on every forwarded request. It is
// safe for concurrent use by any number of goroutines.
type Source struct {
	kind   string
	header string
	file   *fileValue   // KindHeader
	token  *tokenSource // KindOAuth2
}

// New checks cfg (Config.Check), reads its files and, for oauth2, fetches
// the first token; any failure is an error, so a proxy never starts without
// a credential it can send. ctx bounds that first fetch only.
func New(ctx context.Context, cfg Config) (*Source, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger.With().Str("component", "upstream_auth").Logger()
	if cfg.OAuth2 != nil {
		ts, err := newTokenSource(ctx, cfg.OAuth2, cfg.HTTPClient, now, log)
		if err != nil {
			return nil, err
		}
		return &Source{kind: KindOAuth2, header: "Authorization", token: ts}, nil
	}
	fv, err := newFileValue(cfg.ValueFile, "value file", now, log)
	if err != nil {
		return nil, err
	}
	return &Source{kind: KindHeader, header: textproto.CanonicalMIMEHeaderKey(cfg.Header), file: fv}, nil
}

// Header is the canonical name of the header the credential goes in
// ("Authorization" for oauth2).
func (s *Source) Header() string { return s.header }

// Kind is KindHeader or KindOAuth2. Records carry it; they never carry the
// value.
func (s *Source) Kind() string { return s.kind }

// Value returns the credential to set, "Bearer <token>" for oauth2. It is
// meant for the hot path: the value file is stat'ed at most once per second
// and re-read only when it changed; a token is reused until shortly before
// its expiry and then refreshed by one background fetch. A value file that
// turns unreadable or invalid leaves the last good value in use (Ready
// reports it). The error, only for oauth2 once the token has expired and no
// new one could be had, wraps ErrUnavailable and never holds a secret.
func (s *Source) Value(ctx context.Context) (string, error) {
	if s.token != nil {
		return s.token.value(ctx)
	}
	return s.file.get().value, nil
}

// Ready returns nil while the credential is usable and current, else why
// not: the token endpoint's last failure (its HTTP status and OAuth2 error
// code, never its body), an expired token, or a value or client secret file
// that could not be re-read or holds an invalid value. It is /readyz's
// answer for the upstream credential, and it also starts a check or refresh
// that is due, so that readiness recovers without forwarded traffic.
func (s *Source) Ready() error {
	if s.token != nil {
		return s.token.ready()
	}
	return s.file.get().err
}
