package upstreamauth

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors. Match them with errors.Is: they are wrapped with the file
// or the answer that caused them, never with the credential itself.
var (
	// ErrInvalidConfig is matched by every *ConfigError: upstream_auth is not
	// an acceptable configuration (Config.Check, New).
	ErrInvalidConfig = errors.New("invalid upstream_auth configuration")

	// ErrInvalidValue is wrapped when a value file or client secret file holds
	// something that cannot be sent: empty after trimming, a CR, LF or other
	// control byte, or more than maxFileBytes. New refuses it; a rotation to
	// such content is refused and the previous value kept.
	ErrInvalidValue = errors.New("invalid credential file content")

	// ErrTokenEndpoint is matched by every *EndpointError: the token endpoint
	// could not be reached or did not issue a usable bearer token.
	ErrTokenEndpoint = errors.New("token endpoint failed")

	// ErrUnavailable is wrapped by Source.Value when it has no credential it
	// may send (for oauth2: the token expired and no new one could be had).
	// The request must not be forwarded without it.
	ErrUnavailable = errors.New("upstream credential unavailable")
)

// Problem is one finding of Config.Check. Path names the key in the config
// file, such as "upstream_auth.oauth2.token_url".
type Problem struct {
	Path    string
	Message string
	// Err is the error behind Message, if any (a file that cannot be
	// read, ErrInvalidValue), for errors.Is through the *ConfigError.
	Err error
}

// String renders the problem as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// ConfigError lists every problem Config.Check found, in a fixed order, so
// that one run of `check` shows them all.
type ConfigError struct {
	Problems []Problem
}

// Error lists the problems one per line, "path: message".
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems' own errors, so that errors.Is finds, say,
// fs.ErrNotExist or ErrInvalidValue through Check's answer.
func (e *ConfigError) Unwrap() []error {
	var errs []error
	for _, p := range e.Problems {
		if p.Err != nil {
			errs = append(errs, p.Err)
		}
	}
	return errs
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// EndpointError is a failed token request reduced to what may be shown in a
// log line, a record or /readyz: the HTTP status and the RFC 6749 error code.
// The answer's body and error_description are dropped, because token
// endpoints are known to echo the request (and so the client secret) there.
type EndpointError struct {
	// Status is the HTTP status of the answer, 0 when there was none.
	Status int
	// Code is the RFC 6749 "error" parameter, "" when absent or not made
	// of the characters the RFC allows.
	Code string
	// Reason says what was wrong when the status alone does not: the
	// transport error when there was no answer, or why a 2xx answer was not
	// a usable token. It never holds anything the endpoint sent.
	Reason string
}

// Error reads like "token endpoint answered 401 (invalid_client)".
func (e *EndpointError) Error() string {
	var b strings.Builder
	if e.Status == 0 {
		b.WriteString("token endpoint")
	} else {
		b.WriteString("token endpoint answered ")
		b.WriteString(strconv.Itoa(e.Status))
	}
	if e.Code != "" {
		b.WriteString(" (")
		b.WriteString(e.Code)
		b.WriteString(")")
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTokenEndpoint) true.
func (e *EndpointError) Is(target error) bool { return target == ErrTokenEndpoint }
