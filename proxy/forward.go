package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/internal/ca"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
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
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	outer   *http.Server
	inner   *http.Server
	innerLn *chanListener
	ln      atomic.Pointer[trackingListener]
	maxBody int
	timeout time.Duration
	log     zerolog.Logger

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
	f := &Forward{gate: cfg.Gate, ca: cfg.CA, maxBody: cfg.MaxBody, timeout: cfg.UpstreamTimeout, log: cfg.Logger, dial: cfg.DialContext}
	if f.maxBody <= 0 {
		f.maxBody = DefaultMaxBody
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
	return errors.Join(outerErr, innerErr)
}

// Context keys.
type (
	rcKey     struct{} // *http.ResponseController of the agent's request
	stateKey  struct{} // *fwdState of a CONNECT
	tunnelKey struct{} // *tunnel of an intercepted connection
)

// fwdState follows one request (or one CONNECT) through goproxy's handlers.
type fwdState struct {
	rc       *http.ResponseController
	call     *gate.Call
	verdict  *gate.Verdict
	upstream bool // the request was sent to the ERP
	cancel   context.CancelFunc
	start    time.Time
	tunnelUp atomic.Bool
}

// tunnel describes an intercepted CONNECT, for the requests inside it.
type tunnel struct {
	target string // host:port as the CONNECT named it
	scheme string // https, or http when the client spoke plain HTTP inside
	host   string // target for URLs: lower case, the scheme's default port dropped
	auth   string // the CONNECT's Proxy-Authorization, the app identity of what follows
}

func (f *Forward) serveOuter(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithValue(r.Context(), rcKey{}, http.NewResponseController(w))
	if r.Method == http.MethodConnect {
		ctx = context.WithValue(ctx, stateKey{}, &fwdState{start: time.Now()})
	}
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// serveInner takes a request read from an intercepted tunnel, makes its
// URL absolute from the CONNECT target and hands it to goproxy like any
// plain proxy request.
func (f *Forward) serveInner(w http.ResponseWriter, r *http.Request) {
	t, _ := r.Context().Value(tunnelKey{}).(*tunnel)
	if t == nil {
		http.Error(w, "no tunnel", http.StatusInternalServerError) // cannot happen: every inner conn is a tunnel
		return
	}
	c := &gate.Call{Door: "forward", URL: t.scheme + "://" + t.host + r.URL.RequestURI(),
		Req: rules.Request{Method: r.Method, App: f.gate.Engine().Manifest().AppID}}
	f.setApp(c, r.Header.Get(gate.HeaderApp), t.auth) // for the record; a bad identity is refused later anyway
	switch {
	case r.Method == http.MethodConnect:
		writeVerdictHTTP(w, f.gate.Refuse(c, record.ConnectInTunnel, record.Request{}))
		return
	case normalHost(t.scheme, r.Host) != t.host:
		writeVerdictHTTP(w, f.gate.Refuse(c, record.HostMismatch, record.Request{Connect: t.target, HostHeader: r.Host}))
		return
	}
	u := *r.URL
	u.Scheme, u.Host = t.scheme, t.host
	r.URL = &u
	f.serveOuter(w, r)
}

// onRequest decides a proxy request: the gate records it durably, then it
// is refused here or returned for goproxy to send.
func (f *Forward) onRequest(r *http.Request, pctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	st := &fwdState{start: time.Now()}
	st.rc, _ = r.Context().Value(rcKey{}).(*http.ResponseController)
	pctx.UserData = st
	t, _ := r.Context().Value(tunnelKey{}).(*tunnel)

	c, err := f.call(r, t)
	if err != nil {
		return nil, f.refuse(r, st, c, record.BadTarget, record.Request{Detail: err.Error()})
	}
	auth := r.Header.Get("Proxy-Authorization")
	if auth == "" && t != nil {
		auth = t.auth
	}
	if detail := f.setApp(c, r.Header.Get(gate.HeaderApp), auth); detail != "" {
		return nil, f.refuse(r, st, c, record.UnknownApp, record.Request{Detail: detail})
	}
	body, err := readBody(r, f.maxBody)
	if errors.Is(err, errBodyTooLarge) {
		resp := f.refuse(r, st, c, record.BodyTooLarge, record.Request{Limit: int64(f.maxBody), ContentLength: int(r.ContentLength)})
		resp.Close = true
		resp.Header.Set("Connection", "close")
		return nil, resp
	}
	if err != nil {
		f.log.Info().Err(err).Str("door", "forward").Msg("request body not read; nothing decided")
		return nil, jsonResponse(r, http.StatusBadRequest, badRequest("request body could not be read"))
	}
	c.Req.Body = body
	if st.rc != nil {
		// From here the connection's background read only watches for the
		// agent hanging up; ReadTimeout must not pass for that.
		_ = st.rc.SetReadDeadline(time.Time{})
	}
	v := f.gate.Check(c)
	if v.Hold > 0 {
		v = f.await(r, c, v)
	}
	st.call, st.verdict = c, v
	if !v.Forward() {
		return nil, verdictResponse(r, v)
	}
	st.upstream = true
	pctx.RoundTripper = goproxy.RoundTripperFunc(f.roundTrip)
	return f.outgoing(r, st, c, v), nil
}

// await keeps a held request's connection open (Gate.Await) until the
// approval is decided, the hold ends, the agent hangs up (net/http cancels
// the request context) or shutdown begins.
func (f *Forward) await(r *http.Request, c *gate.Call, v *gate.Verdict) *gate.Verdict {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(f.holdCtx, cancel)
	defer stop()
	return f.gate.Await(c, v, func() bool { return r.Context().Err() != nil }, ctx.Done())
}

// call builds the gate's call. The URL is built exactly as the sidecar
// builds it (fasthttp's decoded, dot-segment-free path, re-encoded), so
// one ERP URL has one digest whichever door it came through.
func (f *Forward) call(r *http.Request, t *tunnel) (*gate.Call, error) {
	c := &gate.Call{Door: "forward", URL: r.RequestURI, Req: rules.Request{Method: r.Method, App: f.gate.Engine().Manifest().AppID}}
	var scheme, host string
	if t != nil {
		scheme, host = t.scheme, t.host
		c.URL = scheme + "://" + host + r.RequestURI
	} else {
		scheme, host = strings.ToLower(r.URL.Scheme), r.URL.Host
		if scheme != "http" && scheme != "https" {
			return c, fmt.Errorf("scheme %q: want http or https", r.URL.Scheme)
		}
		if r.URL.User != nil {
			return c, errors.New("user information in the URL is not forwarded; send an Authorization header")
		}
		host = normalHost(scheme, host)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return c, fmt.Errorf("host %q", host)
	}
	in := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(in)
	if err := in.Parse([]byte(host), []byte(r.RequestURI)); err != nil {
		return c, fmt.Errorf("request target %q: %v", r.RequestURI, err)
	}
	erpPath := string(in.Path())
	query := string(in.QueryString())
	out := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(out)
	out.SetScheme(scheme)
	out.SetHost(host)
	out.SetPath(erpPath)
	out.SetQueryString(query)
	c.URL = string(out.FullURI())
	h := r.Header
	c.Req = rules.Request{
		Method: r.Method, Scheme: scheme, Host: host, Path: erpPath, RawQuery: query, App: c.Req.App,
		OnBehalfOf: h.Get(gate.HeaderOnBehalfOf), Escalation: h.Get(gate.HeaderEscalation),
	}
	c.Justification = h.Get(gate.HeaderJustification)
	c.ApprovalID = h.Get(gate.HeaderApprovalID)
	c.Capability = h.Get(gate.HeaderCapability)
	c.Override = h.Get(gate.HeaderOverride)
	c.ContentType = h.Get("Content-Type")
	return c, nil
}

// setApp sets the app identity from X-UAPK-App or the user of a Basic
// Proxy-Authorization (its password is not checked, nor forwarded). It
// returns why the identity is unusable, or "".
func (f *Forward) setApp(c *gate.Call, header, auth string) string {
	user, err := proxyAuthUser(auth)
	switch {
	case err != nil:
		return err.Error()
	case header != "" && user != "" && header != user:
		return "X-UAPK-App " + strconv.Quote(header) + " and the Proxy-Authorization user " + strconv.Quote(user) + " differ"
	case header != "":
		c.Req.App = header
	case user != "":
		c.Req.App = user
	}
	return ""
}

// proxyAuthUser returns the user of a Basic Proxy-Authorization value, ""
// when there is none.
func proxyAuthUser(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", errors.New("Proxy-Authorization must be Basic, its user being the app id")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", errors.New("Proxy-Authorization Basic credentials are not base64")
	}
	user, _, _ := strings.Cut(string(raw), ":")
	if user == "" {
		return "", errors.New("Proxy-Authorization names no user")
	}
	return user, nil
}

var errBodyTooLarge = errors.New("request body over the limit")

// readBody reads the whole body, refusing to read more than max bytes.
func readBody(r *http.Request, max int) ([]byte, error) {
	if r.ContentLength > int64(max) {
		return nil, errBodyTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > 0 { // net/http holds the body to exactly this length
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, int64(max)+1)); err != nil {
		return nil, err
	}
	if buf.Len() > max {
		return nil, errBodyTooLarge
	}
	return buf.Bytes(), nil
}

// outgoing is the request the ERP receives: the URL that was decided, the
// body that was hashed, no hop-by-hop or X-UAPK-* header. Its exchange
// runs to its end (or the upstream timeout) even if the agent hangs up: a
// request recorded as allowed gets its outcome recorded too.
func (f *Forward) outgoing(r *http.Request, st *fwdState, c *gate.Call, v *gate.Verdict) *http.Request {
	h := r.Header // the agent's request is done with: strip in place
	stripHTTP(h, "")
	h.Del("Expect") // the body is already here
	if v.Capability != "" {
		h.Set(gate.HeaderCapability, v.Capability) // the ERP may check it with GET /v1/keys/gateway
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // none was sent; net/http must not add its own
	}
	path, query := c.URL, ""
	if i := strings.Index(path, "://"); i >= 0 {
		path = path[i+3:]
	}
	if i := strings.IndexByte(path, '/'); i >= 0 {
		path = path[i:]
	} else {
		path = "/"
	}
	path, query, _ = strings.Cut(path, "?")
	out := &http.Request{
		Method: c.Req.Method,
		// Opaque carries the escaped path byte for byte as it was digested.
		URL:        &url.URL{Scheme: c.Req.Scheme, Host: c.Req.Host, Opaque: path, RawQuery: query},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1,
		Header:        h,
		ContentLength: int64(len(c.Req.Body)),
		Host:          c.Req.Host,
	}
	if len(c.Req.Body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(c.Req.Body))
	}
	var ctx context.Context
	ctx, st.cancel = context.WithTimeout(context.Background(), f.timeout)
	return out.WithContext(ctx)
}

// roundTrip sends the decided request to the ERP and has its answer
// hashed and recorded as goproxy relays it.
func (f *Forward) roundTrip(req *http.Request, pctx *goproxy.ProxyCtx) (*http.Response, error) {
	st := pctx.UserData.(*fwdState)
	cancel := st.cancel
	start := time.Now()
	resp, err := f.tr.RoundTrip(req)
	if err != nil {
		cancel()
		st.start = start
		return nil, err
	}
	v := st.verdict
	resp.Body = &auditBody{rc: resp.Body, h: sha256.New(), done: func(sum []byte, n int64, rerr error) {
		cancel()
		f.gate.ForwardedStream(v, resp.StatusCode, sum, n, time.Since(start), rerr)
	}}
	return resp, nil
}

// onResponse writes the verdict onto what goes back to the agent.
func (f *Forward) onResponse(resp *http.Response, pctx *goproxy.ProxyCtx) *http.Response {
	st, _ := pctx.UserData.(*fwdState)
	if st == nil {
		return resp
	}
	if st.rc != nil {
		_ = st.rc.SetWriteDeadline(time.Now().Add(fwdWriteTimeout))
	}
	if !st.upstream {
		return resp // a refusal made here
	}
	v := st.verdict
	if resp == nil {
		err := pctx.Error
		if err == nil {
			err = errors.New("no response")
		}
		f.gate.Forwarded(v, gate.ERPOutcome{Err: err, Duration: time.Since(st.start)})
		f.log.Warn().Err(err).Uint64("seq", v.Record).Str("door", "forward").Msg("upstream request failed")
		status, body := upstreamFailure(v, false)
		out := jsonResponse(pctx.Req, status, body)
		setVerdictHTTP(out.Header, v)
		return out
	}
	stripHTTP(resp.Header, "")
	setVerdictHTTP(resp.Header, v)
	return resp
}

// refuse records a refusal made before any policy applies.
func (f *Forward) refuse(r *http.Request, st *fwdState, c *gate.Call, reason record.Reason, data record.Request) *http.Response {
	v := f.gate.Refuse(c, reason, data)
	st.call, st.verdict = c, v
	return verdictResponse(r, v)
}

// onConnect decides a CONNECT. With a CA every tunnel is intercepted and
// what is inside is decided request by request; without one only
// tunnel_hosts are let through, blind, each recorded by host and port.
// Every other answer is a refusal: goproxy's default would be to accept.
func (f *Forward) onConnect(target string, pctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	r := pctx.Req
	st, _ := r.Context().Value(stateKey{}).(*fwdState)
	if st == nil {
		st = &fwdState{start: time.Now()}
	}
	pctx.UserData = st
	c := &gate.Call{Door: "forward", URL: target, Req: rules.Request{Method: http.MethodConnect, Host: target,
		App: f.gate.Engine().Manifest().AppID}}
	host, port, err := splitTarget(target)
	if err != nil {
		return f.rejectConnect(pctx, st, f.gate.Refuse(c, record.BadTarget, record.Request{Detail: err.Error()}))
	}
	auth := r.Header.Get("Proxy-Authorization")
	if detail := f.setApp(c, r.Header.Get(gate.HeaderApp), auth); detail != "" {
		return f.rejectConnect(pctx, st, f.gate.Refuse(c, record.UnknownApp, record.Request{Detail: detail, Host: host, Port: port}))
	}
	if f.ca != nil {
		t := &tunnel{target: target, auth: auth}
		return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: f.intercept(t, host, port)}, target
	}
	m := f.gate.Engine().Manifest()
	switch {
	case !m.TunnelAllowed(target):
		return f.rejectConnect(pctx, st, f.gate.Refuse(c, record.TunnelNotAllowed, record.Request{Host: host, Port: port}))
	case c.Req.App != m.AppID:
		return f.rejectConnect(pctx, st, f.gate.Refuse(c, record.UnknownApp,
			record.Request{Host: host, Port: port, Detail: "app " + strconv.Quote(c.Req.App) + " is not the manifest's app_id"}))
	}
	v := f.gate.RecordTunnel(c, host, port)
	if !v.Forward() {
		return f.rejectConnect(pctx, st, v)
	}
	st.call, st.verdict = c, v
	return &goproxy.ConnectAction{Action: goproxy.ConnectAccept}, target
}

func (f *Forward) rejectConnect(pctx *goproxy.ProxyCtx, st *fwdState, v *gate.Verdict) (*goproxy.ConnectAction, string) {
	st.verdict = v
	resp := verdictResponse(pctx.Req, v)
	resp.Close = true
	pctx.Resp = resp
	return &goproxy.ConnectAction{Action: goproxy.ConnectReject}, ""
}

// splitTarget checks a CONNECT target is host:port with a port in range.
func splitTarget(target string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(target)
	if err != nil {
		return "", "", fmt.Errorf("CONNECT target %q: want host:port", target)
	}
	n, perr := strconv.Atoi(port)
	if perr != nil || n < 1 || n > 65535 || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return "", "", fmt.Errorf("CONNECT target %q: want host:port", target)
	}
	return strings.ToLower(host), port, nil
}

// dialTunnel opens a blind tunnel the gate allowed and recorded.
func (f *Forward) dialTunnel(req *http.Request, network, addr string) (net.Conn, error) {
	st, _ := req.Context().Value(stateKey{}).(*fwdState)
	if st == nil || st.verdict == nil || !st.verdict.Forward() || st.call == nil || st.call.URL != addr {
		return nil, errors.New("tunnel not allowed") // fail closed: only what onConnect recorded
	}
	ctx, cancel := context.WithTimeout(req.Context(), fwdDialTimeout)
	defer cancel()
	start := time.Now()
	c, err := f.dial(ctx, network, addr)
	if err != nil {
		f.gate.Forwarded(st.verdict, gate.ERPOutcome{Err: err, Duration: time.Since(start)})
		return nil, err
	}
	st.tunnelUp.Store(true)
	v := st.verdict
	tc := &blindConn{Conn: c, idle: fwdTunnelIdle, start: start}
	tc.onClose = func() {
		f.conns.remove(tc)
		f.gate.TunnelClosed(v, tc.up.Load(), tc.down.Load(), time.Since(start))
	}
	if !f.conns.add(tc) {
		c.Close()
		return nil, errors.New("shutting down")
	}
	return tc, nil
}

// tunnelFailed answers a CONNECT whose target could not be dialled.
// goproxy also calls it when a running tunnel breaks; then the stream
// belongs to the client and nothing may be written into it.
func (f *Forward) tunnelFailed(w io.Writer, pctx *goproxy.ProxyCtx, err error) {
	st, _ := pctx.Req.Context().Value(stateKey{}).(*fwdState)
	if st == nil || st.verdict == nil || st.tunnelUp.Load() {
		return
	}
	status, body := upstreamFailure(st.verdict, true)
	resp := jsonResponse(pctx.Req, status, body)
	setVerdictHTTP(resp.Header, st.verdict)
	resp.Close = true
	_ = resp.Write(w)
}

// intercept takes over a CONNECT's connection: it answers 200, sees
// whether the client speaks TLS or plain HTTP, and hands the connection
// to the inner server, which terminates TLS with a leaf for the CONNECT's
// host (minted when the handshake asks for it).
func (f *Forward) intercept(t *tunnel, host, port string) func(*http.Request, net.Conn, *goproxy.ProxyCtx) {
	return func(req *http.Request, client net.Conn, _ *goproxy.ProxyCtx) {
		if !f.conns.begin() {
			client.Close()
			return
		}
		defer f.conns.end()
		tc := &tunnelConn{Conn: client, r: bufio.NewReader(client), t: t}
		tc.onClose = func() { f.conns.remove(tc) }
		if !f.conns.add(tc) {
			client.Close()
			return
		}
		handed := false
		defer func() {
			if !handed {
				tc.Close()
			}
		}()
		_ = client.SetDeadline(time.Now().Add(fwdConnectReplyWait))
		major, minor := req.ProtoMajor, req.ProtoMinor
		if major == 0 {
			major, minor = 1, 1
		}
		if _, err := fmt.Fprintf(client, "HTTP/%d.%d 200 Connection established\r\n\r\n", major, minor); err != nil {
			return
		}
		first, err := tc.r.Peek(1)
		if err != nil {
			f.log.Debug().Err(err).Str("target", t.target).Msg("intercepted tunnel closed before a byte")
			return
		}
		_ = client.SetDeadline(time.Time{})
		var conn net.Conn = tc
		t.scheme = "http"
		if first[0] == 0x16 { // a TLS handshake record
			t.scheme = "https"
			leafHost := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
			conn = tls.Server(tc, &tls.Config{
				MinVersion: tls.VersionTLS12,
				NextProtos: []string{"http/1.1"},
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return f.ca.Leaf(leafHost)
				},
			})
		}
		t.host = normalHost(t.scheme, net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), port))
		handed = f.innerLn.push(conn)
	}
}

func tunnelOf(c net.Conn) *tunnel {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*tunnelConn); ok {
		return tc.t
	}
	return nil
}

// normalHost lower-cases a host[:port] and drops the scheme's default port,
// so that http://ERP:80/x and http://erp/x are one URL.
func normalHost(scheme, hostport string) string {
	h := strings.ToLower(hostport)
	def := map[string]string{"http": ":80", "https": ":443"}[scheme]
	if def != "" && strings.HasSuffix(h, def) {
		if host, _, err := net.SplitHostPort(h); err == nil {
			if strings.Contains(host, ":") {
				return "[" + host + "]"
			}
			return host
		}
	}
	return h
}

// verdictResponse is a refusal, a pending answer or a 503 as the agent
// gets it: the gate's JSON body and the X-UAPK-* verdict headers.
// verdictResponse is the answer to a verdict that forwards nothing.
func verdictResponse(r *http.Request, v *gate.Verdict) *http.Response {
	status, body := answer(v)
	resp := jsonResponse(r, status, body)
	setVerdictHTTP(resp.Header, v)
	return resp
}

func jsonResponse(r *http.Request, status int, b []byte) *http.Response {
	return &http.Response{
		StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       r,
	}
}

func writeVerdictHTTP(w http.ResponseWriter, v *gate.Verdict) {
	status, body := answer(v)
	w.Header().Set("Content-Type", "application/json")
	setVerdictHTTP(w.Header(), v)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func setVerdictHTTP(h http.Header, v *gate.Verdict) { v.Headers(h.Set) }

func notAProxyRequest(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(jsonBody(map[string]string{
		"error":   "not_a_proxy_request",
		"message": "this is the forward proxy door: send absolute-URI requests (HTTP_PROXY) or CONNECT (HTTPS_PROXY); " + r.Method + " " + r.URL.Path + " names no host",
	}))
}

// auditBody hashes the ERP's answer while goproxy relays it, and records
// the outcome once it has been read to its end or closed.
type auditBody struct {
	rc   io.ReadCloser
	h    hash.Hash
	n    int64
	once sync.Once
	done func(sum []byte, n int64, err error)
}

func (b *auditBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.finish(nil)
	case err != nil:
		b.finish(err)
	}
	return n, err
}

var errNotRelayed = errors.New("response not relayed to its end")

func (b *auditBody) Close() error {
	err := b.rc.Close()
	b.finish(errNotRelayed)
	return err
}

func (b *auditBody) finish(err error) {
	b.once.Do(func() {
		var sum []byte
		if err == nil {
			sum = b.h.Sum(nil)
		}
		b.done(sum, b.n, err)
	})
}

// tunnelConn is an intercepted client connection; r holds the byte peeked
// to tell TLS from plain HTTP.
type tunnelConn struct {
	net.Conn
	r       *bufio.Reader
	t       *tunnel
	once    sync.Once
	onClose func()
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *tunnelConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// blindConn is the ERP side of a blind tunnel: each byte either way
// extends its idle deadline, and closing it records the tunnel's end.
type blindConn struct {
	net.Conn
	idle     time.Duration
	start    time.Time
	up, down atomic.Int64
	once     sync.Once
	onClose  func()
}

func (c *blindConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *blindConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.up.Add(int64(n))
	return n, err
}

func (c *blindConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// connSet holds the tunnels open now and counts the CONNECTs being set up;
// after closeAll it takes no more of either.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	setup  sync.WaitGroup // only added to under mu while open, so wait is safe after closeAll
}

func (s *connSet) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.setup.Add(1)
	return true
}

func (s *connSet) end()  { s.setup.Done() }
func (s *connSet) wait() { s.setup.Wait() }

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	list := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.Close()
	}
}

// Len is the number of tunnels open now.
func (s *connSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// chanListener feeds connections made elsewhere (intercepted tunnels) to
// an http.Server.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "tunnel" }
func (chanAddr) String() string  { return "intercepted-tunnels" }

// goproxyLogger routes goproxy's own messages (mostly broken tunnels) to
// zerolog at debug level.
type goproxyLogger struct{ l zerolog.Logger }

func (g goproxyLogger) Printf(format string, args ...any) {
	g.l.Debug().Str("component", "goproxy").Msg(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// logWriter routes net/http's server errors (bad requests, failed TLS
// handshakes of clients that do not trust the CA) to zerolog.
type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Warn().Str("door", "forward").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
