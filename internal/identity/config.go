package identity

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// DefaultClaim is the claim that names the caller when Config.Claim is empty.
const DefaultClaim = "email"

// Config is the `identity:` section of the config.
type Config struct {
	JWKS     string // https URL or file path of a JWK Set
	Issuer   string // required; iss must equal it
	Audience string // required; aud must contain it
	Claim    string // the claim that names the caller; default DefaultClaim
	// HTTPClient fetches an https JWKS. Nil: a client with a 10 s timeout,
	// the system roots and no proxy from the environment.
	HTTPClient *http.Client
	Now        func() time.Time // nil: time.Now
	Logger     zerolog.Logger   // JWKS loads and failures; never a token
}

// Check validates the config without network access and reports every
// problem at once, each prefixed with its path (identity.jwks, ...), so one
// run of `check` shows them all.
func (c Config) Check() error {
	var problems []string
	if strings.TrimSpace(c.Issuer) == "" {
		problems = append(problems, "identity.issuer: required")
	}
	if strings.TrimSpace(c.Audience) == "" {
		problems = append(problems, "identity.audience: required")
	}
	if p := checkJWKS(c.JWKS); p != "" {
		problems = append(problems, "identity.jwks: "+p)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
}

// isURL tells a JWKS URL from a file path. Anything with a scheme is a URL,
// so that "http://..." is refused as a URL rather than looked up as a file.
func isURL(jwks string) bool { return strings.Contains(jwks, "://") }

// checkJWKS returns what is wrong with the jwks setting, or "".
func checkJWKS(jwks string) string {
	if jwks == "" {
		return "required: an https URL or a file path"
	}
	if isURL(jwks) {
		u, err := url.Parse(jwks)
		if err != nil {
			return "not a valid URL"
		}
		switch u.Scheme {
		case "https":
			if u.Host == "" {
				return "https URL has no host"
			}
			return ""
		case "http":
			// Whoever can change the key set in transit can mint any caller.
			return "http:// is refused: the key set must come over https or from a file"
		default:
			return fmt.Sprintf("scheme %q: want an https URL or a file path", u.Scheme)
		}
	}
	fi, err := os.Stat(jwks)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: no such file (want an https URL or an existing file)", jwks)
	case err != nil:
		return fmt.Sprintf("%s: %v", jwks, err)
	case fi.IsDir():
		return fmt.Sprintf("%s is a directory, want a file", jwks)
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%s is not a regular file", jwks)
	}
	return ""
}

// defaultClient fetches an https JWKS. Proxy is nil on purpose: this process
// is itself a proxy, and HTTPS_PROXY in its environment is meant for the
// agent's traffic (often pointing at this very process), not for the key
// set that decides who the agent acts for.
func defaultClient() *http.Client {
	return &http.Client{
		Timeout: fetchTimeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: fetchTimeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          2,
			IdleConnTimeout:       90 * time.Second,
		},
	}
}

// httpsOnly wraps a client so that a redirect can never lead off https: the
// same reason http:// is refused in the config applies to where a redirect
// points. The caller's client is copied, not changed.
func httpsOnly(c *http.Client) *http.Client {
	cp := *c
	next := c.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s refused: the key set must come over https", req.URL.Scheme)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		return nil
	}
	return &cp
}
