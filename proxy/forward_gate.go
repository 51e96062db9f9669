package proxy

import (
	"encoding/hex"
	"net/http"
	"time"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// The gate's records for what only the forward door does: blind tunnels,
// and answers relayed as they stream (whose hash is known at their end).
// Additive to gate.go; the records have the shapes of Check's and
// Forwarded's.

// recordTunnel records a CONNECT to a tunnel_hosts target, durably, before
// the tunnel opens. Only host and port are known: the bytes are not seen.
// If the record cannot be written the answer is 503 and no tunnel opens.
func (g *Gate) recordTunnel(c *Call, host, port string) *Verdict {
	c.sanitize()
	now := g.now()
	url := c.url()
	v := &Verdict{started: now, App: c.Req.App, Digest: Digest(http.MethodConnect, url, nil),
		Forward: true, Decision: "allow", Reason: ReasonTunnelHost, door: c.Door}
	rec, err := g.append(ledger.Entry{
		Kind: record.KindRequest, App: c.Req.App, Decision: record.Decision(v.Decision), Reason: record.Reason(v.Reason), Digest: v.Digest,
		Policy: g.engine.Load().Manifest().Hash,
		Data:   map[string]any{"door": c.Door, "method": http.MethodConnect, "url": url, "host": host, "port": port},
	})
	if err != nil {
		g.log.Error().Err(err).Str("app", v.App).Str("digest", v.Digest).Msg("ledger append failed; tunnel refused")
		u := &Verdict{Status: 503, Body: jsonBody(map[string]any{"error": "ledger_unavailable"}),
			Decision: "deny", Reason: "ledger_unavailable", App: v.App, Digest: v.Digest, started: now, door: c.Door}
		g.logDecision(c, u, url, now)
		return u
	}
	v.Record = rec.Seq
	g.logDecision(c, v, url, now)
	return v
}

// forwardedStream is Forwarded for an answer relayed while it streams:
// sum is the SHA-256 of the whole ERP body, or nil when relaying stopped
// early (relayErr says why; n bytes had been relayed).
func (g *Gate) forwardedStream(v *Verdict, status int, sum []byte, n int64, d time.Duration, relayErr error) {
	g.obs.Upstream(v.door, d, nil)
	data := map[string]any{"status": status}
	if sum != nil {
		data["response_sha256"] = hex.EncodeToString(sum)
		data["response_size"] = n
	} else {
		data["relayed_size"] = n
		data["relay_error"] = relayErr.Error()
	}
	g.appendForward(v, "forwarded", d, data)
}

// tunnelClosed records the end of a blind tunnel: bytes each way.
func (g *Gate) tunnelClosed(v *Verdict, up, down int64, d time.Duration) {
	g.appendForward(v, "tunnel_closed", d, map[string]any{"bytes_up": up, "bytes_down": down})
}
