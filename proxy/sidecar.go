package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// SidecarConfig configures the sidecar (reverse proxy) door.
type SidecarConfig struct {
	Gate     *gate.Gate
	Upstream string // ERP base URL, http or https
	// MaxBody is the largest request body accepted; above it the answer is
	// 413 and nothing is forwarded (default 10 MiB).
	MaxBody int
	// MaxResponse is the largest ERP answer relayed (default 64 MiB); a
	// larger one is a 502 and an upstream_error forward record.
	MaxResponse int
	// TLS is used for an https upstream; nil means system roots, verification on.
	TLS    *tls.Config
	Logger zerolog.Logger
	// UpstreamTimeout bounds one ERP round trip (default 30s).
	UpstreamTimeout time.Duration
	// MaxConns bounds connections to the ERP (default 1024).
	MaxConns int
	// ReadTimeout bounds reading one agent request (default 60s).
	ReadTimeout time.Duration
	// Credential, when set, is the ERP credential set on every forwarded
	// request in place of any the agent sent.
	Credential Credential
	// MaxHeaderBytes bounds a request's line and headers (default
	// DefaultMaxHeaderBytes); each open connection holds a buffer of it.
	MaxHeaderBytes int
}

// Sidecar is the door an agent reaches by URL: it forwards to one ERP.
type Sidecar struct {
	gate     *gate.Gate
	scheme   string
	host     string // host[:port] of the ERP
	basePath string // upstream path prefix without trailing slash
	client   *fasthttp.HostClient
	fresh    *fasthttp.HostClient // for requests on an approval: a new connection each
	tr       *cancelTransport     // both clients': an ERP call the agent abandons is cancelled
	server   *fasthttp.Server
	ln       atomic.Pointer[trackingListener]
	lnMu     sync.Mutex  // orders Serve's start against Shutdown
	stopping bool        // Shutdown has begun: a late Serve returns at once
	parked   parkedTable // requests held (park) and not answered yet
	maxBody  int
	timeout  time.Duration
	log      zerolog.Logger
	cred     Credential
}

// DefaultMaxBody is --max-body's default.
const DefaultMaxBody = 10 << 20

// DefaultMaxResponse is --max-response's default: an ERP answer is JSON
// about one entry or report, not a bulk export.
const DefaultMaxResponse = 64 << 20

// NewSidecar checks the configuration and builds the door.
func NewSidecar(cfg SidecarConfig) (*Sidecar, error) {
	if cfg.Gate == nil {
		return nil, errors.New("sidecar needs a gate")
	}
	u, err := url.Parse(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", cfg.Upstream, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", cfg.Upstream)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: want scheme://host[:port][/base-path] and nothing else", cfg.Upstream)
	}
	s := &Sidecar{
		gate: cfg.Gate, scheme: u.Scheme, host: u.Host, basePath: strings.TrimRight(u.Path, "/"),
		maxBody: cfg.MaxBody, timeout: cfg.UpstreamTimeout, log: cfg.Logger,
		cred: cfg.Credential, tr: &cancelTransport{},
	}
	s.parked.init()
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	maxResp := cfg.MaxResponse
	if maxResp <= 0 {
		maxResp = DefaultMaxResponse
	}
	if s.timeout <= 0 {
		s.timeout = 30 * time.Second
	}
	maxConns := cfg.MaxConns
	if maxConns <= 0 {
		maxConns = 1024
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsCfg.ServerName == "" {
		tlsCfg = tlsCfg.Clone()
		tlsCfg.ServerName = u.Hostname()
	}
	// HostClient dials Addr directly: it never consults HTTP_PROXY, so the
	// proxy cannot be pointed elsewhere by its own environment.
	s.client = &fasthttp.HostClient{
		Addr: addr, IsTLS: u.Scheme == "https", TLSConfig: tlsCfg,
		MaxConns: maxConns, MaxIdleConnDuration: 90 * time.Second, MaxResponseBodySize: maxResp,
		ReadTimeout: s.timeout, WriteTimeout: s.timeout, MaxConnWaitTimeout: s.timeout,
		NoDefaultUserAgentHeader: true, DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing: true, // the target goes as it came and was decided on
		// A journal entry is never sent twice behind the ledger's back; a
		// read that met a pooled connection the ERP had closed is sent
		// again once, on a fresh one.
		MaxIdemponentCallAttempts: 2,
		Transport:                 s.tr,
	}
	s.client.RetryIfErr = func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
		m := string(req.Header.Method())
		if attempts > 1 || (m != fasthttp.MethodGet && m != fasthttp.MethodHead && m != fasthttp.MethodOptions) ||
			!errors.Is(err, fasthttp.ErrConnectionClosed) && !errors.Is(err, io.EOF) {
			return false, false
		}
		s.client.CloseIdleConnections() // the others are as stale
		return false, true
	}
	s.fresh = &fasthttp.HostClient{
		Addr: addr, IsTLS: u.Scheme == "https", TLSConfig: tlsCfg,
		MaxConns: maxConns, MaxResponseBodySize: maxResp,
		ReadTimeout: s.timeout, WriteTimeout: s.timeout, MaxConnWaitTimeout: s.timeout,
		NoDefaultUserAgentHeader: true, DisablePathNormalizing: true, MaxIdemponentCallAttempts: 1,
		Transport: s.tr,
	}
	s.server = &fasthttp.Server{
		Handler:               s.handle,
		ErrorHandler:          s.handleError,
		MaxRequestBodySize:    s.maxBody,
		ReadTimeout:           cmp.Or(cfg.ReadTimeout, 60*time.Second),
		WriteTimeout:          60 * time.Second,
		IdleTimeout:           120 * time.Second,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		// A held request's connection is parked (park) off fasthttp's
		// worker, and answered and closed by the sidecar.
		KeepHijackedConns: true,
		// A burst of held requests is served by as many workers, each
		// with the stack the gate grew; once they are parked the workers
		// are idle and are let go soon (idleWorker), not after 10s.
		MaxIdleWorkerDuration: idleWorker,
		ReadBufferSize:        cmp.Or(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		// Errors about a request that cannot be read must not quote it:
		// its headers carry tokens and credentials.
		SecureErrorLogMessage: true,
		Logger:                zlogger{cfg.Logger},
	}
	return s, nil
}

// Serve accepts agent connections on ln until Shutdown.
func (s *Sidecar) Serve(ln net.Listener) error {
	tl := newTrackingListener(ln)
	s.lnMu.Lock()
	if s.stopping {
		s.lnMu.Unlock()
		return tl.Close()
	}
	s.ln.Store(tl)
	s.lnMu.Unlock()
	return s.server.Serve(tl)
}

// Shutdown stops accepting and waits for in-flight requests until ctx ends;
// connections that never sent a byte are closed at once. Then it closes the
// idle connections to the ERP.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.parked.stop() // held agents get their 202
	s.lnMu.Lock()
	s.stopping = true
	s.lnMu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.server.ShutdownWithContext(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if tl := s.ln.Load(); tl != nil {
			tl.closeSilent()
		}
		select {
		case err := <-done:
			// A Serve that began just before Shutdown may not be known to
			// fasthttp yet: closing its listener ends it all the same.
			if tl := s.ln.Load(); tl != nil {
				tl.Close()
			}
			// Parked requests are fasthttp's no more: each is answered
			// its 202 (or its release finishes) on its own.
			if perr := s.parked.wait(ctx); err == nil {
				err = perr
			}
			s.client.CloseIdleConnections()
			return err
		case <-tick.C:
		}
	}
}

// call turns a fasthttp request into the gate's transport-neutral call. The
// path the rules see is fasthttp's decoded, dot-segment-free path, and the
// same path is what the ERP receives: what is classified is what is sent.
func (s *Sidecar) call(ctx *fasthttp.RequestCtx) *gate.Call {
	h := &ctx.Request.Header
	app := string(h.Peek(gate.HeaderApp))
	if app == "" {
		app = s.gate.Engine().Manifest().AppID
	}
	t := erpTarget(s.scheme, s.host, s.basePath, string(ctx.Request.Header.RequestURI()))
	c := &gate.Call{
		Req: rules.Request{
			Method: string(h.Method()), Scheme: s.scheme, Host: s.host, Path: t.path,
			RawQuery: t.query, Body: ctx.Request.Body(), ContentType: string(h.ContentType()), App: app,
			OnBehalfOf: string(h.Peek(gate.HeaderOnBehalfOf)), Escalation: string(h.Peek(gate.HeaderEscalation)),
		},
		URL:             t.url,
		Door:            "sidecar",
		Justification:   string(h.Peek(gate.HeaderJustification)),
		ApprovalID:      string(h.Peek(gate.HeaderApprovalID)),
		Capability:      string(h.Peek(gate.HeaderCapability)),
		Override:        string(h.Peek(gate.HeaderOverride)),
		ContentEncoding: string(h.ContentEncoding()),
		Rewrites:        rewrites(func(name string) bool { return h.Peek(name) != nil }),
		Repeated:        repeatedIn(h.RawHeaders()),
	}
	if h.Peek(gate.HeaderSignature) != nil || h.Peek(gate.HeaderTimestamp) != nil || h.Peek(gate.HeaderNonce) != nil {
		c.AppProof = appProof(func(name string) string { return string(h.Peek(name)) }, c.Req.Method,
			string(h.RequestURI()), ctx.Request.Body())
	}
	if s.cred != nil {
		c.UpstreamCredential = s.cred.Kind()
		c.AgentCredential = agentCredential(s.cred, func(name string) bool { return h.Peek(name) != nil })
	}
	return c
}

func (s *Sidecar) handle(ctx *fasthttp.RequestCtx) {
	if isExecute(ctx) {
		s.execute(ctx)
		return
	}
	c := s.call(ctx)
	if m := c.Req.Method; m == fasthttp.MethodConnect || m == "PRI" {
		// Not requests for the ERP: a tunnel, or an HTTP/2 preface.
		writeVerdict(ctx, s.gate.Refuse(c, record.BadTarget, record.Request{Detail: "method " + m + " is not forwarded by the sidecar door"}))
		ctx.SetConnectionClose()
		return
	}
	s.decide(ctx, c, answerCall)
}

// answerCall answers a plain call's verdict: forwarded, or not.
func answerCall(s *Sidecar, ctx *fasthttp.RequestCtx, c *gate.Call, v *gate.Verdict) {
	if !v.Forward() {
		writeVerdict(ctx, v)
		return
	}
	s.forward(ctx, c, v)
}

// answerFunc answers c's verdict v on ctx.
type answerFunc func(s *Sidecar, ctx *fasthttp.RequestCtx, c *gate.Call, v *gate.Verdict)

// decide puts c through the gate and answers with then. When its action
// holds, the connection is parked (park) and then runs when the hold ends,
// on a context of its own for the same connection and request.
func (s *Sidecar) decide(ctx *fasthttp.RequestCtx, c *gate.Call, then answerFunc) {
	v := s.gate.Check(c)
	if v.Hold > 0 && s.park(ctx, c, v, then) {
		return
	}
	then(s, ctx, c, v)
}

// forward sends the request to the ERP and relays the answer. It reports
// whether ctx.Response holds the ERP's answer; when not, it holds the
// proxy's own (502, 504).
func (s *Sidecar) forward(ctx *fasthttp.RequestCtx, c *gate.Call, v *gate.Verdict) bool {
	req := &ctx.Request
	stripRequest(&req.Header)
	if s.cred != nil {
		// The agent never holds the ERP's credential; any it sends is
		// dropped (and the record says so), the proxy's own goes instead.
		req.Header.Del("Authorization")
		req.Header.Del(s.cred.Header())
		val, err := credentialValue(s.cred)
		if err != nil {
			o := gate.ERPOutcome{Err: err, Undelivered: true}
			s.gate.Forwarded(v, o)
			s.log.Warn().Err(err).Uint64("seq", v.Record).Msg("request not sent: no ERP credential")
			status, body := upstreamFailure(v, o, false)
			writeFast(ctx, status, v, body)
			return false
		}
		req.Header.Set(s.cred.Header(), val)
	}
	fwd, xff := forwardedHeaders(ctx.RemoteAddr().String(), "http")
	req.Header.Set("Forwarded", fwd)
	req.Header.Set("X-Forwarded-For", xff)
	req.Header.Set("X-Forwarded-Proto", "http")
	if v.Capability != "" {
		req.Header.Set(gate.HeaderCapability, v.Capability) // the ERP may check it with GET /v1/keys/gateway
	}
	req.SetRequestURI(c.URL)
	req.Header.SetHost(s.host)
	req.Header.SetProtocol("HTTP/1.1")       // whatever version the agent's request line named
	req.Header.SetNoDefaultContentType(true) // none sent, none added: the approval binds it
	resp := &ctx.Response
	client := s.client
	if v.UsesApproval() {
		// Never a pooled connection the ERP may have closed: a failure
		// then says for sure whether the ERP got the request, and an
		// approval it never got stays usable.
		client = s.fresh
		req.SetConnectionClose()
	}
	start := time.Now()
	// The agent's connection is watched while the ERP works: an agent that
	// gives up gets its ERP call cancelled, not left open to the timeout.
	call := &upstreamCall{deadline: start.Add(s.timeout), agent: ctx.Conn(), start: start}
	// The read deadline fasthttp armed for this request must not end the
	// watch (a probe past it fails as if the agent had gone): the ERP's
	// time is bounded by the upstream timeout, and fasthttp arms a fresh
	// deadline for the next request.
	ctx.Conn().SetReadDeadline(time.Time{})
	s.tr.calls.Store(req, call)
	s.tr.watch()
	err := client.DoTimeout(req, resp, s.timeout)
	s.tr.calls.Delete(req)
	if gone, sent := call.state(); gone && err != nil {
		o := erpFailure(err)
		o.Undelivered = o.Undelivered || !sent
		if !errors.Is(err, errClientGone) {
			err = fmt.Errorf("%w: %w", errClientGone, err)
		}
		o.Err, o.Duration = err, time.Since(start)
		s.gate.Forwarded(v, o)
		resp.Reset()
		s.log.Info().Err(err).Uint64("seq", v.Record).Str("reason", string(o.Reason())).Bool("delivered", !o.Undelivered).
			Msg("the agent went away before the ERP answered; ERP call cancelled")
		status, body := upstreamFailure(v, o, false)
		writeFast(ctx, status, v, body)
		ctx.SetConnectionClose()
		return false
	}
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// The agent's Upgrade never reaches the ERP, so a 101 is the ERP
		// speaking another protocol on this connection: never reuse it.
		client.CloseIdleConnections()
		err = errSwitched
	}
	o := gate.ERPOutcome{Duration: time.Since(start), Err: err}
	if err != nil {
		o = erpFailure(err)
		o.Duration = time.Since(start)
		s.gate.Forwarded(v, o)
		resp.Reset()
		s.log.Warn().Err(err).Uint64("seq", v.Record).Str("reason", string(o.Reason())).Msg("upstream request failed")
		status, body := upstreamFailure(v, o, false)
		writeFast(ctx, status, v, body)
		return false
	}
	o.Status, o.Body = resp.StatusCode(), resp.Body()
	s.gate.Forwarded(v, o)
	stripResponse(&resp.Header)
	setVerdictHeaders(&resp.Header, v)
	return true
}

// handleError answers requests fasthttp could not read; a body over
// --max-body is refused with 413 and recorded, nothing is forwarded.
func (s *Sidecar) handleError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		c := s.call(ctx)
		if isExecute(ctx) {
			c.Via = viaExecute
		}
		c.Req.Body = nil
		v := s.gate.Refuse(c, record.BodyTooLarge,
			record.Request{Limit: int64(s.maxBody), ContentLength: ctx.Request.Header.ContentLength()})
		writeVerdict(ctx, v)
		ctx.SetConnectionClose()
		drainBody(ctx.Conn(), max(4*int64(s.maxBody), 32<<20))
		return
	}
	// fasthttp's errors quote the request's bytes, tokens included: the
	// answer says what was wrong, never what was sent.
	msg := err.Error()
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer) {
		msg = fmt.Sprintf("the request line and headers are over %d bytes", s.server.ReadBufferSize)
	} else if i := strings.Index(msg, "contents:"); i >= 0 {
		msg = strings.TrimRight(msg[:i], " ,:")
	}
	writeFast(ctx, fasthttp.StatusBadRequest, nil, badRequest(msg))
	ctx.SetConnectionClose()
}

// DefaultMaxHeaderBytes bounds an agent request's line and headers on the
// sidecar door (fasthttp's read buffer, held by every open connection).
const DefaultMaxHeaderBytes = 4096

// errSwitched: the ERP answered 101 to a request that asked for no upgrade.
var errSwitched = errors.New("the ERP switched protocols on a request that asked for none")

// Bounds of draining a refused body.
const (
	drainIdle  = 250 * time.Millisecond // the agent has sent it all and waits
	drainTotal = 10 * time.Second
)

// drainBody reads and discards what the agent is still sending of a body
// refused as too large, so that it reads its 413: a client that sends the
// whole body before reading (Python's http.client, requests) gets a reset
// instead when the proxy closes with bytes unread. Bounded in bytes and
// time; the connection is closed after the answer either way.
func drainBody(c net.Conn, limit int64) {
	deadline := time.Now().Add(drainTotal)
	buf := make([]byte, 32<<10)
	for n := int64(0); n < limit; {
		d := time.Now().Add(drainIdle)
		if d.After(deadline) {
			d = deadline
		}
		if c.SetReadDeadline(d) != nil {
			return
		}
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
}

// writeVerdict answers a verdict that forwards nothing.
func writeVerdict(ctx *fasthttp.RequestCtx, v *gate.Verdict) {
	status, body := answer(v)
	writeFast(ctx, status, v, body)
}

// writeFast writes a JSON answer with v's X-UAPK-* headers (none if v is nil).
func writeFast(ctx *fasthttp.RequestCtx, status int, v *gate.Verdict, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if v != nil {
		setVerdictHeaders(&ctx.Response.Header, v)
	}
	ctx.SetBody(body)
}

func setVerdictHeaders(h *fasthttp.ResponseHeader, v *gate.Verdict) { v.Headers(h.Set) }

// stripRequest applies the header policy to the agent's request.
func stripRequest(h *fasthttp.RequestHeader) { stripFast(h, "", true) }

// stripResponse does the same on the ERP's answer, except Transfer-Encoding,
// which fasthttp manages when it frames the body.
func stripResponse(h *fasthttp.ResponseHeader) { stripFast(h, "Transfer-Encoding", false) }

// zlogger routes fasthttp's own messages to zerolog.
type zlogger struct{ l zerolog.Logger }

func (z zlogger) Printf(format string, args ...any) { z.l.Warn().Msgf(format, args...) }

// appProof reads an app signature's headers (gate.AppProof) with the
// request as the app sent it: method, target and body bytes as received.
// nil without a signature.
func appProof(get func(string) string, method, target string, body []byte) *gate.AppProof {
	sig := get(gate.HeaderSignature)
	if sig == "" && get(gate.HeaderTimestamp) == "" && get(gate.HeaderNonce) == "" {
		return nil
	}
	return &gate.AppProof{Timestamp: get(gate.HeaderTimestamp), Nonce: get(gate.HeaderNonce), Signature: sig,
		Method: method, Target: target, Body: body}
}
