package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
)

// Timeouts of the forward door; every phase has one.
const (
	fwdHeaderTimeout    = 10 * time.Second  // request line and headers; TLS handshake in a tunnel
	fwdReadTimeout      = 60 * time.Second  // whole request with body (lifted once the body is in)
	fwdWriteTimeout     = 60 * time.Second  // writing the answer, from when it is ready
	fwdIdleTimeout      = 120 * time.Second // keep-alive between requests, outside and inside tunnels
	fwdDialTimeout      = 10 * time.Second  // TCP connect to the ERP or a tunnel host
	fwdTLSTimeout       = 10 * time.Second  // TLS handshake with the ERP
	fwdTunnelIdle       = 5 * time.Minute   // a blind tunnel with no byte either way is closed
	fwdConnectReplyWait = 10 * time.Second  // after "200 Connection established", the client's first byte
)

// ForwardConfig configures the forward proxy door.
type ForwardConfig struct {
	Gate *gate.Gate
	// MaxBody is the largest request body accepted (default 10 MiB); above
	// it the answer is 413 and nothing is forwarded.
	MaxBody int
	// MaxResponse is the largest ERP answer relayed (default 64 MiB). An
	// answer that says it is larger gets a 502; one that grows past it
	// while streaming is cut off, and its forward record says so.
	MaxResponse int64
	// CA, when set, turns on interception of every CONNECT. Without it only
	// tunnel_hosts may be tunnelled, blind.
	CA *ca.Authority
	// TLS verifies ERPs reached over https; nil means the system roots.
	// Verification is always on.
	TLS    *tls.Config
	Logger zerolog.Logger
	// UpstreamTimeout bounds one ERP exchange, body included (default 30s).
	UpstreamTimeout time.Duration
	// MaxIdleConnsPerHost sizes the pool of kept-alive ERP connections
	// (default 256; net/http's default of 2 halves the throughput).
	MaxIdleConnsPerHost int
	// DialContext dials ERPs and tunnel hosts (default net.Dialer). Tests
	// use it to map a host name to a loopback server.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Credential, when set, is the ERP credential, set on requests to
	// CredentialOrigins only (scheme://host:port, CredentialOrigin's
	// form); any credential the agent sends is removed from every
	// forwarded request. The agent chooses where a forward-door request
	// goes (any host the manifest names, any port, http or https), so the
	// credential never follows it anywhere but an origin named for it.
	// Blind tunnels carry none.
	Credential        Credential
	CredentialOrigins []string
}

// Forward is the door HTTP_PROXY/HTTPS_PROXY clients use: absolute-URI
// requests and CONNECT, through elazarl/goproxy, decided by the same gate
// as the sidecar.
//
// goproxy parses proxy requests, dispatches CONNECT and relays answers.
// Intercepted tunnels are served by a second net/http server (inner) fed
// with the decrypted connections, rather than by goproxy's own MITM loop:
// that way the requests inside a tunnel get net/http's timeouts, a context
// cancelled when the client hangs up (held requests need it) and a graceful
// shutdown, and then go through the same goproxy handlers as plain ones.
type Forward struct {
	gate    *gate.Gate
	ca      *ca.Authority
	proxy   *goproxy.ProxyHttpServer
	tr      *http.Transport
	freshTr *http.Transport // for requests on an approval: a new connection each
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	outer   *http.Server
	inner   *http.Server
	innerLn *chanListener
	ln      atomic.Pointer[trackingListener]
	maxBody int
	maxResp int64
	timeout time.Duration
	log     zerolog.Logger
	cred    Credential
	origins map[string]bool // where cred may go

	holdCtx  context.Context // cancelled when shutdown begins: held agents get their 202
	stopHold context.CancelFunc

	conns    connSet        // tunnel connections, closed at shutdown; CONNECTs being set up
	serving  sync.WaitGroup // the inner server
	startOne sync.Once
}

// NewForward checks the configuration and builds the door.
func NewForward(cfg ForwardConfig) (*Forward, error) {
	if cfg.Gate == nil {
		return nil, errors.New("forward door needs a gate")
	}
	f := &Forward{gate: cfg.Gate, ca: cfg.CA, maxBody: cfg.MaxBody, maxResp: cfg.MaxResponse,
		timeout: cfg.UpstreamTimeout, log: cfg.Logger, dial: cfg.DialContext, cred: cfg.Credential,
		origins: map[string]bool{}}
	for _, o := range cfg.CredentialOrigins {
		key, err := CredentialOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("upstream_auth.origins: %w", err)
		}
		f.origins[key] = true
	}
	if f.maxBody <= 0 {
		f.maxBody = DefaultMaxBody
	}
	if f.maxResp <= 0 {
		f.maxResp = DefaultMaxResponse
	}
	if f.timeout <= 0 {
		f.timeout = 30 * time.Second
	}
	if f.dial == nil {
		f.dial = (&net.Dialer{Timeout: fwdDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	perHost := cfg.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = 256
	}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.InsecureSkipVerify = false
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	f.tr = newUpstreamTransport(f.dial, tlsCfg, perHost, f.timeout)
	f.freshTr = newUpstreamTransport(f.dial, tlsCfg, perHost, f.timeout)
	f.freshTr.DisableKeepAlives = true
	f.holdCtx, f.stopHold = context.WithCancel(context.Background())

	p := goproxy.NewProxyHttpServer()
	// NewProxyHttpServer reads HTTPS_PROXY and defaults to a transport that
	// skips TLS verification and obeys HTTP_PROXY: replace all of it.
	p.Tr = f.tr
	p.ConnectDial = nil
	p.ConnectDialWithReq = f.dialTunnel
	p.ConnectionErrHandler = f.tunnelFailed
	p.KeepAcceptEncoding = true // the agent's Accept-Encoding goes to the ERP, the ERP's encoding back
	p.Logger = goproxyLogger{cfg.Logger}
	p.NonproxyHandler = http.HandlerFunc(notAProxyRequest)
	p.OnRequest().HandleConnectFunc(f.onConnect)
	p.OnRequest().DoFunc(f.onRequest)
	p.OnResponse().DoFunc(f.onResponse)
	f.proxy = p

	errLog := log.New(logWriter{cfg.Logger}, "", 0)
	f.outer = &http.Server{
		Handler:           http.HandlerFunc(f.serveOuter),
		ReadHeaderTimeout: fwdHeaderTimeout,
		ReadTimeout:       fwdReadTimeout,
		IdleTimeout:       fwdIdleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          errLog,
	}
	if f.ca != nil {
		f.innerLn = newChanListener()
		f.inner = &http.Server{
			Handler:           http.HandlerFunc(f.serveInner),
			ReadHeaderTimeout: fwdHeaderTimeout, // also bounds the TLS handshake
			ReadTimeout:       fwdReadTimeout,
			IdleTimeout:       fwdIdleTimeout,
			MaxHeaderBytes:    1 << 20,
			ErrorLog:          errLog,
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if t := tunnelOf(c); t != nil {
					return context.WithValue(ctx, tunnelKey{}, t)
				}
				return ctx
			},
		}
	}
	return f, nil
}

func newUpstreamTransport(dial func(context.Context, string, string) (net.Conn, error), tlsCfg *tls.Config, perHost int, timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                  nil, // never the proxy's own *_PROXY environment
		DialContext:            dial,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    fwdTLSTimeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConns:           4 * perHost,
		MaxIdleConnsPerHost:    perHost,
		MaxResponseHeaderBytes: 1 << 20,
		DisableCompression:     true, // relay the ERP's bytes as they are; the hash is of those
	}
}

// Transport returns the transport used for ERPs (tests check its settings).
func (f *Forward) Transport() *http.Transport { return f.tr }

// Serve accepts agent connections on ln until Shutdown.
func (f *Forward) Serve(ln net.Listener) error {
	f.startOne.Do(func() {
		if f.inner == nil {
			return
		}
		f.serving.Add(1)
		go func() {
			defer f.serving.Done()
			if err := f.inner.Serve(f.innerLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				f.log.Error().Err(err).Msg("forward door: intercepted connections no longer served")
			}
		}()
	})
	tl := newTrackingListener(ln)
	f.ln.Store(tl)
	if err := f.outer.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting, answers held agents with their 202, waits for
// requests in flight until ctx ends, then closes every tunnel and the idle
// ERP connections.
func (f *Forward) Shutdown(ctx context.Context) error {
	f.stopHold()
	var wg sync.WaitGroup
	var outerErr, innerErr error
	wg.Add(1)
	go func() { defer wg.Done(); outerErr = f.outer.Shutdown(ctx) }()
	if f.inner != nil {
		wg.Add(1)
		go func() { defer wg.Done(); innerErr = f.inner.Shutdown(ctx) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		// A connection that never sent a byte is not a request in flight.
		if tl := f.ln.Load(); tl != nil {
			tl.closeSilent()
		}
		select {
		case <-done:
			waiting = false
		case <-tick.C:
		}
	}
	f.conns.closeAll()
	f.conns.wait()
	if f.innerLn != nil {
		f.innerLn.Close()
	}
	f.serving.Wait()
	f.tr.CloseIdleConnections()
	f.freshTr.CloseIdleConnections()
	return errors.Join(outerErr, innerErr)
}

// goproxyLogger routes goproxy's own messages (mostly broken tunnels) to
// zerolog at debug level.
type goproxyLogger struct{ l zerolog.Logger }

func (g goproxyLogger) Printf(format string, args ...any) {
	g.l.Debug().Str("library", "goproxy").Msg(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// logWriter routes net/http's server errors (bad requests, failed TLS
// handshakes of clients that do not trust the CA) to zerolog.
type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Warn().Str("door", "forward").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
