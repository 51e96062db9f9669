package proxy

import (
	"bufio"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/gate"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// TestBlindTunnelNeedsAppSignature: with no CA the forward door opens a
// blind tunnel to a tunnel_hosts target, seeing none of its requests; an
// app whose key is listed must then sign the CONNECT itself (method
// CONNECT, target host:port, no body), with or without X-UAPK-App.
func TestBlindTunnelNeedsAppSignature(t *testing.T) {
	erp := newTestERP(t, true)
	erpHost := strings.TrimPrefix(erp.URL, "https://")
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	keyFile := filepath.Join(t.TempDir(), "app.pub")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	ps, err := rules.ParsePrincipals([]byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"+
		"apps:\n  - id: financial-ai-assistant\n    public_key: "+keyFile+"\n"), ".")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile("../examples/manifests/sox-financial.json")
	m, err := rules.ParseManifest([]byte(strings.Replace(string(raw), `"tool_restrictions": {`, `"tool_restrictions": {"tunnel_hosts": ["`+erpHost+`"],`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLedger{}
	g, err := newGate(t, fl, rules.NewEngine(m, ps))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startForward(t, ForwardConfig{Gate: g})
	resp, body := rawProxy(t, addr, "CONNECT "+erpHost+" HTTP/1.1\r\nHost: "+erpHost+"\r\n\r\n")
	if resp.StatusCode != 401 || !strings.Contains(body, "unauthenticated_app") {
		t.Fatalf("an unsigned CONNECT by an app with a listed key: %d %s", resp.StatusCode, body)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	nonce := "00112233445566778899aabbccddeeff"
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, gate.AppSignatureMessage("financial-ai-assistant", "CONNECT", erpHost, ts, nonce, nil)))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT "+erpHost+" HTTP/1.1\r\nHost: "+erpHost+"\r\n"+gate.HeaderTimestamp+": "+ts+"\r\n"+
		gate.HeaderNonce+": "+nonce+"\r\n"+gate.HeaderSignature+": "+sig+"\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("a signed CONNECT: %q %v", line, err)
	}
	var verified, refused int
	for _, e := range requestEntries(fl) {
		if e.Data["method"] != "CONNECT" {
			continue
		}
		switch {
		case e.Reason == "unauthenticated_app":
			refused++
		case e.Data["app_verified"] == true:
			verified++
		default:
			t.Errorf("a CONNECT record neither refused nor verified: %s %s %v", e.Decision, e.Reason, e.Data)
		}
	}
	if refused != 1 || verified != 1 {
		t.Errorf("CONNECT records: %d refused, %d verified; want 1 and 1", refused, verified)
	}
}
