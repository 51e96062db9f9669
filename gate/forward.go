package gate

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// ERPOutcome is what came back from the ERP for a forwarded request.
type ERPOutcome struct {
	Status   int
	Body     []byte
	Err      error
	Duration time.Duration
	// With Err, what the door knows of it: Undelivered, the ERP cannot
	// have received the request (the connection was refused or never
	// made); Timeout, no answer came in time. Neither: the ERP received it
	// and the answer broke.
	Undelivered, Timeout bool
}

// Reason is the forward record's reason for o.
func (o ERPOutcome) Reason() record.Reason {
	switch {
	case o.Err == nil:
		return record.Forwarded
	case o.Undelivered:
		return record.UpstreamUnavailable
	case o.Timeout:
		return record.UpstreamTimeout
	}
	return record.UpstreamError
}

// Forwarded records the outcome of a forwarded request. It does not wait
// for the record to be durable: the request record already is, and the
// ledger writes this one in order with the next group commit.
func (g *Gate) Forwarded(v *Verdict, o ERPOutcome) {
	g.obs.Upstream(v.door, o.Duration, o.Err)
	if o.Err != nil {
		data := record.Forward{Error: o.Err.Error(), Delivered: !o.Undelivered}
		if o.Undelivered && v.usedID != "" {
			g.release(v, o, data)
			return
		}
		g.appendForward(v, o.Reason(), o.Duration, data)
		return
	}
	g.appendForward(v, record.Forwarded, o.Duration, record.Forward{Status: o.Status,
		ResponseSHA256: hexString(sha256.Sum256(o.Body)), ResponseSize: int64(len(o.Body))})
}

// ForwardedStream is Forwarded for an answer relayed while it streams: sum
// is the SHA-256 of the whole ERP body, or nil when relaying stopped early
// (relayErr says why; n bytes had been relayed).
func (g *Gate) ForwardedStream(v *Verdict, status int, sum []byte, n int64, d time.Duration, relayErr error) {
	g.obs.Upstream(v.door, d, nil)
	data := record.Forward{Status: status}
	if sum != nil {
		data.ResponseSHA256, data.ResponseSize = hex.EncodeToString(sum), n
	} else {
		data.RelayedSize, data.RelayError = n, relayErr.Error()
	}
	g.appendForward(v, record.Forwarded, d, data)
}

// TunnelClosed records the end of a blind tunnel: bytes each way.
func (g *Gate) TunnelClosed(v *Verdict, up, down int64, d time.Duration) {
	g.appendForward(v, record.TunnelClosed, d, record.Forward{Tunnel: true, BytesUp: up, BytesDown: down})
}

// release records a request that never reached the ERP and makes the
// approval it used usable again, durably, before the agent is answered.
func (g *Gate) release(v *Verdict, o ERPOutcome, data record.Forward) {
	data.RequestRecord = v.Record
	data.LatencyMS, data.LatencyUS = o.Duration.Milliseconds(), o.Duration.Microseconds()
	_, err := g.approvals.Release(v.usedID, v.usedToken, v.Record, ledger.Entry{
		Kind: record.KindForward, App: v.App, Action: v.Action, Decision: v.Decision(), Reason: o.Reason(),
		ApprovalID: v.ApprovalID, Digest: v.Digest, Policy: g.engine.Load().Manifest().Hash, Data: data.Map(),
	})
	if err != nil {
		// The approval stays used: safe, and the log says why.
		g.log.Error().Err(err).Uint64("request_seq", v.Record).Str("approval_id", v.ApprovalID).
			Msg("request not delivered, but its approval could not be made usable again")
		g.appendForward(v, o.Reason(), o.Duration, data)
	}
}

// appendForward writes a forward record (what came of a forwarded request)
// after its request record, without waiting for durability.
func (g *Gate) appendForward(v *Verdict, reason record.Reason, d time.Duration, data record.Forward) {
	data.RequestRecord = v.Record
	data.LatencyMS, data.LatencyUS = d.Milliseconds(), d.Microseconds()
	g.ledger.AppendAsync(ledger.Entry{
		Kind: record.KindForward, App: v.App, Action: v.Action, Decision: v.Decision(), Reason: reason,
		ApprovalID: v.ApprovalID, Digest: v.Digest, Policy: g.engine.Load().Manifest().Hash, Data: data.Map(),
	}, func(_ ledger.Record, err error) {
		if err != nil {
			g.log.Error().Err(err).Uint64("request_seq", v.Record).Msg("forward record not written")
		}
	})
}

// RecordTunnel records a CONNECT to a tunnel_hosts target, durably, before
// the tunnel opens. Only host and port are known: the bytes are not seen.
// If the record cannot be written the verdict is ledger_unavailable and no
// tunnel may open.
func (g *Gate) RecordTunnel(c *Call, host, port string) *Verdict {
	// A listed app signs its CONNECT too (method CONNECT, target
	// host:port, no body): a blind tunnel is recorded as the app's.
	verified, refused := g.verifyApp(c, g.engine.Load().Principals())
	if refused != "" {
		v := g.Refuse(c, record.UnauthenticatedApp, record.Request{Host: host, Port: port, Detail: refused})
		v.Message = refused
		return v
	}
	c.sanitize()
	now := g.now()
	url := c.url()
	v := &Verdict{started: now, App: c.Req.App, Digest: Digest(http.MethodConnect, url, nil),
		Outcome: rules.Allow, Reason: record.TunnelHost, door: c.Door}
	data := record.Request{Door: c.Door, Method: http.MethodConnect, URL: url, Host: host, Port: port, AppVerified: verified}
	rec, err := g.append(ledger.Entry{
		Kind: record.KindRequest, App: c.Req.App, Decision: v.Decision(), Reason: v.Reason, Digest: v.Digest,
		Policy: g.engine.Load().Manifest().Hash, Data: data.Map(),
	})
	if err != nil {
		g.log.Error().Err(err).Str("app", v.App).Str("digest", v.Digest).Msg("ledger append failed; tunnel refused")
		u := &Verdict{Outcome: rules.Deny, Reason: record.LedgerUnavailable, App: v.App, Digest: v.Digest, started: now, door: c.Door}
		g.logDecision(c, u, url, now)
		return u
	}
	v.Record = rec.Seq
	g.logDecision(c, v, url, now)
	return v
}
