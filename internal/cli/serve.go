package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
	"github.com/uapk-gateway/uapk-proxy/internal/gcfloor"
	"github.com/uapk-gateway/uapk-proxy/internal/identity"
	"github.com/uapk-gateway/uapk-proxy/internal/logbuf"
	"github.com/uapk-gateway/uapk-proxy/internal/notify"
	"github.com/uapk-gateway/uapk-proxy/internal/server"
	"github.com/uapk-gateway/uapk-proxy/internal/upstreamauth"
	"github.com/uapk-gateway/uapk-proxy/proxy"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// serveOptions are the serve flags after flag > env > file > default.
type serveOptions struct {
	Manifest    string
	Principals  string
	Upstream    string
	SidecarAddr string
	ProxyAddr   string
	AdminAddr   string
	DataDir     string
	MaxBody     string
	MaxResponse string
	CADir       string
	UpstreamCA  string
	Config      string
	AdminTokens string
	LogLevel    string
	PrintConfig bool
	Grace       time.Duration
	// UpstreamTimeout bounds one ERP exchange; 0 (a test's options) is 30s.
	UpstreamTimeout time.Duration

	archive      *archiveFile         // the config file's archive: section
	upstreamAuth *upstreamauth.Config // the upstream_auth: section; nil: none
	identity     *identity.Config     // the identity: section; nil: none
	ui           uiFile               // the ui: section
	notify       *notify.Config       // the notify: section; nil: none
	approvals    approvalsFile        // the approvals: section
	// credentialOrigins: upstream_auth.origins, where the forward door may
	// send the credential.
	credentialOrigins []string
	segmentEvery      time.Duration // archive.segment_interval, parsed

	now          func() time.Time // the gate's clock; tests stand it anywhere in the week
	refusalEvery time.Duration    // how often refused admin calls are summed up (default 1m)
	expiryEvery  time.Duration    // how often pending approvals are checked for expiry
	// dial, if set, is how the forward door reaches ERPs and tunnel hosts;
	// tests map host names to loopback servers with it.
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	sources map[string]string
}

// flag names a flag for a problem message, with where its value came from.
func (o *serveOptions) flag(name string) string {
	if src, ok := o.sources[name]; ok {
		return "--" + name + " (from " + src + ")"
	}
	return "--" + name
}

func newServe() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy doors and the admin API until SIGINT/SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var problems []string
			o.sources, problems = applyConfig(cmd, os.LookupEnv)
			if len(problems) > 0 {
				_, _, more := o.load()
				return exitf(2, "invalid configuration:\n  %s", strings.Join(append(problems, more...), "\n  "))
			}
			if o.PrintConfig {
				printConfig(cmd, cmd.OutOrStdout())
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			// One write(2) per decision line was a large part of a
			// request's cost. The buffer is written out on every error
			// line, when the stop signal comes, and when serve returns,
			// before any error of its own is printed.
			logw := logbuf.New(cmd.ErrOrStderr(), 0, 0)
			defer logw.Close()
			// A door keeps a few MiB live and allocates a few KiB per
			// request: without head room the collector ran every few
			// hundred requests (GOGC or GOMEMLIMIT set: theirs wins).
			stopGC, _ := gcfloor.Start(gcfloor.Default)
			defer stopGC()
			context.AfterFunc(ctx, func() { _ = logw.Flush() })
			return runServe(ctx, o, logw, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Manifest, "manifest", "", "policy manifest, JSON or YAML (required)")
	f.StringVar(&o.Principals, "principals", "", "principals file: people, roles and public keys (YAML)")
	f.StringVar(&o.Upstream, "upstream", "", "ERP base URL; turns the sidecar door on")
	f.StringVar(&o.SidecarAddr, "sidecar-addr", "127.0.0.1:8081", "sidecar (reverse proxy) door address")
	f.StringVar(&o.ProxyAddr, "proxy-addr", "127.0.0.1:8080", "forward proxy door address (HTTP_PROXY/HTTPS_PROXY); empty turns it off")
	f.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:8090", "admin API, health and metrics address")
	f.StringVar(&o.DataDir, "data-dir", "./data", "ledger, gateway key and local archive")
	f.StringVar(&o.MaxBody, "max-body", "10MiB", "largest request body forwarded; above it 413 (e.g. 10MiB, 512KiB)")
	f.StringVar(&o.MaxResponse, "max-response", "64MiB", "largest ERP answer relayed; above it the agent gets 502 and the forward record says why")
	f.StringVar(&o.CADir, "ca-dir", "", "this install's CA (from 'ca init') for HTTPS interception")
	f.StringVar(&o.UpstreamCA, "upstream-ca", "", "extra PEM bundle trusted for ERP TLS")
	f.StringVar(&o.AdminTokens, "admin-tokens", "", "YAML file of admin API tokens (name, sha256, scopes); default a generated DATA/admin.token with every scope")
	f.StringVar(&o.Config, "config", "", "YAML file with any of these flags as keys (dashes as underscores)")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.PrintConfig, "print-config", false, "print the effective configuration and exit")
	f.DurationVar(&o.Grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long in-flight requests may take before the ledger closes")
	f.DurationVar(&o.UpstreamTimeout, "upstream-timeout", 30*time.Second, "how long the ERP may take to answer; then 504 upstream_timeout")
	return cmd
}

// printConfig shows every flag's effective value and where it came from.
func printConfig(cmd *cobra.Command, w io.Writer) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == "print-config" {
			return
		}
		fmt.Fprintf(w, "%s: %q\n", strings.ReplaceAll(f.Name, "-", "_"), f.Value.String())
	})
}

// load checks the whole configuration and returns every problem found.
func (o *serveOptions) load() (*rules.Manifest, *rules.Principals, []string) {
	var problems []string
	var m *rules.Manifest
	var p *rules.Principals
	if o.Manifest == "" {
		problems = append(problems, "--manifest is required")
	} else {
		var err error
		if m, err = rules.LoadManifest(o.Manifest); err != nil {
			problems = append(problems, describe(o.Manifest, err)...)
		}
	}
	if o.Principals != "" {
		var err error
		if p, err = rules.LoadPrincipals(o.Principals); err != nil {
			problems = append(problems, describe(o.Principals, err)...)
		}
	}
	if o.Upstream == "" && o.ProxyAddr == "" {
		problems = append(problems, "no door: set --upstream (the sidecar door) or --proxy-addr (the forward proxy door)")
	}
	addrs := []struct{ name, addr string }{{"admin-addr", o.AdminAddr}}
	if o.Upstream != "" {
		addrs = append(addrs, struct{ name, addr string }{"sidecar-addr", o.SidecarAddr})
	}
	if o.ProxyAddr != "" {
		addrs = append(addrs, struct{ name, addr string }{"proxy-addr", o.ProxyAddr})
	}
	for _, f := range addrs {
		if _, _, err := net.SplitHostPort(f.addr); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q: %v", o.flag(f.name), f.addr, err))
		}
	}
	_, _, tlsProblems := o.loadTLS()
	problems = append(problems, tlsProblems...)
	if _, err := parseSize(o.MaxBody); err != nil {
		problems = append(problems, o.flag("max-body")+": "+err.Error())
	}
	if _, err := o.maxResponse(); err != nil {
		problems = append(problems, o.flag("max-response")+": "+err.Error())
	}
	if o.DataDir == "" {
		problems = append(problems, "--data-dir must not be empty")
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		problems = append(problems, fmt.Sprintf("%s %q: want debug, info, warn or error", o.flag("log-level"), o.LogLevel))
	}
	if o.Grace < 0 {
		problems = append(problems, o.flag("shutdown-grace")+" must not be negative")
	}
	if o.UpstreamTimeout < 0 {
		problems = append(problems, o.flag("upstream-timeout")+" must not be negative")
	}
	if o.AdminTokens != "" {
		if _, err := adminauth.LoadFile(o.AdminTokens); err != nil {
			problems = append(problems, o.flag("admin-tokens")+": "+err.Error())
		}
	}
	var more []string
	o.archive, o.segmentEvery, more = readArchive(o.Config)
	problems = append(problems, more...)
	o.upstreamAuth, o.credentialOrigins, more = readUpstreamAuth(o.Config)
	problems = append(problems, more...)
	o.identity, more = readIdentity(o.Config)
	problems = append(problems, more...)
	o.ui, more = readUI(o.Config)
	problems = append(problems, more...)
	o.notify, more = readNotify(o.Config)
	problems = append(problems, more...)
	o.approvals, more = readApprovals(o.Config)
	problems = append(problems, more...)
	return m, p, problems
}

// loadTLS reads --ca-dir (the interception CA) and --upstream-ca (extra
// roots for ERP TLS, beside the system's). Without --upstream-ca, upstream
// is nil: system roots only.
func (o *serveOptions) loadTLS() (authority *ca.Authority, upstream *tls.Config, problems []string) {
	if o.CADir != "" {
		a, err := ca.Load(o.CADir, ca.Options{})
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v (make one with 'uapk-proxy ca init --out DIR')", o.flag("ca-dir"), err))
		}
		authority = a
	}
	if o.UpstreamCA != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pemData, err := os.ReadFile(o.UpstreamCA)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", o.flag("upstream-ca"), err))
		case !pool.AppendCertsFromPEM(pemData):
			problems = append(problems, fmt.Sprintf("%s %q: no PEM certificate in it", o.flag("upstream-ca"), o.UpstreamCA))
		default:
			upstream = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	return authority, upstream, problems
}

// describe turns a load error into lines, one per validation problem.
func describe(file string, err error) []string {
	var ve *rules.ValidationError
	if errors.As(err, &ve) {
		out := make([]string, 0, len(ve.Problems))
		for _, pr := range ve.Problems {
			out = append(out, fmt.Sprintf("%s: %s", file, pr))
		}
		return out
	}
	return []string{fmt.Sprintf("%s: %v", file, err)}
}

// runServe starts everything, waits for ctx, then drains and stops.
// started, if set, receives the running server (tests use it).
func runServe(ctx context.Context, o *serveOptions, logw io.Writer, started func(*server.Server)) error {
	s, err := startServer(o, logw)
	if err != nil {
		return err
	}
	if started != nil {
		started(s)
	}
	select {
	case <-ctx.Done():
	case err = <-s.Err():
		log := s.Log()
		log.Error().Err(err).Msg("a listener failed; shutting down")
	}
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return exitf(1, "%v", err)
	}
	return nil
}

// maxResponse is --max-response in bytes; unset (a test's options) is the
// default.
func (o *serveOptions) maxResponse() (int64, error) {
	if o.MaxResponse == "" {
		return proxy.DefaultMaxResponse, nil
	}
	n, err := parseSize(o.MaxResponse)
	return int64(n), err
}

// startServer checks o and starts the server it describes.
func startServer(o *serveOptions, logw io.Writer) (*server.Server, error) {
	m, principals, problems := o.load()
	if len(problems) > 0 {
		return nil, exitf(2, "invalid configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	maxBody, _ := parseSize(o.MaxBody)       // checked by load
	maxResp, _ := o.maxResponse()            // checked by load
	authority, upstreamTLS, _ := o.loadTLS() // checked by load
	level, _ := zerolog.ParseLevel(o.LogLevel)
	cred, err := startCredential(o.upstreamAuth, upstreamTLS, logw)
	if err != nil {
		return nil, err
	}
	ident, err := startIdentity(o.identity, upstreamTLS, o.now, logw)
	if err != nil {
		return nil, err
	}
	cfg := server.Config{
		Manifest: m, ManifestFile: o.Manifest, Principals: principals, PrincipalsFile: o.Principals,
		Upstream: o.Upstream, SidecarAddr: o.SidecarAddr, ProxyAddr: o.ProxyAddr, AdminAddr: o.AdminAddr,
		DataDir: o.DataDir, MaxBody: maxBody, MaxResponse: maxResp, CA: authority, UpstreamTLS: upstreamTLS,
		UpstreamCAFile: o.UpstreamCA, LogLevel: level, Grace: o.Grace, Version: version, UpstreamTimeout: o.UpstreamTimeout,
		SegmentRecords: o.archive.SegmentRecords, SegmentInterval: o.segmentEvery,
		Now: o.now, ExpiryEvery: o.expiryEvery, Dial: o.dial, AdminTokensFile: o.AdminTokens,
		RefusalSummaryEvery: o.refusalEvery, Identity: ident,
		UIURL: o.ui.URL, UITLSCert: o.ui.TLSCert, UITLSKey: o.ui.TLSKey, Notify: o.notify,
		Postgres: o.approvals.Postgres, Instance: o.approvals.Instance,
		ArchiveInstance: archiveInstance(o.archive, o.approvals),
	}
	if cred != nil {
		cfg.Credential, cfg.CredentialReady, cfg.CredentialOrigins = cred, cred.Ready, o.credentialOrigins
	}
	if s3 := o.archive.S3; s3 != nil {
		cfg.S3 = &server.S3{Bucket: s3.Bucket, Prefix: s3.Prefix, Region: s3.Region, Endpoint: s3.Endpoint, PathStyle: s3.PathStyle}
	}
	s, err := server.Start(cfg, logw)
	var se *server.StartError
	if errors.As(err, &se) {
		return nil, exitf(se.Code, "%v", se.Err)
	}
	return s, err
}
