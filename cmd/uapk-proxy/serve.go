package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/metrics"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/proxy"
	"github.com/uapk-gateway/uapk-proxy/record"
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
	CADir       string
	UpstreamCA  string
	Config      string
	LogLevel    string
	PrintConfig bool
	Grace       time.Duration

	archive      *archiveFile  // the config file's archive: section
	segmentEvery time.Duration // archive.segment_interval, parsed

	now         func() time.Time // the gate's clock; tests stand it anywhere in the week
	expiryEvery time.Duration    // how often pending approvals are checked for expiry
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
			return runServe(ctx, o, cmd.ErrOrStderr(), nil)
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
	f.StringVar(&o.CADir, "ca-dir", "", "this install's CA (from 'ca init') for HTTPS interception")
	f.StringVar(&o.UpstreamCA, "upstream-ca", "", "extra PEM bundle trusted for ERP TLS")
	f.StringVar(&o.Config, "config", "", "YAML file with any of these flags as keys (dashes as underscores)")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.PrintConfig, "print-config", false, "print the effective configuration and exit")
	f.DurationVar(&o.Grace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long in-flight requests may take before the ledger closes")
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
	archiver  *archive.Archiver
	grace     time.Duration
	sidecar   *proxy.Sidecar // nil without --upstream
	forward   *proxy.Forward // nil with --proxy-addr ""
	admin     *http.Server

	SidecarAddr net.Addr // nil when the sidecar door is off
	ProxyAddr   net.Addr // nil when the forward door is off
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
	var archiveProblems []string
	o.archive, o.segmentEvery, archiveProblems = readArchive(o.Config)
	problems = append(problems, archiveProblems...)
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
	maxBody, _ := parseSize(o.MaxBody)       // checked by load
	authority, upstreamTLS, _ := o.loadTLS() // checked by load
	level, _ := zerolog.ParseLevel(o.LogLevel)
	base := zerolog.New(logw).Level(level).With().Timestamp().Logger()
	log := base.With().Str("component", "uapk-proxy").Logger()
	for _, w := range m.Warnings() {
		log.Warn().Str("path", w.Path).Msg("manifest: " + w.Message)
	}
	s := &server{log: log, errc: make(chan error, 4), grace: o.Grace}
	// Bind first: a start that cannot listen must leave nothing behind (no
	// data directory, gateway key or config record of a start that never
	// served).
	var listeners []net.Listener
	closeListeners := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	listen := func(flag, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners()
			return nil, exitf(2, "--%s: %v", flag, err)
		}
		listeners = append(listeners, ln)
		return ln, nil
	}
	var sideLn, proxyLn net.Listener
	var err error
	if o.Upstream != "" {
		if sideLn, err = listen("sidecar-addr", o.SidecarAddr); err != nil {
			return nil, err
		}
		s.SidecarAddr = sideLn.Addr()
	}
	if o.ProxyAddr != "" {
		if proxyLn, err = listen("proxy-addr", o.ProxyAddr); err != nil {
			return nil, err
		}
		s.ProxyAddr = proxyLn.Addr()
	}
	adminLn, err := listen("admin-addr", o.AdminAddr)
	if err != nil {
		return nil, err
	}
	s.AdminAddr = adminLn.Addr()
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		closeListeners()
		return nil, exitf(2, "data dir: %v", err)
	}
	gwKey, created, err := keys.LoadOrCreate(filepath.Join(o.DataDir, "gateway.key"))
	if err != nil {
		closeListeners()
		return nil, exitf(2, "gateway key: %v", err)
	}
	if created {
		log.Info().Str("path", filepath.Join(o.DataDir, "gateway.key")).Msg("created the gateway key")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The sources are read at scrape time, when everything below is set.
	mx := metrics.New(reg, version, metrics.Sources{
		Held: func() int { return s.gate.Held() },
		PendingByAction: func() (map[string]int, error) {
			now := time.Now
			if o.now != nil {
				now = o.now // the gate's clock decides what has expired
			}
			list, err := s.approvals.List(approvals.StatusPending, now())
			counts := map[string]int{}
			for _, a := range list {
				counts[a.Action]++
			}
			return counts, err
		},
		ArchiveBacklog: func() (uint64, float64) {
			st := s.archiver.Status()
			return st.Backlog, st.BacklogAgeSeconds
		},
	})
	l, err := ledger.Open(filepath.Join(o.DataDir, "ledger.db"), ledger.Options{OnCommit: mx.Commit})
	if err != nil {
		closeListeners()
		return nil, exitf(2, "ledger: %v", err)
	}
	s.ledger = l
	fail := func(code int, err error) (*server, error) {
		closeListeners()
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
	if err := recordConfig(l, m, o, principals, gwKey.Public().(ed25519.PublicKey), authority); err != nil {
		return fail(1, fmt.Errorf("ledger: record the configuration: %w", err))
	}
	s.gate, err = proxy.NewGate(proxy.GateConfig{
		Engine: rules.NewEngine(m, principals), Ledger: l, Approvals: s.approvals, Tokens: issuer, Logger: log, Now: o.now,
		Observer: mx,
	})
	if err != nil {
		return fail(1, err)
	}
	acfg := archive.Config{
		App: m.AppID, LocalDir: filepath.Join(o.DataDir, "archive"), SegmentRecords: o.archive.SegmentRecords,
		SegmentInterval: o.segmentEvery, Mode: m.Audit.StorageClass, RetentionYears: m.Audit.RetentionYears,
		Key: gwKey, Policy: m.Hash, Logger: base.With().Str("component", "archive").Logger(),
	}
	if o.archive.S3 != nil {
		acfg.LocalDir = ""
		acfg.S3 = &archive.S3Config{Bucket: o.archive.S3.Bucket, Prefix: o.archive.S3.Prefix, Region: o.archive.S3.Region,
			Endpoint: o.archive.S3.Endpoint, PathStyle: o.archive.S3.PathStyle}
	}
	if s.archiver, err = archive.New(l, acfg); err != nil {
		return fail(2, fmt.Errorf("archive: %w", err))
	}
	if o.Upstream != "" {
		s.sidecar, err = proxy.NewSidecar(proxy.SidecarConfig{
			Gate: s.gate, Upstream: o.Upstream, MaxBody: int(maxBody), Logger: log, TLS: upstreamTLS,
		})
		if err != nil {
			return fail(2, err)
		}
	}
	if o.ProxyAddr != "" {
		s.forward, err = proxy.NewForward(proxy.ForwardConfig{
			Gate: s.gate, MaxBody: int(maxBody), CA: authority, TLS: upstreamTLS, Logger: log, DialContext: o.dial,
		})
		if err != nil {
			return fail(2, err)
		}
	}
	live, err := evidence.NewLive(evidence.LiveConfig{Ledger: l, Approvals: s.approvals, GatewayKey: gwKey, Engine: s.gate.Engine})
	if err != nil {
		return fail(1, err)
	}
	evidenceHandler := evidence.NewHandler(live, evidence.HandlerOptions{Logger: log})
	var caPEM []byte
	if authority != nil {
		caPEM = authority.CertPEM()
	}
	s.admin = &http.Server{
		Handler: proxy.NewAdmin(proxy.AdminConfig{Ledger: l, Approvals: s.approvals, Gate: s.gate, Logger: log, Now: o.now,
			GatewayKey: gwKey.Public().(ed25519.PublicKey), CACert: caPEM,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			Archive: func() (any, error) { st := s.archiver.Status(); return st, st.Ready() },
			Extra:   func(mux *http.ServeMux) { mux.Handle("POST /v1/evidence", evidenceHandler) },
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.stop = make(chan struct{})
	s.wg.Add(2)
	go s.expireLoop(o.expiryEvery)
	go func() {
		// Not the signal context: on shutdown Close seals what is pending first.
		if err := s.archiver.Run(context.Background()); err != nil && !errors.Is(err, ledger.ErrClosed) {
			log.Error().Err(err).Msg("archiver stopped")
		}
	}()
	if s.sidecar != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.sidecar.Serve(sideLn); err != nil {
				s.errc <- fmt.Errorf("sidecar door: %w", err)
			}
		}()
	}
	if s.forward != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.forward.Serve(proxyLn); err != nil {
				s.errc <- fmt.Errorf("forward door: %w", err)
			}
		}()
	}
	go func() {
		defer s.wg.Done()
		if err := s.admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("admin API: %w", err)
		}
	}()
	ev := log.Info().Str("admin_addr", s.AdminAddr.String()).Str("app", m.AppID).Str("policy", m.Hash).
		Uint64("ledger_head", l.Head().Seq)
	if s.SidecarAddr != nil {
		ev = ev.Str("sidecar_addr", s.SidecarAddr.String()).Str("upstream", o.Upstream)
	}
	if s.ProxyAddr != nil {
		ev = ev.Str("proxy_addr", s.ProxyAddr.String()).Bool("intercept", authority != nil)
	}
	if authority != nil {
		ev = ev.Str("ca_sha256", authority.Fingerprint())
	}
	ev.Msg("listening")
	return s, nil
}

// Close stops accepting, lets in-flight requests finish, then flushes and
// closes the ledger.
func (s *server) Close() error {
	grace := s.grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	var doors sync.WaitGroup
	shut := func(name string, fn func(context.Context) error) {
		defer doors.Done()
		if err := fn(ctx); err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s shutdown: %w", name, err))
			mu.Unlock()
		}
	}
	if s.sidecar != nil {
		doors.Add(1)
		go shut("sidecar", s.sidecar.Shutdown)
	}
	if s.forward != nil {
		doors.Add(1)
		go shut("forward", s.forward.Shutdown)
	}
	doors.Wait()
	close(s.stop)
	if err := s.admin.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
	}
	s.wg.Wait()
	if err := s.archiver.Close(); err != nil {
		errs = append(errs, fmt.Errorf("archive close: %w", err))
	}
	if err := s.ledger.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ledger close: %w", err))
	}
	s.log.Info().Msg("stopped")
	return errors.Join(errs...)
}

// recordConfig writes a config record at every start, so the chain says
// which manifest, gateway key and principals were in force from which seq
// on: an auditor needs no file from the install to check who signed.
func recordConfig(l *ledger.Ledger, m *rules.Manifest, o *serveOptions, principals *rules.Principals, gw ed25519.PublicKey, authority *ca.Authority) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, sum, err := evidence.ConfigPrincipals(principals)
	if err != nil {
		return fmt.Errorf("principals: %w", err)
	}
	cfg := record.Config{
		ManifestFile:     o.Manifest,
		ManifestVersion:  m.Version,
		GatewayKey:       base64.StdEncoding.EncodeToString(gw),
		ProxyVersion:     version,
		Upstream:         o.Upstream,
		ProxyAddr:        o.ProxyAddr,
		UpstreamCA:       o.UpstreamCA,
		PrincipalsFile:   o.Principals,
		PrincipalsSHA256: sum,
		Principals:       list,
	}
	if authority != nil {
		// Which CA could intercept from this seq on.
		cfg.CASHA256 = authority.Fingerprint()
	}
	_, err = l.Append(ctx, ledger.Entry{
		Kind: record.KindConfig, App: m.AppID, Decision: record.None, Reason: record.Start, Policy: m.Hash, Data: cfg.Map(),
	})
	return err
}
