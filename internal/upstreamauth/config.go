package upstreamauth

import (
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config is the upstream_auth section of the config file: either Header with
// ValueFile, or OAuth2. HTTPClient, Logger and Now are set by the program,
// not the file.
type Config struct {
	// Header names the request header that carries the content of
	// ValueFile, such as Authorization or X-Api-Key. It is canonicalised
	// (textproto.CanonicalMIMEHeaderKey).
	Header string
	// ValueFile holds the header's value. It is watched for changes, so a
	// rotated Kubernetes Secret (a symlink swap of ..data) is picked up.
	ValueFile string
	// OAuth2 selects the client-credentials grant instead.
	OAuth2 *OAuth2

	// HTTPClient is used for the token endpoint only. nil: a client with a
	// 10 s timeout, the system roots, no proxy from the environment and no
	// redirects.
	HTTPClient *http.Client
	// Logger receives changes of the credential and failures, never a value.
	Logger zerolog.Logger
	// Now is the clock for the file's stat cache and the token's expiry;
	// nil means time.Now.
	Now func() time.Time
}

// OAuth2 is upstream_auth.oauth2: the client-credentials grant (RFC 6749
// section 4.4).
type OAuth2 struct {
	TokenURL         string
	ClientID         string
	ClientSecretFile string
	Scopes           []string
}

// Kinds of credential, as Source.Kind reports them for records.
const (
	KindHeader = "header"
	KindOAuth2 = "oauth2"
)

const cfgPath = "upstream_auth"

// forbiddenHeaders are the canonical names the credential may not be put in:
// they decide framing, routing or a connection's fate (so setting one would
// let the credential reshape the request the gate allowed), or they are
// hop-by-hop and would never reach the ERP.
var forbiddenHeaders = map[string]bool{
	"Host":                true,
	"Content-Length":      true,
	"Content-Type":        true,
	"Content-Encoding":    true,
	"Transfer-Encoding":   true,
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Proxy-Authorization": true,
	"Proxy-Authenticate":  true,
	"Te":                  true,
	"Trailer":             true,
	"Upgrade":             true,
	"Expect":              true,
}

// reservedPrefix is the proxy's own header namespace (canonical form).
const reservedPrefix = "X-Uapk-"

// Check validates the configuration without touching the network. Every
// problem is collected into one *ConfigError with its path. Files are opened
// and their content checked as New would, so that `check` finds an empty or
// multi-line value file before a deploy does.
func (c Config) Check() error {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	addErr := func(path string, err error) {
		ps = append(ps, Problem{Path: path, Message: err.Error(), Err: err})
	}
	headerSet := c.Header != "" || c.ValueFile != ""
	switch {
	case headerSet && c.OAuth2 != nil:
		add(cfgPath, "set either header with value_file, or oauth2, not both")
	case !headerSet && c.OAuth2 == nil:
		add(cfgPath, "set header with value_file, or oauth2")
	}
	if headerSet {
		switch {
		case c.Header == "":
			add(cfgPath+".header", "required with value_file")
		default:
			if msg := checkHeaderName(c.Header); msg != "" {
				add(cfgPath+".header", "%s", msg)
			}
		}
		if c.ValueFile == "" {
			add(cfgPath+".value_file", "required with header")
		} else if err := checkFile(c.ValueFile); err != nil {
			addErr(cfgPath+".value_file", err)
		}
	}
	if o := c.OAuth2; o != nil {
		p := cfgPath + ".oauth2"
		if o.TokenURL == "" {
			add(p+".token_url", "required")
		} else if msg := checkTokenURL(o.TokenURL); msg != "" {
			add(p+".token_url", "%s", msg)
		}
		switch {
		case o.ClientID == "":
			add(p+".client_id", "required")
		case hasControl(o.ClientID):
			add(p+".client_id", "contains a control character")
		}
		if o.ClientSecretFile == "" {
			add(p+".client_secret_file", "required")
		} else if err := checkFile(o.ClientSecretFile); err != nil {
			addErr(p+".client_secret_file", err)
		}
		for i, s := range o.Scopes {
			if !validScope(s) {
				add(fmt.Sprintf("%s.scopes[%d]", p, i), "%q is not a scope token (RFC 6749 section 3.3: printable ASCII, no space, quote or backslash)", s)
			}
		}
	}
	if len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

// checkHeaderName returns "" for a name the credential may be set in, else
// why not.
func checkHeaderName(name string) string {
	if !validToken(name) {
		return fmt.Sprintf("%q is not a header name (RFC 9110 token)", name)
	}
	if strings.Contains(name, "_") {
		// The proxy drops agents' headers with _ (CGI-style servers fold
		// it into -), so the agent's X-Api-Key would reach the ERP beside
		// an X_Api_Key credential, and such servers read either.
		return fmt.Sprintf("%q has an underscore: servers that fold _ into - would read the agent's header of that name as well", name)
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	if forbiddenHeaders[canon] {
		return fmt.Sprintf("%s cannot carry the credential: it is a framing, routing or hop-by-hop header", canon)
	}
	if strings.HasPrefix(canon, reservedPrefix) {
		return fmt.Sprintf("%s cannot carry the credential: X-UAPK-* headers are the proxy's own", canon)
	}
	return ""
}

// checkTokenURL returns "" for a usable token endpoint URL, else why not.
// Plain http is refused except on loopback: the client secret travels in the
// request.
func checkTokenURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a URL"
	}
	if u.User != nil {
		// It would be sent along and could end up in an error string.
		return "must not carry user information; put the client secret in client_secret_file"
	}
	if u.Fragment != "" {
		return "must not have a fragment"
	}
	if u.Host == "" || u.Hostname() == "" {
		return "needs a host, such as https://idp.example.com/oauth2/token"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopback(u.Hostname()) {
			return ""
		}
		return "must be https (http is allowed only for 127.0.0.1, localhost and ::1)"
	default:
		return fmt.Sprintf("scheme %q: must be https", u.Scheme)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// checkFile opens and reads a credential file the way New will. The error
// names the problem, never the content.
func checkFile(path string) error {
	fi, err := os.Stat(path) // follows symlinks, as Kubernetes mounts need
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	_, _, err = readValueFile(path)
	return err
}

// validToken reports whether s is an RFC 9110 token (a header field name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validScope reports whether s is an RFC 6749 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
