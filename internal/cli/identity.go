package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/identity"
)

// identityFile is the config file's identity: section
// (docs/reference.md#caller-identity).
type identityFile struct {
	JWKS     string `yaml:"jwks"`
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	Claim    string `yaml:"claim"`
}

// readIdentity reads and checks the identity: section; nil when there is
// none.
func readIdentity(path string) (*identity.Config, []string) {
	var f identityFile
	found, problems := readSection(path, "identity", &f)
	if !found || len(problems) > 0 {
		return nil, problems
	}
	cfg := &identity.Config{JWKS: f.JWKS, Issuer: f.Issuer, Audience: f.Audience, Claim: f.Claim}
	if err := cfg.Check(); err != nil {
		msg := strings.TrimPrefix(err.Error(), identity.ErrConfig.Error()+": ")
		for _, p := range strings.Split(msg, "; ") {
			problems = append(problems, fmt.Sprintf("config %s: %s", path, p))
		}
	}
	return cfg, problems
}

// startIdentity loads the identity provider's keys; nil without identity.
// now is the gate's clock, so that tokens are judged by the time the gate
// decides by.
func startIdentity(cfg *identity.Config, roots *tls.Config, now func() time.Time, logw io.Writer) (gate.Identity, error) {
	if cfg == nil {
		return nil, nil
	}
	c := *cfg
	c.Logger = zerolog.New(logw).With().Timestamp().Str("component", "identity").Logger()
	c.Now = now
	if roots != nil {
		c.HTTPClient = directClient(roots)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := identity.New(ctx, c)
	if err != nil {
		return nil, exitf(2, "identity: %v", err)
	}
	return callerVerifier{v}, nil
}

// callerVerifier is the identity package's verifier as the gate sees it.
type callerVerifier struct{ v *identity.Verifier }

func (a callerVerifier) Verify(ctx context.Context, token string) (gate.Caller, error) {
	c, err := a.v.Verify(ctx, token)
	if err != nil {
		return gate.Caller{}, err
	}
	return gate.Caller{ID: c.ID, Issuer: c.Issuer, Subject: c.Subject, JTI: c.JTI}, nil
}
