package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// CONNECT on the forward door: interception with the install's CA, blind
// tunnels to tunnel_hosts, and refusal of everything else.

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
	c.AppProof = appProof(r.Header.Get, r.Method, r.RequestURI, nil)
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
		o := erpFailure(err)
		o.Duration = time.Since(start)
		f.gate.Forwarded(st.verdict, o)
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
	status, body := upstreamFailure(st.verdict, erpFailure(err), true)
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
