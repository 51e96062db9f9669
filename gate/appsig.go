package gate

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/rules"
)

// App signatures (docs/reference.md#app-signatures): an app the principals
// file lists a key for (apps:) signs each request, so that the proxy can
// prove which app called. The signature is Ed25519 over
//
//	"uapk-app-sig-v1\nAPP\nMETHOD\nTARGET\nTIMESTAMP\nNONCE\nhex(SHA-256(body))"
//
// with TARGET the request target as sent (for POST /v1/execute, the
// execute call's, not the templated request's), TIMESTAMP Unix seconds
// within AppSigWindow of the proxy's clock, and NONCE used once.
const (
	HeaderTimestamp = "X-UAPK-Timestamp"
	HeaderNonce     = "X-UAPK-Nonce"
	HeaderSignature = "X-UAPK-Signature"

	appSigVersion = "uapk-app-sig-v1"
	// AppSigWindow is how far a signature's timestamp may be from the
	// proxy's clock, either way.
	AppSigWindow = 5 * time.Minute
	// maxNonces bounds the nonces kept: only valid signatures add one, so
	// only the app itself can fill it, and a full table refuses (fails
	// closed) rather than forgets.
	maxNonces = 1 << 20
)

// AppProof is what a door read of an app signature: the headers, and the
// request as the app sent it.
type AppProof struct {
	Timestamp, Nonce, Signature string
	Method, Target              string
	Body                        []byte
}

// AppSignatureMessage is the byte string an app signs.
func AppSignatureMessage(app, method, target, timestamp, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(strings.Join([]string{appSigVersion, app, method, target, timestamp, nonce, hex.EncodeToString(sum[:])}, "\n"))
}

// nonces remembers the nonces of valid signatures until their window
// has passed.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time // app+nonce -> when it may be forgotten
}

// use records nonce for app until until; false when it was used before or
// the table is full.
func (n *nonces) use(key string, now, until time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	if len(n.seen) >= maxNonces/2 {
		for k, t := range n.seen {
			if !now.Before(t) {
				delete(n.seen, k)
			}
		}
	}
	if t, ok := n.seen[key]; ok && now.Before(t) {
		return false
	}
	if len(n.seen) >= maxNonces {
		return false
	}
	n.seen[key] = until
	return true
}

// verifyApp checks c's app signature when the principals list a key for
// its app: verified is true when it holds; detail, when not "", is why
// the call is refused (unauthenticated_app). An app without a key is
// neither verified nor refused.
func (g *Gate) verifyApp(c *Call, ps *rules.Principals) (verified bool, detail string) {
	key, ok := ps.AppKey(c.Req.App)
	if !ok {
		return false, ""
	}
	if c.appProven {
		return true, ""
	}
	p := c.AppProof
	if p == nil || p.Signature == "" || p.Timestamp == "" || p.Nonce == "" {
		return false, "app " + strconv.Quote(c.Req.App) + " has a key in the principals file: its requests must carry " +
			HeaderTimestamp + ", " + HeaderNonce + " and " + HeaderSignature
	}
	sec, err := strconv.ParseInt(p.Timestamp, 10, 64)
	if err != nil || sec <= 0 || len(p.Timestamp) > 12 || strings.Trim(p.Timestamp, "0123456789") != "" || p.Timestamp[0] == '0' {
		return false, HeaderTimestamp + " must be Unix seconds"
	}
	now := time.Now() // the wall clock, not the policy's: freshness is physical
	at := time.Unix(sec, 0)
	if d := now.Sub(at); d > AppSigWindow || d < -AppSigWindow {
		return false, HeaderTimestamp + " is more than 5 minutes from the proxy's clock"
	}
	if len(p.Nonce) < 16 || len(p.Nonce) > 128 || strings.Trim(p.Nonce, "0123456789abcdefABCDEF-_") != "" {
		return false, HeaderNonce + " must be 16 to 128 of [0-9a-fA-F_-]"
	}
	sig, err := base64.StdEncoding.DecodeString(p.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize ||
		!ed25519.Verify(key, AppSignatureMessage(c.Req.App, p.Method, p.Target, p.Timestamp, p.Nonce, p.Body), sig) {
		return false, HeaderSignature + " does not verify with app " + strconv.Quote(c.Req.App) + "'s key over this request"
	}
	// Only now, for a signature that holds: an outsider cannot fill it.
	if !g.nonces.use(c.Req.App+"\n"+p.Nonce, now, at.Add(AppSigWindow)) {
		return false, HeaderNonce + " was used before: each signed request is sent once"
	}
	c.appProven = true
	return true, ""
}
