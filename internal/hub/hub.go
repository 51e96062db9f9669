// Package hub is `uapk-proxy hub`: the admin API and the approvers' desk
// of a fleet of proxies over their shared PostgreSQL approval store, with
// no doors and no state of its own. It reads the queue from the database
// and decides nothing: a decision posted to it is queued for the proxies,
// and the one holding the request checks it against its own principals and
// records it in its own ledger (Queue). Any number of hubs can run behind
// a load balancer.
package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/internal/pgstore"
	"github.com/uapk-gateway/uapk-proxy/internal/server"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/proxy"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Config is a checked hub configuration.
type Config struct {
	// Postgres is approvals.postgres, the fleet's database (required);
	// Instance names this hub in the rows it queues (default the host
	// name).
	Postgres, Instance string
	// Principals are who may sign in to the desk, with their roles and
	// passkeys (nil: nobody). The proxies check decisions against their
	// own principals, not these.
	Principals *rules.Principals
	AdminAddr  string
	// DataDir holds the generated admin.token when AdminTokensFile is "".
	DataDir         string
	AdminTokensFile string
	AdminTokens     *adminauth.Set // a fixed set (tests)
	// Identity proves an override request's requested_by (identity:).
	Identity gate.Identity
	// UIURL is the desk's public URL (ui.url, already checked; "" is
	// http://localhost:ADMINPORT); UITLSCert and UITLSKey serve TLS.
	UIURL, UITLSCert, UITLSKey string
	LogLevel                   zerolog.Level
	Version                    string
	Now                        func() time.Time
	// Wait is how long a posted decision waits for a proxy's answer before
	// 202 queued (default DefaultWait).
	Wait time.Duration
}

// Hub is a running hub.
type Hub struct {
	log       zerolog.Logger
	store     *pgstore.Store
	admin     *http.Server
	AdminAddr net.Addr
	UIURL     string
	stopWatch context.CancelFunc
	wg        sync.WaitGroup
	errc      chan error
}

// noLedger is the hub store's ledger: the hub writes nothing.
type noLedger struct{}

func (noLedger) Append(context.Context, ledger.Entry) (ledger.Record, error) {
	return ledger.Record{}, errNoLedger
}

// Start connects to the database and serves the admin API and the desk.
func Start(c Config, logw io.Writer) (*Hub, error) {
	log := zerolog.New(logw).Level(c.LogLevel).With().Timestamp().Str("component", "uapk-hub").Logger()
	if c.Postgres == "" {
		return nil, &server.StartError{Code: 2, Err: errors.New("the hub needs approvals.postgres in --config: the fleet's shared approval store")}
	}
	ln, err := net.Listen("tcp", c.AdminAddr)
	if err != nil {
		return nil, &server.StartError{Code: 2, Err: fmt.Errorf("--admin-addr: %v", err)}
	}
	fail := func(code int, err error) (*Hub, error) {
		ln.Close()
		return nil, &server.StartError{Code: code, Err: err}
	}
	if c.AdminTokensFile == "" && c.AdminTokens == nil {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return fail(2, fmt.Errorf("data dir: %v", err))
		}
	}
	auth, err := server.AdminAuth(c.AdminTokensFile, c.AdminTokens, c.DataDir, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var opts []pgstore.Option
	if c.Instance != "" {
		opts = append(opts, pgstore.Instance(c.Instance))
	}
	store, err := pgstore.Open(ctx, c.Postgres, noLedger{}, log.With().Str("component", "pgstore").Logger(), opts...)
	cancel()
	if err != nil {
		return fail(2, fmt.Errorf("approvals.postgres: %w", err))
	}
	h := &Hub{log: log, store: store, AdminAddr: ln.Addr(), errc: make(chan error, 1)}
	uiURL := c.UIURL
	if uiURL == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		uiURL = "http://localhost:" + port
	}
	rp, err := passkey.OriginOf(uiURL)
	if err != nil {
		store.Close()
		return fail(2, fmt.Errorf("ui.url: %w", err))
	}
	h.UIURL = uiURL
	q := NewQueue(store, c.Now, c.Wait)
	principals := c.Principals
	if principals == nil {
		principals = &rules.Principals{}
	}
	ui, err := desk.New(desk.Config{Approvals: q, Principals: func() *rules.Principals { return principals },
		RP: rp, Now: c.Now, Logger: log.With().Str("component", "desk").Logger(),
		// Every hub behind the balancer serves every signed-in browser.
		Sessions: store.DeskSessions()})
	if err != nil {
		store.Close()
		return fail(1, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(backlogCollector{store})
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return store.Ping(ctx)
	}
	h.admin = &http.Server{
		Handler: proxy.NewAdmin(proxy.AdminConfig{Approvals: q, Logger: log, Now: c.Now, Auth: auth, Identity: c.Identity,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), UI: ui,
			Ready: map[string]func() error{"postgres": ping}}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	wctx, wcancel := context.WithCancel(context.Background())
	h.stopWatch = wcancel
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		_ = store.Watch(wctx, q.Notified)
	}()
	go func() {
		defer h.wg.Done()
		if err := server.ServeAdmin(h.admin, ln, c.UITLSCert, c.UITLSKey); err != nil {
			h.errc <- err
		}
	}()
	log.Info().Str("admin_addr", h.AdminAddr.String()).Str("ui_url", uiURL+"/ui/").Str("instance", store.InstanceName()).
		Str("role", "hub").Msg("listening")
	return h, nil
}

// Err receives the failure of the listener.
func (h *Hub) Err() <-chan error { return h.errc }

// Log is the hub's logger.
func (h *Hub) Log() zerolog.Logger { return h.log }

// Close stops serving, waiting up to grace for requests in flight (a
// decision waiting for its proxy among them).
func (h *Hub) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := h.admin.Shutdown(ctx)
	h.stopWatch()
	h.wg.Wait()
	h.store.Close()
	h.log.Info().Msg("stopped")
	return err
}

// backlogCollector reports what waits in the relayed queue at scrape time.
type backlogCollector struct{ store *pgstore.Store }

var (
	backlogDesc = prometheus.NewDesc("uapk_hub_relay_backlog", "Decisions and override requests queued at hubs that no proxy has answered yet.", nil, nil)
	oldestDesc  = prometheus.NewDesc("uapk_hub_relay_oldest_seconds", "How long the oldest unanswered one has waited.", nil, nil)
)

func (backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc; ch <- oldestDesc }

func (b backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, oldest, err := b.store.RelayBacklog(ctx)
	if err != nil {
		// -1: unknown. An invalid metric would fail the whole scrape.
		n, oldest = -1, -time.Second
	}
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest.Seconds())
}
