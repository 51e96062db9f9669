package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// The forward door's requests: absolute-URI requests and the requests
// inside intercepted tunnels, from the agent to the gate and on to the ERP.

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
	upstream bool            // the request was sent to the ERP
	agent    context.Context // the agent's request's: done when the agent hangs up mid-exchange
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
		// Read what the agent is still sending, bounded, so that a client
		// that sends it all before reading gets its 413, not a reset.
		if st.rc != nil {
			_ = st.rc.SetReadDeadline(time.Now().Add(drainTotal))
		}
		_, _ = io.CopyN(io.Discard, r.Body, max(4*int64(f.maxBody), 32<<20))
		return nil, resp
	}
	if err != nil {
		f.log.Info().Err(err).Str("door", "forward").Msg("request body not read; nothing decided")
		return nil, jsonResponse(r, http.StatusBadRequest, badRequest("request body could not be read"))
	}
	c.Req.Body = body
	c.AppProof = appProof(r.Header.Get, r.Method, r.RequestURI, body)
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
	var cred string
	if c.UpstreamCredential != "" {
		if cred, err = credentialValue(f.cred); err != nil {
			o := gate.ERPOutcome{Err: err, Undelivered: true}
			f.gate.Forwarded(v, o)
			f.log.Warn().Err(err).Uint64("seq", v.Record).Str("door", "forward").Msg("request not sent: no ERP credential")
			status, body := upstreamFailure(v, o, false)
			resp := jsonResponse(r, status, body)
			setVerdictHTTP(resp.Header, v)
			return nil, resp
		}
	}
	st.upstream = true
	pctx.RoundTripper = goproxy.RoundTripperFunc(f.roundTrip)
	out := f.outgoing(r, st, c, v)
	if f.cred != nil {
		// The agent never holds the ERP's credential; any it sends is
		// dropped (and the record says so), the proxy's own goes instead.
		out.Header.Del("Authorization")
		out.Header.Del(f.cred.Header())
		if cred != "" {
			out.Header.Set(f.cred.Header(), cred)
		}
	}
	return out, nil
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

// call builds the gate's call, for absolute-URI requests and the requests
// inside intercepted tunnels alike. The URL is built exactly as the sidecar
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
	et := erpTarget(scheme, host, "", originForm(r.RequestURI))
	c.URL = et.url
	h := r.Header
	c.Req = rules.Request{
		Method: r.Method, Scheme: scheme, Host: host, Path: et.path, RawQuery: et.query, App: c.Req.App, ContentType: h.Get("Content-Type"),
		OnBehalfOf: h.Get(gate.HeaderOnBehalfOf), Escalation: h.Get(gate.HeaderEscalation),
		// The agent names the host here, plainly or by CONNECT: only hosts
		// the manifest names may be reached (unknown_host otherwise).
		AgentChosenHost: true,
	}
	c.Justification = h.Get(gate.HeaderJustification)
	c.ApprovalID = h.Get(gate.HeaderApprovalID)
	c.Capability = h.Get(gate.HeaderCapability)
	c.Override = h.Get(gate.HeaderOverride)
	c.ContentEncoding = h.Get("Content-Encoding")
	c.Rewrites = rewrites(func(name string) bool { return len(h.Values(name)) > 0 })
	c.Repeated = repeatedHTTP(h)
	if f.cred != nil {
		if f.origins[originKey(scheme, host)] {
			c.UpstreamCredential = f.cred.Kind()
		}
		c.AgentCredential = agentCredential(f.cred, func(name string) bool { return len(h.Values(name)) > 0 })
	}
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
// runs to its end, the upstream timeout, or the agent hanging up (net/http
// cancels the agent's request context then): an ERP call the agent has
// abandoned is cancelled, its error says errClientGone, and its forward
// record says so (a request recorded as allowed gets its outcome recorded
// all the same).
func (f *Forward) outgoing(r *http.Request, st *fwdState, c *gate.Call, v *gate.Verdict) *http.Request {
	h := r.Header // the agent's request is done with: strip in place
	stripHTTP(h, "", true)
	h.Del("Expect") // the body is already here
	proto := "http"
	if r.TLS != nil {
		proto = "https" // inside an intercepted tunnel
	}
	fwd, xff := forwardedHeaders(r.RemoteAddr, proto)
	h["Forwarded"], h["X-Forwarded-For"], h["X-Forwarded-Proto"] = []string{fwd}, []string{xff}, []string{proto}
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
	// The exchange's context is the agent's request's, bounded by the
	// upstream timeout: one context, cancelled with the agent's (which
	// ends only when the agent hangs up while the exchange runs: goproxy
	// relays the whole answer before the handler returns). Its values are
	// the server's and this door's; the transport reads none of them.
	ctx, cancel := context.WithTimeout(r.Context(), f.timeout)
	st.agent, st.cancel = r.Context(), cancel
	var tmpl http.Request // WithContext copies it: out is the one request allocated
	out := tmpl.WithContext(ctx)
	out.Method = c.Req.Method
	// Opaque carries the escaped path byte for byte as it was digested.
	out.URL = &url.URL{Scheme: c.Req.Scheme, Host: c.Req.Host, Opaque: path, RawQuery: query}
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Header = h
	out.ContentLength = int64(len(c.Req.Body))
	out.Host = c.Req.Host
	if len(c.Req.Body) > 0 {
		body := c.Req.Body
		out.Body = io.NopCloser(bytes.NewReader(body))
		// Lets net/http send it again on a fresh connection, which it
		// does only when nothing of it was written to a pooled one.
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return out
}

// agentGone wraps err with errClientGone when the agent has hung up: the
// exchange's context was cancelled because the agent's was.
func (st *fwdState) agentGone(err error) error {
	if st.agent != nil && st.agent.Err() != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return err
}

// roundTrip sends the decided request to the ERP and has its answer
// hashed and recorded as goproxy relays it.
func (f *Forward) roundTrip(req *http.Request, pctx *goproxy.ProxyCtx) (*http.Response, error) {
	st := pctx.UserData.(*fwdState)
	cancel := st.cancel
	start := time.Now()
	tr := f.tr
	if st.verdict.UsesApproval() {
		tr = f.freshTr // never a pooled connection the ERP may have closed
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		err = st.agentGone(err)
		cancel()
		st.start = start
		return nil, err
	}
	if resp.ContentLength > f.maxResp {
		resp.Body.Close()
		cancel()
		st.start = start
		return nil, fmt.Errorf("%w: the ERP answered %d bytes, --max-response is %d", errResponseTooLarge, resp.ContentLength, f.maxResp)
	}
	v := st.verdict
	resp.Body = &auditBody{rc: resp.Body, h: sha256.New(), max: f.maxResp, resp: resp, done: func(sum []byte, n int64, rerr error) {
		if rerr != nil {
			rerr = st.agentGone(rerr)
		}
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
		o := erpFailure(err)
		o.Duration = time.Since(st.start)
		f.gate.Forwarded(v, o)
		f.log.Warn().Err(err).Uint64("seq", v.Record).Str("door", "forward").Str("reason", string(o.Reason())).Msg("upstream request failed")
		status, body := upstreamFailure(v, o, false)
		out := jsonResponse(pctx.Req, status, body)
		setVerdictHTTP(out.Header, v)
		return out
	}
	stripHTTP(resp.Header, "", false)
	stripHTTP(resp.Trailer, "", false) // the trailers it announced; auditBody strips what arrives
	setVerdictHTTP(resp.Header, v)
	return resp
}

// refuse records a refusal made before any policy applies.
func (f *Forward) refuse(r *http.Request, st *fwdState, c *gate.Call, reason record.Reason, data record.Request) *http.Response {
	v := f.gate.Refuse(c, reason, data)
	st.call, st.verdict = c, v
	return verdictResponse(r, v)
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
	rc  io.ReadCloser
	h   hash.Hash
	n   int64
	max int64 // relaying stops with errResponseTooLarge past this
	// resp's trailers arrive with the body's end, before goproxy copies
	// them to the agent: the header policy applies to them there.
	resp *http.Response
	once sync.Once
	done func(sum []byte, n int64, err error)
}

func (b *auditBody) Read(p []byte) (int, error) {
	if left := b.max - b.n; int64(len(p)) > left+1 {
		p = p[:left+1] // one byte past the limit tells an answer of exactly max bytes from a longer one
	}
	n, err := b.rc.Read(p)
	if b.n+int64(n) > b.max {
		b.n = b.max
		b.finish(fmt.Errorf("%w: more than %d bytes", errResponseTooLarge, b.max))
		// An answer cut short must not look complete to the agent: abort
		// the connection (net/http drops it without ending the chunked
		// body) rather than let the relay end cleanly.
		panic(http.ErrAbortHandler)
	}
	b.h.Write(p[:n])
	b.n += int64(n)
	switch {
	case err == io.EOF:
		if b.resp != nil && b.resp.Trailer != nil {
			stripHTTP(b.resp.Trailer, "", false)
		}
		b.finish(nil)
	case err != nil:
		b.finish(err)
	}
	return n, err
}

var errNotRelayed = errors.New("response not relayed to its end")

// errResponseTooLarge: an ERP answer over --max-response.
var errResponseTooLarge = errors.New("ERP answer over --max-response")

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
