package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/proxy"
	"github.com/uapk-gateway/uapk-proxy/rules"
	"github.com/uapk-gateway/uapk-proxy/tokens"
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
	CADir       string
	UpstreamCA  string
	Config      string
	LogLevel    string
	PrintConfig bool

	now         func() time.Time // the gate's clock; tests stand it anywhere in the week
	expiryEvery time.Duration    // how often pending approvals are checked for expiry
	sources     map[string]string
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
			return runServe(ctx, o, cmd.ErrOrStderr(), nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Manifest, "manifest", "", "policy manifest, JSON or YAML (required)")
	f.StringVar(&o.Principals, "principals", "", "principals file: people, roles and public keys (YAML)")
	f.StringVar(&o.Upstream, "upstream", "", "ERP base URL; turns the sidecar door on")
	f.StringVar(&o.SidecarAddr, "sidecar-addr", "127.0.0.1:8081", "sidecar (reverse proxy) door address")
	f.StringVar(&o.ProxyAddr, "proxy-addr", "127.0.0.1:8080", "forward proxy door address (HTTP_PROXY)")
	f.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:8090", "admin API, health and metrics address")
	f.StringVar(&o.DataDir, "data-dir", "./data", "ledger, gateway key and local archive")
	f.StringVar(&o.MaxBody, "max-body", "10MiB", "largest request body forwarded; above it 413 (e.g. 10MiB, 512KiB)")
	f.StringVar(&o.CADir, "ca-dir", "", "this install's CA (from 'ca init') for HTTPS interception")
	f.StringVar(&o.UpstreamCA, "upstream-ca", "", "extra PEM bundle trusted for ERP TLS")
	f.StringVar(&o.Config, "config", "", "YAML file with any of these flags as keys (dashes as underscores)")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.PrintConfig, "print-config", false, "print the effective configuration and exit")
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

// server is a running proxy: the doors, the admin API and what they share.
type server struct {
	log       zerolog.Logger
	ledger    *ledger.Ledger
	approvals *approvals.Store
	gate      *proxy.Gate
	sidecar   *proxy.Sidecar
	admin     *http.Server

	SidecarAddr net.Addr
	AdminAddr   net.Addr

	wg   sync.WaitGroup
	errc chan error
	stop chan struct{}
}

// expireLoop closes approvals whose ttl has passed, each with a record.
func (s *server) expireLoop(every time.Duration) {
	defer s.wg.Done()
	if every <= 0 {
		every = 15 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n, err := s.gate.ExpireDue(); err != nil {
				s.log.Error().Err(err).Msg("expiring approvals failed")
			} else if n > 0 {
				s.log.Info().Int("expired", n).Msg("approvals expired")
			}
		}
	}
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
	if o.Upstream == "" {
		problems = append(problems, "--upstream is required: the sidecar door is the only door in this release")
	}
	for _, f := range []struct{ name, addr string }{{"sidecar-addr", o.SidecarAddr}, {"admin-addr", o.AdminAddr}} {
		if _, _, err := net.SplitHostPort(f.addr); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q: %v", o.flag(f.name), f.addr, err))
		}
	}
	if _, err := parseSize(o.MaxBody); err != nil {
		problems = append(problems, o.flag("max-body")+": "+err.Error())
	}
	if o.DataDir == "" {
		problems = append(problems, "--data-dir must not be empty")
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		problems = append(problems, fmt.Sprintf("%s %q: want debug, info, warn or error", o.flag("log-level"), o.LogLevel))
	}
	return m, p, problems
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
func runServe(ctx context.Context, o *serveOptions, logw io.Writer, started func(*server)) error {
	s, err := startServer(o, logw)
	if err != nil {
		return err
	}
	if started != nil {
		started(s)
	}
	select {
	case <-ctx.Done():
	case err = <-s.errc:
		s.log.Error().Err(err).Msg("a listener failed; shutting down")
	}
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return exitf(1, "%v", err)
	}
	return nil
}

func startServer(o *serveOptions, logw io.Writer) (*server, error) {
	m, principals, problems := o.load()
	if len(problems) > 0 {
		return nil, exitf(2, "invalid configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	maxBody, _ := parseSize(o.MaxBody) // checked by load
	level, _ := zerolog.ParseLevel(o.LogLevel)
	log := zerolog.New(logw).Level(level).With().Timestamp().Str("component", "uapk-proxy").Logger()
	for _, w := range m.Warnings() {
		log.Warn().Str("path", w.Path).Msg("manifest: " + w.Message)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, exitf(2, "data dir: %v", err)
	}
	gwKey, created, err := keys.LoadOrCreate(filepath.Join(o.DataDir, "gateway.key"))
	if err != nil {
		return nil, exitf(2, "gateway key: %v", err)
	}
	if created {
		log.Info().Str("path", filepath.Join(o.DataDir, "gateway.key")).Msg("created the gateway key")
	}
	l, err := ledger.Open(filepath.Join(o.DataDir, "ledger.db"), ledger.Options{})
	if err != nil {
		return nil, exitf(2, "ledger: %v", err)
	}
	s := &server{log: log, ledger: l, errc: make(chan error, 3)}
	fail := func(code int, err error) (*server, error) {
		l.Close()
		return nil, exitf(code, "%v", err)
	}
	if s.approvals, err = approvals.Open(l.DB()); err != nil {
		return fail(1, err)
	}
	if err := tokens.Init(l.DB()); err != nil {
		return fail(1, err)
	}
	issuer, err := tokens.NewIssuer(gwKey)
	if err != nil {
		return fail(2, err)
	}
	if err := recordConfig(l, m, o, gwKey.Public().(ed25519.PublicKey)); err != nil {
		return fail(1, fmt.Errorf("ledger: record the configuration: %w", err))
	}
	s.gate, err = proxy.NewGate(proxy.GateConfig{
		Engine: rules.NewEngine(m, principals), Ledger: l, Approvals: s.approvals, Tokens: issuer, Logger: log, Now: o.now,
	})
	if err != nil {
		return fail(1, err)
	}
	s.sidecar, err = proxy.NewSidecar(proxy.SidecarConfig{
		Gate: s.gate, Upstream: o.Upstream, MaxBody: int(maxBody), Logger: log,
	})
	if err != nil {
		return fail(2, err)
	}
	sideLn, err := net.Listen("tcp", o.SidecarAddr)
	if err != nil {
		return fail(2, fmt.Errorf("--sidecar-addr: %w", err))
	}
	adminLn, err := net.Listen("tcp", o.AdminAddr)
	if err != nil {
		sideLn.Close()
		return fail(2, fmt.Errorf("--admin-addr: %w", err))
	}
	s.SidecarAddr, s.AdminAddr = sideLn.Addr(), adminLn.Addr()
	s.admin = &http.Server{
		Handler: proxy.NewAdmin(proxy.AdminConfig{Ledger: l, Approvals: s.approvals, Gate: s.gate, Logger: log, Now: o.now,
			GatewayKey: gwKey.Public().(ed25519.PublicKey)}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.stop = make(chan struct{})
	s.wg.Add(3)
	go s.expireLoop(o.expiryEvery)
	go func() {
		defer s.wg.Done()
		if err := s.sidecar.Serve(sideLn); err != nil {
			s.errc <- fmt.Errorf("sidecar door: %w", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("admin API: %w", err)
		}
	}()
	log.Info().Str("sidecar_addr", s.SidecarAddr.String()).Str("admin_addr", s.AdminAddr.String()).
		Str("upstream", o.Upstream).Str("app", m.AppID).Str("policy", m.Hash).Uint64("ledger_head", l.Head().Seq).
		Msg("listening")
	return s, nil
}

// Close stops accepting, lets in-flight requests finish, then flushes and
// closes the ledger.
func (s *server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if err := s.sidecar.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("sidecar shutdown: %w", err))
	}
	close(s.stop)
	if err := s.admin.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
	}
	s.wg.Wait()
	if err := s.ledger.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ledger close: %w", err))
	}
	s.log.Info().Msg("stopped")
	return errors.Join(errs...)
}

// recordConfig writes a config record at every start, so the chain says
// which manifest and gateway key were in force from which seq on.
func recordConfig(l *ledger.Ledger, m *rules.Manifest, o *serveOptions, gw ed25519.PublicKey) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Append(ctx, ledger.Entry{
		Kind: ledger.KindConfig, App: m.AppID, Decision: "", Reason: "start", Policy: m.Hash,
		Data: map[string]any{
			"manifest_file":    o.Manifest,
			"manifest_version": m.Version,
			"gateway_key":      base64.StdEncoding.EncodeToString(gw),
			"proxy_version":    version,
			"upstream":         o.Upstream,
		},
	})
	return err
}
