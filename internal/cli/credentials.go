package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/internal/upstreamauth"
	"github.com/uapk-gateway/uapk-proxy/proxy"
)

// upstreamAuthFile is the config file's upstream_auth: section
// (docs/reference.md#upstream-credentials).
type upstreamAuthFile struct {
	Header    string `yaml:"header"`
	ValueFile string `yaml:"value_file"`
	// Origins are where the forward door may send the credential.
	Origins []string `yaml:"origins"`
	OAuth2  *struct {
		TokenURL         string   `yaml:"token_url"`
		ClientID         string   `yaml:"client_id"`
		ClientSecretFile string   `yaml:"client_secret_file"`
		Scopes           []string `yaml:"scopes"`
	} `yaml:"oauth2"`
}

// readUpstreamAuth reads and checks the upstream_auth: section; nil when
// there is none.
func readUpstreamAuth(path string) (*upstreamauth.Config, []string, []string) {
	var f upstreamAuthFile
	found, problems := readSection(path, "upstream_auth", &f)
	if !found || len(problems) > 0 {
		return nil, nil, problems
	}
	for i, o := range f.Origins {
		if _, err := proxy.CredentialOrigin(o); err != nil {
			problems = append(problems, fmt.Sprintf("config %s: upstream_auth.origins[%d]: %v", path, i, err))
		}
	}
	cfg := &upstreamauth.Config{Header: f.Header, ValueFile: f.ValueFile}
	if o := f.OAuth2; o != nil {
		cfg.OAuth2 = &upstreamauth.OAuth2{TokenURL: o.TokenURL, ClientID: o.ClientID, ClientSecretFile: o.ClientSecretFile, Scopes: o.Scopes}
	}
	if err := cfg.Check(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			problems = append(problems, fmt.Sprintf("config %s: %s", path, line))
		}
	}
	return cfg, f.Origins, problems
}

// directClient reaches an identity provider or a token endpoint: never
// through the proxy's own *_PROXY environment, never following a redirect
// (which could carry a client secret elsewhere), trusting --upstream-ca
// besides the system roots.
func directClient(roots *tls.Config) *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{Proxy: nil, TLSClientConfig: roots, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// startCredential fetches the first ERP credential (read the value file, or
// the first OAuth2 token); nil without upstream_auth.
func startCredential(cfg *upstreamauth.Config, roots *tls.Config, logw io.Writer) (*upstreamauth.Source, error) {
	if cfg == nil {
		return nil, nil
	}
	c := *cfg
	c.Logger = zerolog.New(logw).With().Timestamp().Str("component", "upstream_auth").Logger()
	if roots != nil {
		c.HTTPClient = directClient(roots)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := upstreamauth.New(ctx, c)
	if err != nil {
		return nil, exitf(2, "upstream_auth: %v", err)
	}
	return src, nil
}
