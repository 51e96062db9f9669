package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// An agent that gives up while the proxy waits for the ERP must not leave
// the ERP call open for the whole upstream timeout. net/http (the forward
// door) cancels the request's context when the agent's connection closes;
// fasthttp (the sidecar door) has no such context, and its client no
// cancellation. So the sidecar probes the agent's connection while the ERP
// call runs (connGone: a MSG_PEEK that sees the end of the stream, right
// with keep-alive and pipelining, as the hold does) and, once the agent has
// gone, closes the ERP connection the request is on. fasthttp's
// HostClient.Transport is the hook that knows that connection:
// cancelTransport is its default transport with that one addition.

// errClientGone starts the error of a forward record whose ERP call was
// cancelled because the agent went away first.
var errClientGone = errors.New("client_gone: the agent closed its connection before the ERP answered; the call to the ERP was cancelled")

// agentProbe is how often the agent connections of the ERP calls in
// flight are probed; a call is first probed once it has run a whole period,
// so a quick ERP costs no probe.
const agentProbe = 100 * time.Millisecond

// upstreamCall is one ERP request that the agent may abandon.
type upstreamCall struct {
	deadline time.Time // of the whole call (the upstream timeout)
	agent    net.Conn  // the agent's connection, probed while the call runs
	start    time.Time

	mu   sync.Mutex
	conn net.Conn // the ERP connection the request is on, while it is
	sent bool     // a connection was taken: the ERP may have the request
	gone bool     // the agent went away: the call is cancelled
}

// cancel abandons the call: the ERP connection, if there is one, is closed
// now, and no connection is taken after.
func (u *upstreamCall) cancel() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gone = true
	if u.conn != nil {
		_ = u.conn.Close()
	}
}

// attach puts the call on c, unless it was cancelled already.
func (u *upstreamCall) attach(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone {
		return false
	}
	u.conn, u.sent = c, true
	return true
}

// detach takes the call off its connection; false when the call was
// cancelled, so that the connection (closed) is not pooled.
func (u *upstreamCall) detach() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.conn = nil
	return !u.gone
}

// state reports whether the call was cancelled and whether it had taken a
// connection by then.
func (u *upstreamCall) state() (gone, sent bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gone, u.sent
}

// watch makes sure the one goroutine that probes the agents of the calls
// in flight (t.calls) runs. Call it after storing a call: one goroutine for
// the whole door, not a timer per request. It runs while calls come, and
// ends after a period that found none.
func (t *cancelTransport) watch() {
	if !t.watching.Load() && t.watching.CompareAndSwap(false, true) {
		go t.watchLoop()
	}
}

func (t *cancelTransport) watchLoop() {
	tick := time.NewTicker(agentProbe)
	defer tick.Stop()
	for range tick.C {
		if t.probe(time.Now()) {
			continue
		}
		t.watching.Store(false)
		// A call stored before that Store may have seen the loop still
		// running and started none: look once more.
		if t.probe(time.Now()) && t.watching.CompareAndSwap(false, true) {
			continue
		}
		return
	}
}

// probe cancels every call in flight for a whole period whose agent has
// gone, and reports whether any call is in flight.
func (t *cancelTransport) probe(now time.Time) bool {
	inFlight := false
	t.calls.Range(func(_, v any) bool {
		inFlight = true
		call := v.(*upstreamCall)
		if now.Sub(call.start) < agentProbe {
			return true
		}
		if gone, _ := call.state(); !gone && connGone(call.agent) {
			call.cancel()
		}
		return true
	})
	return inFlight
}

// cancelTransport is fasthttp's default transport for requests that have an
// upstreamCall (calls, keyed by the *fasthttp.Request being sent: the
// HostClient runs the round trip on the caller's goroutine, one request at a
// time), with the ERP connection handed to the call so that cancel can close
// it. Requests without one go to fasthttp.DefaultTransport.
type cancelTransport struct {
	calls    sync.Map // *fasthttp.Request -> *upstreamCall
	watching atomic.Bool
}

// RoundTrip is fasthttp's transport.RoundTrip (v1.74) without response body
// streaming, which the sidecar never asks for.
func (t *cancelTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	v, ok := t.calls.Load(req)
	if !ok || resp.StreamBody || hc.StreamResponseBody {
		return fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
	}
	call := v.(*upstreamCall)

	// fasthttp keeps the request's timeout to itself; the call has it.
	deadline := call.deadline
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return false, fasthttp.ErrTimeout
	}
	cc, err := hc.AcquireConn(timeout, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	if !call.attach(conn) {
		hc.CloseConn(cc) // nothing was written on it; never pooled for the fresh client
		return false, errClientGone
	}
	fail := func(retry bool, err error) (bool, error) {
		call.detach()
		hc.CloseConn(cc)
		if gone, _ := call.state(); gone {
			return false, err // never sent again: the agent is not there for it
		}
		return retry, err
	}

	resp.ParseNetConn(conn)
	writeDeadline := deadline
	if hc.WriteTimeout > 0 {
		if d := time.Now().Add(hc.WriteTimeout); writeDeadline.IsZero() || d.Before(writeDeadline) {
			writeDeadline = d
		}
	}
	if err := conn.SetWriteDeadline(writeDeadline); err != nil {
		return fail(true, err)
	}
	resetConnection := false
	if hc.MaxConnDuration > 0 && time.Since(cc.CreatedTime()) > hc.MaxConnDuration && !req.ConnectionClose() {
		req.SetConnectionClose()
		resetConnection = true
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if resetConnection {
		req.Header.ResetConnectionClose()
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if x, ok := err.(interface{ Timeout() bool }); ok && x.Timeout() {
		err = fasthttp.ErrTimeout
	}
	if err != nil {
		return fail(true, err)
	}

	readDeadline := deadline
	if hc.ReadTimeout > 0 {
		if d := time.Now().Add(hc.ReadTimeout); readDeadline.IsZero() || d.Before(readDeadline) {
			readDeadline = d
		}
	}
	if err := conn.SetReadDeadline(readDeadline); err != nil {
		return fail(true, err)
	}
	if resp.SkipBody || req.Header.IsHead() {
		resp.SkipBody = true
	}
	if hc.DisableHeaderNamesNormalizing {
		resp.Header.DisableNormalizing()
	}
	br := hc.AcquireReader(conn)
	err = resp.ReadLimitBody(br, hc.MaxResponseBodySize)
	hc.ReleaseReader(br)
	if err != nil {
		return fail(err != fasthttp.ErrBodyTooLarge, err)
	}
	// The whole answer is in: it counts, even if the agent left just now;
	// only the connection, maybe closed under us, is not pooled.
	if !call.detach() || resetConnection || req.ConnectionClose() || resp.ConnectionClose() {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}
