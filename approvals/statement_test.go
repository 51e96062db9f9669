package approvals_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// Known answers for the signed decision statement (docs/reference.md#approval-statement-and-rules).
//
// The key is RFC 8032 §7.1 TEST 1 (public knowledge, never a real key):
// testdata/kat/approver.key is its PKCS#8 PEM, approver.pub its PKIX PEM
// (public key d75a9801...511a, as in the RFC). testdata/kat/statement.txt
// holds the statement bytes of the first case below.
//
// OpenSSL 3 signs raw Ed25519 messages (checked with OpenSSL 3.0.19), so any
// auditor can reproduce the signature:
//
//	openssl pkeyutl -sign -rawin -inkey testdata/kat/approver.key \
//	    -in testdata/kat/statement.txt | base64 -w0
//
// and check it:
//
//	openssl pkeyutl -verify -rawin -pubin -inkey testdata/kat/approver.pub \
//	    -in testdata/kat/statement.txt -sigfile <(echo SIG | base64 -d)
//
// The same with Python needs the third-party "cryptography" package (the
// standard library has no Ed25519):
//
//	python3 -c "import base64; from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; print(base64.b64encode(K.from_private_bytes(bytes.fromhex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60')).sign(open('testdata/kat/statement.txt','rb').read())).decode())"
//
// Ed25519 is deterministic, so the signature is a fixed string.
const katSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"

func katKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	seed, err := hex.DecodeString(katSeed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func TestStatementKnownAnswers(t *testing.T) {
	cases := []struct {
		name                                     string
		id, digest, decision, approver, signedAt string
		want                                     string
		wantSig                                  string
	}{
		{
			name: "approve (testdata/kat/statement.txt)",
			id:   testID, digest: testDigest, decision: approvals.Approve,
			approver: "cfo@corp.example", signedAt: "2026-09-30T14:05:00Z",
			want: "uapk-approval-v1\n" +
				"apr_2v3rnlhoyzq6jbvyt5mwx7kdfa\n" +
				"fad508d1225aceb3591ca45aa87040223cacc4379c545e93efdeeaf9284982e7\n" +
				"approve\n" +
				"cfo@corp.example\n" +
				"2026-09-30T14:05:00Z",
			wantSig: "GtlAC0qMiVsXM+hsfuIS8TqZibxp7UEnwXhvmRT56Eq7DM0K1y4qsmYwCwlTMTTv4GCBzH+johoBEwuPX9RbAQ==",
		},
		{
			// printf 'uapk-approval-v1\napr_2v3rnlhoyzq6jbvyt5mwx7kdfa\nfad508d1225aceb3591ca45aa87040223cacc4379c545e93efdeeaf9284982e7\nreject\ncontroller@corp.example\n2026-09-30T14:06:30Z' >/tmp/s
			// openssl pkeyutl -sign -rawin -inkey testdata/kat/approver.key -in /tmp/s | base64 -w0
			name: "reject by another approver",
			id:   testID, digest: testDigest, decision: approvals.Reject,
			approver: "controller@corp.example", signedAt: "2026-09-30T14:06:30Z",
			want: "uapk-approval-v1\n" +
				"apr_2v3rnlhoyzq6jbvyt5mwx7kdfa\n" +
				"fad508d1225aceb3591ca45aa87040223cacc4379c545e93efdeeaf9284982e7\n" +
				"reject\n" +
				"controller@corp.example\n" +
				"2026-09-30T14:06:30Z",
			wantSig: "8Qqr4ikN2ND9yBPbB8z0XweI8qhcm6UbY+TJO7khrCJfn+43i3lKattWZuF9KvUVsRRxTJuZQY+yCmlRVM3bAQ==",
		},
	}
	key := katKey(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := approvals.Statement(c.id, c.digest, c.decision, c.approver, c.signedAt)
			if string(got) != c.want {
				t.Fatalf("Statement:\n got %q\nwant %q", got, c.want)
			}
			sig := approvals.Sign(key, c.id, c.digest, c.decision, c.approver, c.signedAt)
			if sig != c.wantSig {
				t.Errorf("Sign = %s\nwant %s", sig, c.wantSig)
			}
			raw, err := base64.StdEncoding.DecodeString(sig)
			if err != nil || len(raw) != ed25519.SignatureSize {
				t.Fatalf("Sign returned %q: not standard base64 of 64 bytes (%v)", sig, err)
			}
			if !ed25519.Verify(key.Public().(ed25519.PublicKey), []byte(c.want), raw) {
				t.Error("signature does not verify over the statement bytes")
			}
		})
	}
}

// TestStatementFile pins the committed statement file to Statement, so that
// the openssl command above keeps describing what the proxy checks.
func TestStatementFile(t *testing.T) {
	file, err := os.ReadFile(filepath.Join("testdata", "kat", "statement.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := approvals.Statement(testID, testDigest, approvals.Approve, "cfo@corp.example", "2026-09-30T14:05:00Z")
	if string(got) != string(file) {
		t.Fatalf("testdata/kat/statement.txt differs from Statement:\nfile %q\n got %q", file, got)
	}

	// The PEM files hold the same key as katSeed.
	pemKey, err := os.ReadFile(filepath.Join("testdata", "kat", "approver.key"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(pemKey)
	if b == nil {
		t.Fatal("approver.key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !katKey(t).Equal(k) {
		t.Error("testdata/kat/approver.key is not the RFC 8032 TEST 1 key")
	}
	pemPub, err := os.ReadFile(filepath.Join("testdata", "kat", "approver.pub"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = pem.Decode(pemPub)
	if b == nil {
		t.Fatal("approver.pub: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(pub.(ed25519.PublicKey)); got != "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a" {
		t.Errorf("approver.pub = %s, want RFC 8032 TEST 1's public key", got)
	}
}
