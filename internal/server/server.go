// Package server assembles a running uapk-proxy from a checked
// configuration: the ledger, the approvals service and its store, the gate,
// the doors, the archiver and the admin API, in the order that lets each
// fail cleanly, and their shutdown in the reverse order.
package server

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
	"github.com/uapk-gateway/uapk-proxy/internal/cumulative"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/metrics"
	"github.com/uapk-gateway/uapk-proxy/internal/notify"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/proxy"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Config is a checked configuration: the command line has read and
// validated every file and flag it names.
type Config struct {
	Manifest       *rules.Manifest
	ManifestFile   string
	Principals     *rules.Principals // nil: nobody can approve
	PrincipalsFile string

	Upstream    string // ERP base URL; "" turns the sidecar door off
	SidecarAddr string
	ProxyAddr   string // "" turns the forward door off
	AdminAddr   string
	DataDir     string
	MaxBody     int64
	MaxResponse int64
	// UpstreamTimeout bounds one ERP exchange (0: the doors' 30s).
	UpstreamTimeout time.Duration

	CA             *ca.Authority // nil: no interception
	UpstreamTLS    *tls.Config   // nil: system roots
	UpstreamCAFile string

	LogLevel zerolog.Level
	Grace    time.Duration // how long in-flight requests may take at shutdown
	Version  string

	S3              *S3 // nil: the archive is DATA/archive
	SegmentRecords  int
	SegmentInterval time.Duration

	// AdminTokensFile is --admin-tokens, read again when it changes; ""
	// (and AdminTokens nil): the generated DATA/admin.token, written at
	// first start. AdminTokens, when set, is a fixed set (tests).
	AdminTokensFile string
	AdminTokens     *adminauth.Set
	// Identity verifies callers' X-UAPK-On-Behalf-Of tokens (identity:);
	// nil: the header is taken as asserted.
	Identity gate.Identity
	// Credential is the ERP credential the doors set (upstream_auth:);
	// CredentialReady, with it, reports whether it is usable, for /readyz.
	Credential      proxy.Credential
	CredentialReady func() error
	// CredentialOrigins are the only origins the forward door sends the
	// credential to (upstream_auth.origins); the sidecar door sends it to
	// --upstream.
	CredentialOrigins []string
	// Postgres, when set (approvals.postgres), keeps the approvals in a
	// PostgreSQL shared by a fleet of proxies instead of the ledger's
	// bbolt file; Instance names this proxy among them.
	Postgres, Instance string
	// ArchiveInstance puts the archive under PREFIX/APP/INSTANCE/ (a
	// fleet's proxies side by side); "" is PREFIX/APP/.
	ArchiveInstance string
	// Notify, when set, tells approvers by mail and webhooks (notify:);
	// its UIURL, Record and Logger are filled in here.
	Notify *notify.Config
	// UIURL is the dashboard's public URL (ui.url), already checked; ""
	// is http://localhost:ADMINPORT. UITLSCert and UITLSKey, when set,
	// serve the admin address over TLS.
	UIURL, UITLSCert, UITLSKey string
	// RefusalSummaryEvery is how often refused admin calls are summed up
	// in a ledger record (default 1m).
	RefusalSummaryEvery time.Duration

	// Now is the gate's clock (tests stand it anywhere in the week).
	Now func() time.Time
	// ExpiryEvery is how often pending approvals are checked for expiry.
	ExpiryEvery time.Duration
	// Dial, if set, is how the forward door reaches ERPs and tunnel hosts;
	// tests map host names to loopback servers with it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// S3 is the archive's bucket.
type S3 struct {
	Bucket, Prefix, Region, Endpoint string
	PathStyle                        bool
}

// StartError is a failure to start, with the exit code it deserves: 2 for
// what the operator must fix in the configuration or the data directory, 1
// for what went wrong at run time.
type StartError struct {
	Code int
	Err  error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

func failf(code int, format string, args ...any) error {
	return &StartError{Code: code, Err: fmt.Errorf(format, args...)}
}

// noSpace makes a start that failed because the ledger's volume is full
// (err wraps ENOSPC or EDQUOT) a failure the operator must fix, code 2,
// saying which file, how much is free and what to do; nil for any other
// error.
func noSpace(ledgerPath string, err error) *StartError {
	var ne *ledger.NoSpaceError
	if !errors.As(ledger.SpaceError(ledgerPath, err), &ne) {
		return nil
	}
	return &StartError{Code: 2, Err: fmt.Errorf("ledger: %w", ne)}
}

// Server is a running proxy: the doors, the admin API and what they share.
type Server struct {
	log       zerolog.Logger
	ledger    *ledger.Ledger
	approvals *approvals.Service
	gate      *gate.Gate
	archiver  *archive.Archiver
	grace     time.Duration
	sidecar   *proxy.Sidecar // nil without --upstream
	forward   *proxy.Forward // nil with --proxy-addr ""
	admin     *http.Server
	notifier  *notify.Notifier // nil without notify:
	shared    *pgstore.Store   // nil without approvals.postgres
	stopWatch context.CancelFunc

	// UIURL is the dashboard's public URL in force.
	UIURL string

	SidecarAddr net.Addr // nil when the sidecar door is off
	ProxyAddr   net.Addr // nil when the forward door is off
	AdminAddr   net.Addr

	wg   sync.WaitGroup
	errc chan error
	stop chan struct{}
}

// expireLoop closes approvals whose ttl has passed, each with a record.
func (s *Server) expireLoop(every time.Duration) {
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
			if n, err := s.approvals.ExpireDue(); err != nil {
				s.log.Error().Err(err).Msg("expiring approvals failed")
			} else if n > 0 {
				s.log.Info().Int("expired", n).Msg("approvals expired")
			}
		}
	}
}

// Err receives the first failure of a listener: the server should then be
// closed.
func (s *Server) Err() <-chan error { return s.errc }

// Log is the server's logger.
func (s *Server) Log() zerolog.Logger { return s.log }

// Ledger is the server's hash chain.
func (s *Server) Ledger() *ledger.Ledger { return s.ledger }

// Approvals is the approvals service.
func (s *Server) Approvals() *approvals.Service { return s.approvals }

// Gate is the gate both doors use.
func (s *Server) Gate() *gate.Gate { return s.gate }

// Forward is the forward door (nil when off).
func (s *Server) Forward() *proxy.Forward { return s.forward }

// Start opens the data directory, assembles the proxy and starts serving.
func Start(o Config, logw io.Writer) (*Server, error) {
	m, principals := o.Manifest, o.Principals
	maxBody, maxResp, authority, upstreamTLS := o.MaxBody, o.MaxResponse, o.CA, o.UpstreamTLS
	base := zerolog.New(logw).Level(o.LogLevel).With().Timestamp().Logger()
	log := base.With().Str("component", "uapk-proxy").Logger()
	for _, w := range m.Warnings() {
		log.Warn().Str("path", w.Path).Msg("manifest: " + w.Message)
	}
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
			return nil, failf(2, "--%s: %v", flag, err)
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
	}
	if o.ProxyAddr != "" {
		if proxyLn, err = listen("proxy-addr", o.ProxyAddr); err != nil {
			return nil, err
		}
	}
	adminLn, err := listen("admin-addr", o.AdminAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		closeListeners()
		return nil, failf(2, "data dir: %v", err)
	}
	gwKey, created, err := keys.LoadOrCreate(filepath.Join(o.DataDir, "gateway.key"))
	if err != nil {
		closeListeners()
		return nil, failf(2, "gateway key: %v", err)
	}
	if created {
		log.Info().Str("path", filepath.Join(o.DataDir, "gateway.key")).Msg("created the gateway key")
	}
	adminAuth, err := AdminAuth(o.AdminTokensFile, o.AdminTokens, o.DataDir, log)
	if err != nil {
		closeListeners()
		return nil, err
	}
	if o.Identity == nil {
		log.Warn().Msg("no identity configured: X-UAPK-On-Behalf-Of is taken as the agent asserts it, and records say caller_verified false")
	}
	s := &Server{log: log, errc: make(chan error, 4), grace: o.Grace, AdminAddr: adminLn.Addr()}
	if sideLn != nil {
		s.SidecarAddr = sideLn.Addr()
	}
	if proxyLn != nil {
		s.ProxyAddr = proxyLn.Addr()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The sources are read at scrape time, when everything below is set.
	mx := metrics.New(reg, o.Version, metrics.Sources{
		Held: func() int { return s.approvals.Held() },
		PendingByAction: func() (map[string]int, error) {
			// The service's clock (the gate's) decides what has expired.
			list, err := s.approvals.List(approvals.StatusPending)
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
		ArchiveUploads: func() (uint64, float64) {
			st := s.archiver.Status()
			return st.SlowUploads, st.InFlightSeconds
		},
		CommitInFlight: func() float64 { return s.ledger.InFlight().Seconds() },
	})
	ledgerPath := filepath.Join(o.DataDir, "ledger.db")
	l, err := ledger.Open(ledgerPath, ledger.Options{OnCommit: mx.Commit, StuckAfter: metrics.SlowCommit})
	if err != nil {
		closeListeners()
		if se := noSpace(ledgerPath, err); se != nil {
			return nil, se
		}
		return nil, failf(2, "ledger: %v", err)
	}
	s.ledger = l
	if l.Stats().JournalBytes == 0 {
		log.Warn().Str("path", ledgerPath+"-journal").
			Msg("ledger: too little free space to make the journal; every group of records is a bbolt commit (two syncs instead of one)")
	}
	fail := func(code int, err error) (*Server, error) {
		closeListeners()
		l.Close()
		if se := noSpace(ledgerPath, err); se != nil {
			return nil, se
		}
		return nil, failf(code, "%v", err)
	}
	// Before anything is let through, and before this start's config
	// record: every request the last run let through without recording
	// what came of it (a crash, kill -9, a full disk) gets its outcome
	// record, so the config record opens a run with nothing left open.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	recovered, err := l.Recover(rctx)
	rcancel()
	if err != nil {
		return fail(1, fmt.Errorf("ledger: %w", err))
	}
	if recovered > 0 {
		log.Warn().Int("outcome_records", recovered).
			Msg("the last run stopped with allowed requests whose ERP outcome was not recorded: each has an outcome record (crash_recovery, erp_received unknown)")
	}
	var store approvals.Store
	var shared *pgstore.Store
	if o.Postgres != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var opts []pgstore.Option
		if o.Instance != "" {
			opts = append(opts, pgstore.Instance(o.Instance))
		}
		shared, err = pgstore.Open(ctx, o.Postgres, l, log.With().Str("component", "pgstore").Logger(), opts...)
		cancel()
		if err != nil {
			return fail(2, fmt.Errorf("approvals.postgres: %w", err))
		}
		store = shared
		log.Info().Str("instance", shared.InstanceName()).Msg("approvals kept in PostgreSQL, shared by the fleet")
	} else {
		local, err := approvalstore.Open(l)
		if err != nil {
			return fail(1, err)
		}
		store = local
	}
	sums, err := cumulative.Open(l)
	if err != nil {
		return fail(1, err)
	}
	issuer, err := tokens.NewIssuer(gwKey)
	if err != nil {
		return fail(2, err)
	}
	if err := recordConfig(l, o, gwKey.Public().(ed25519.PublicKey), authority); err != nil {
		return fail(1, fmt.Errorf("ledger: record the configuration: %w", err))
	}
	engine := rules.NewEngine(m, principals)
	uiURL := o.UIURL
	if uiURL == "" {
		_, port, _ := net.SplitHostPort(s.AdminAddr.String())
		uiURL = "http://localhost:" + port
	}
	rp, err := passkey.OriginOf(uiURL)
	if err != nil {
		return fail(2, fmt.Errorf("ui.url: %w", err))
	}
	s.UIURL = uiURL
	var changed func(string, *approvals.Approval, string)
	if o.Notify != nil {
		an := &announcer{principals: func() *rules.Principals { return s.gate.Engine().Principals() }, ledger: l, app: m.AppID,
			policy: func() string { return s.gate.Engine().Manifest().Hash }, log: log}
		nc := *o.Notify
		nc.UIURL, nc.Record, nc.Now = uiURL, an.record, o.Now
		nc.Logger = base.With().Str("component", "notify").Logger()
		if an.n, err = notify.New(nc); err != nil {
			return fail(2, fmt.Errorf("notify: %w", err))
		}
		s.notifier, changed = an.n, an.changed
	}
	s.approvals, err = approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: issuer, RP: &rp, Changed: changed, Shared: shared != nil,
		Engine: func() *rules.Engine { return s.gate.Engine() }, Observer: mx, Logger: log, Now: o.Now})
	if err != nil {
		return fail(1, err)
	}
	s.gate, err = gate.New(gate.Config{
		Engine: engine, Ledger: l, Approvals: s.approvals, Logger: log, Now: o.Now, Observer: mx,
		Cumulative: sums, Identity: o.Identity,
	})
	if err != nil {
		return fail(1, err)
	}
	acfg := archive.Config{
		App: m.AppID, Instance: o.ArchiveInstance, LocalDir: filepath.Join(o.DataDir, "archive"), SegmentRecords: o.SegmentRecords,
		SegmentInterval: o.SegmentInterval, Mode: m.Audit.StorageClass, RetentionYears: m.Audit.RetentionYears,
		Key: gwKey, Policy: m.Hash, Logger: base.With().Str("component", "archive").Logger(),
	}
	if o.S3 != nil {
		acfg.LocalDir = ""
		acfg.S3 = &archive.S3Config{Bucket: o.S3.Bucket, Prefix: o.S3.Prefix, Region: o.S3.Region,
			Endpoint: o.S3.Endpoint, PathStyle: o.S3.PathStyle}
	}
	if s.archiver, err = archive.New(l, acfg); err != nil {
		return fail(2, fmt.Errorf("archive: %w", err))
	}
	if o.Upstream != "" {
		s.sidecar, err = proxy.NewSidecar(proxy.SidecarConfig{
			Gate: s.gate, Upstream: o.Upstream, MaxBody: int(maxBody), MaxResponse: int(maxResp), Logger: log, TLS: upstreamTLS,
			UpstreamTimeout: o.UpstreamTimeout, Credential: o.Credential, MaxHeaderBytes: maxHeaderBytes(o),
		})
		if err != nil {
			return fail(2, err)
		}
	}
	if o.ProxyAddr != "" {
		s.forward, err = proxy.NewForward(proxy.ForwardConfig{
			Gate: s.gate, MaxBody: int(maxBody), MaxResponse: int64(maxResp), CA: authority, TLS: upstreamTLS, Logger: log, DialContext: o.Dial,
			UpstreamTimeout: o.UpstreamTimeout, Credential: o.Credential, CredentialOrigins: o.CredentialOrigins,
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
	clock := o.Now
	if clock == nil {
		clock = time.Now
	}
	refused := &refusals{ledger: l, app: m.AppID, policy: m.Hash, now: clock, log: log, observe: mx.AdminRefused}
	ui, err := desk.New(desk.Config{Approvals: s.approvals, Principals: func() *rules.Principals { return s.gate.Engine().Principals() },
		RP: rp, Ledger: l, Now: o.Now, Logger: log.With().Str("component", "desk").Logger(),
		Verify: func(ctx context.Context) (bool, uint64, string) {
			rep, err := verifier.Verify(ctx, l)
			if err != nil {
				return false, 0, err.Error()
			}
			problem := ""
			if rep.Problem != nil {
				problem = fmt.Sprintf("record %d: %s", rep.Problem.Seq, rep.Problem.Reason)
			}
			return rep.OK, rep.Records, problem
		}})
	if err != nil {
		return fail(1, err)
	}
	var ready map[string]func() error
	if o.CredentialReady != nil {
		ready = map[string]func() error{"upstream_auth": o.CredentialReady}
	}
	s.admin = &http.Server{
		Handler: proxy.NewAdmin(proxy.AdminConfig{Ledger: l, Approvals: s.approvals, Logger: log, Now: o.Now,
			GatewayKey: gwKey.Public().(ed25519.PublicKey), CACert: caPEM,
			Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			Archive:  func() (any, error) { st := s.archiver.Status(); return st, st.Ready() },
			Evidence: evidenceHandler,
			Auth:     adminAuth, Refused: refused.add, Identity: o.Identity, Ready: ready, UI: ui,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.stop = make(chan struct{})
	if shared != nil {
		// Decisions made at other proxies wake the requests held here.
		s.shared = shared
		wctx, wcancel := context.WithCancel(context.Background())
		s.stopWatch = wcancel
		// What a hub queued is decided here when this proxy holds the
		// request, or when its holder does not take it.
		relay := newRelayTaker(shared, s.approvals, o.Identity, l.Healthy, log.With().Str("component", "relay").Logger())
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			_ = shared.Watch(wctx, func(id string) {
				if _, ok := pgstore.RelayID(id); ok {
					relay.notified(id)
					return
				}
				s.approvals.Remote(id)
			})
		}()
		go func() {
			defer s.wg.Done()
			relay.run(s.stop)
		}()
	}
	s.wg.Add(3)
	go refused.loop(cmp.Or(o.RefusalSummaryEvery, time.Minute), s.stop, s.wg.Done)
	go s.expireLoop(o.ExpiryEvery)
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
		if err := ServeAdmin(s.admin, adminLn, o.UITLSCert, o.UITLSKey); err != nil {
			s.errc <- err
		}
	}()
	ev := log.Info().Str("admin_addr", s.AdminAddr.String()).Str("ui_url", s.UIURL+"/ui/").Str("app", m.AppID).Str("policy", m.Hash).
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
func (s *Server) Close() error {
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
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if err := s.admin.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
	}
	s.wg.Wait()
	if s.notifier != nil {
		// Queued first attempts go out (their records with them) before
		// the ledger closes; retries still waiting are recorded as given up.
		nctx, ncancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.notifier.Close(nctx); err != nil {
			s.log.Warn().Err(err).Msg("notifications not all sent before shutdown")
		}
		ncancel()
	}
	if err := s.archiver.Close(); err != nil {
		errs = append(errs, fmt.Errorf("archive close: %w", err))
	}
	if s.shared != nil {
		s.shared.Close()
	}
	if err := s.ledger.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ledger close: %w", err))
	}
	s.log.Info().Msg("stopped")
	return errors.Join(errs...)
}

// ServeAdmin serves the admin API on ln until srv is shut down, over TLS
// when cert is set (ui.tls_cert, ui.tls_key); nil after a shutdown.
func ServeAdmin(srv *http.Server, ln net.Listener, cert, key string) error {
	var err error
	if cert != "" {
		err = srv.ServeTLS(ln, cert, key)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
}

// AdminAuth is the admin API's tokens: the --admin-tokens file (read
// again when it changes), a fixed set (tests), or else the generated
// DATA/admin.token, written at first start. Its errors are StartErrors.
func AdminAuth(file string, fixed *adminauth.Set, dataDir string, log zerolog.Logger) (proxy.AdminAuth, error) {
	switch {
	case file != "":
		ws, err := adminauth.Watch(file, nil, log)
		if err != nil {
			return nil, failf(2, "--admin-tokens: %v", err)
		}
		log.Info().Str("source", file).Int("tokens", ws.Len()).Msg("admin API requires a bearer token; the tokens file is read again when it changes")
		return ws, nil
	case fixed != nil:
		return fixed, nil
	}
	set, path, created, err := adminauth.LoadOrCreate(dataDir)
	if err != nil {
		return nil, failf(2, "admin token: %v", err)
	}
	if created {
		log.Info().Str("path", path).Msg("created the admin token (every scope); the CLI reads it from the data directory")
	}
	log.Info().Str("source", path).Msg("admin API requires a bearer token")
	return set, nil
}

// maxHeaderBytes is the sidecar door's bound on a request's headers: an
// identity token may be 8 KiB, so with identity the bound is 16 KiB (each
// open connection holds a buffer that large, so not without).
func maxHeaderBytes(o Config) int {
	if o.Identity != nil {
		return 16 << 10
	}
	return 0
}

// recordConfig writes a config record at every start, so the chain says
// which manifest, gateway key and principals were in force from which seq
// on: an auditor needs no file from the install to check who signed.
func recordConfig(l *ledger.Ledger, o Config, gw ed25519.PublicKey, authority *ca.Authority) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, sum, err := evidence.ConfigPrincipals(o.Principals)
	if err != nil {
		return fmt.Errorf("principals: %w", err)
	}
	cfg := record.Config{
		ManifestFile:     o.ManifestFile,
		ManifestVersion:  o.Manifest.Version,
		GatewayKey:       base64.StdEncoding.EncodeToString(gw),
		ProxyVersion:     o.Version,
		Upstream:         o.Upstream,
		ProxyAddr:        o.ProxyAddr,
		UpstreamCA:       o.UpstreamCAFile,
		PrincipalsFile:   o.PrincipalsFile,
		PrincipalsSHA256: sum,
		Principals:       list,
	}
	if authority != nil {
		// Which CA could intercept from this seq on.
		cfg.CASHA256 = authority.Fingerprint()
	}
	_, err = l.Append(ctx, ledger.Entry{
		Kind: record.KindConfig, App: o.Manifest.AppID, Decision: record.None, Reason: record.Start,
		Policy: o.Manifest.Hash, Data: cfg.Map(),
	})
	return err
}
