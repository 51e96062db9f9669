package keys_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// The openssl-* files in testdata were made with OpenSSL 3.0:
//
//	openssl genpkey -algorithm ed25519 -out openssl-ed25519.key
//	openssl pkey -in openssl-ed25519.key -pubout -out openssl-ed25519.pub
//	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out openssl-p256.key
//	openssl pkey -in openssl-p256.key -pubout -out openssl-p256.pub
//	openssl genpkey -algorithm x25519 -out openssl-x25519.key
//	openssl genpkey -algorithm ed448 -out openssl-ed448.key
//	openssl pkey -in openssl-ed448.key -pubout -out openssl-ed448.pub
//
// They are test keys, nothing signs with them. Git does not keep the 0600
// mode, so tests parse their bytes and never LoadPrivateFile them in place.

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestRoundTrip(t *testing.T) {
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := keys.PrivatePEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := keys.PublicPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(privPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("private PEM starts %q, want a PKCS#8 PRIVATE KEY block", privPEM[:min(len(privPEM), 40)])
	}
	if !bytes.HasPrefix(pubPEM, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Errorf("public PEM starts %q, want a PKIX PUBLIC KEY block", pubPEM[:min(len(pubPEM), 40)])
	}
	gotPriv, err := keys.ParsePrivate(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPriv.Equal(priv) {
		t.Error("ParsePrivate(PrivatePEM(k)) != k")
	}
	gotPub, err := keys.ParsePublic(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPub.Equal(pub) {
		t.Error("ParsePublic(PublicPEM(k)) != k")
	}
}

// TestOpenSSLKeys: keys made by OpenSSL load, and ours are what OpenSSL writes.
func TestOpenSSLKeys(t *testing.T) {
	priv, err := keys.ParsePrivate(readTestdata(t, "openssl-ed25519.key"))
	if err != nil {
		t.Fatalf("OpenSSL Ed25519 private key: %v", err)
	}
	pub, err := keys.ParsePublic(readTestdata(t, "openssl-ed25519.pub"))
	if err != nil {
		t.Fatalf("OpenSSL Ed25519 public key: %v", err)
	}
	if !pub.Equal(priv.Public()) {
		t.Error("the .pub is not the .key's public half")
	}
	// PKCS#8 and PKIX for Ed25519 have one encoding: our PEM is OpenSSL's, byte for byte.
	if got, _ := keys.PrivatePEM(priv); !bytes.Equal(got, readTestdata(t, "openssl-ed25519.key")) {
		t.Errorf("PrivatePEM differs from OpenSSL's:\n%s", got)
	}
	if got, _ := keys.PublicPEM(pub); !bytes.Equal(got, readTestdata(t, "openssl-ed25519.pub")) {
		t.Errorf("PublicPEM differs from OpenSSL's:\n%s", got)
	}
}

func TestParsePrivateRejects(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPKCS8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecSEC1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xPKCS8, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, _ := keys.Generate()
	edPKCS8, err := x509.MarshalPKCS8PrivateKey(ed)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := keys.PublicPEM(ed.Public().(ed25519.PublicKey))

	cases := []struct {
		name    string
		data    []byte
		notEd   bool // must be ErrNotEd25519
		mention string
	}{
		{name: "ECDSA P-256 PKCS#8 (crypto/ecdsa)", data: pemOf("PRIVATE KEY", ecPKCS8), notEd: true},
		{name: "ECDSA P-256 PKCS#8 (OpenSSL)", data: readTestdata(t, "openssl-p256.key"), notEd: true},
		{name: "X25519 PKCS#8 (crypto/ecdh)", data: pemOf("PRIVATE KEY", xPKCS8), notEd: true},
		{name: "X25519 PKCS#8 (OpenSSL)", data: readTestdata(t, "openssl-x25519.key"), notEd: true},
		{name: "Ed448 PKCS#8 (OpenSSL)", data: readTestdata(t, "openssl-ed448.key"), mention: "PKCS#8"},
		{name: "ECDSA SEC 1 block", data: pemOf("EC PRIVATE KEY", ecSEC1), mention: "PRIVATE KEY"},
		{name: "a public key", data: pubPEM, mention: "PRIVATE KEY"},
		{name: "Ed25519 DER under another type", data: pemOf("ENCRYPTED PRIVATE KEY", edPKCS8), mention: "PRIVATE KEY"},
		{name: "OpenSSH block type", data: pemOf("OPENSSH PRIVATE KEY", edPKCS8), mention: "PRIVATE KEY"},
		{name: "certificate block", data: pemOf("CERTIFICATE", edPKCS8), mention: "PRIVATE KEY"},
		{name: "raw DER, no PEM", data: edPKCS8},
		{name: "raw 64-byte key, no PEM", data: ed},
		{name: "empty", data: nil},
		{name: "garbage", data: []byte("hello, world\n")},
		{name: "right type, garbage DER", data: pemOf("PRIVATE KEY", []byte("not DER at all")), mention: "PKCS#8"},
		{name: "right type, truncated DER", data: pemOf("PRIVATE KEY", edPKCS8[:len(edPKCS8)-1]), mention: "PKCS#8"},
		{name: "broken base64 body", data: []byte("-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := keys.ParsePrivate(c.data)
			if err == nil {
				t.Fatalf("accepted: %d-byte key", len(k))
			}
			if k != nil {
				t.Errorf("returned a key with the error")
			}
			if c.notEd != errors.Is(err, keys.ErrNotEd25519) {
				t.Errorf("error %v: ErrNotEd25519 = %v, want %v", err, !c.notEd, c.notEd)
			}
			if c.mention != "" && !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
		})
	}
}

func TestParsePublicRejects(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPKIX, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xPKIX, err := x509.MarshalPKIXPublicKey(x.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := keys.Generate()
	edPKIX, _ := x509.MarshalPKIXPublicKey(pub)
	privPEM, _ := keys.PrivatePEM(priv)

	cases := []struct {
		name  string
		data  []byte
		notEd bool
	}{
		{name: "ECDSA P-256 PKIX (crypto/ecdsa)", data: pemOf("PUBLIC KEY", ecPKIX), notEd: true},
		{name: "ECDSA P-256 PKIX (OpenSSL)", data: readTestdata(t, "openssl-p256.pub"), notEd: true},
		{name: "X25519 PKIX", data: pemOf("PUBLIC KEY", xPKIX), notEd: true},
		{name: "Ed448 PKIX (OpenSSL)", data: readTestdata(t, "openssl-ed448.pub")},
		{name: "a private key", data: privPEM},
		{name: "Ed25519 DER under RSA PUBLIC KEY", data: pemOf("RSA PUBLIC KEY", edPKIX)},
		{name: "certificate block", data: pemOf("CERTIFICATE", edPKIX)},
		{name: "raw DER, no PEM", data: edPKIX},
		{name: "raw 32-byte key", data: pub},
		{name: "empty", data: nil},
		{name: "garbage", data: []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 user@host\n")},
		{name: "right type, garbage DER", data: pemOf("PUBLIC KEY", []byte{0x30, 0x03, 0x02, 0x01})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := keys.ParsePublic(c.data)
			if err == nil {
				t.Fatalf("accepted: %x", k)
			}
			if c.notEd != errors.Is(err, keys.ErrNotEd25519) {
				t.Errorf("error %v: ErrNotEd25519 = %v, want %v", err, !c.notEd, c.notEd)
			}
		})
	}
}

func TestWritePairRefusesToOverwrite(t *testing.T) {
	cases := []struct {
		name     string
		existing []string // files present before WritePair
	}{
		{"both exist", []string{".key", ".pub"}},
		{"only the key exists", []string{".key"}},
		{"only the public key exists", []string{".pub"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := filepath.Join(t.TempDir(), "approver")
			before := map[string][]byte{}
			for _, ext := range c.existing {
				data := []byte("precious " + ext + "\n")
				if err := os.WriteFile(prefix+ext, data, 0o600); err != nil {
					t.Fatal(err)
				}
				before[ext] = data
			}
			pub, priv, _ := keys.Generate()
			err := keys.WritePair(prefix, pub, priv)
			if err == nil {
				t.Fatal("WritePair overwrote an existing file")
			}
			if !strings.Contains(err.Error(), "already exists") {
				t.Errorf("error %q does not say the file already exists", err)
			}
			for _, ext := range []string{".key", ".pub"} {
				got, rerr := os.ReadFile(prefix + ext)
				want, existed := before[ext]
				switch {
				case existed && !bytes.Equal(got, want):
					t.Errorf("%s was changed: %q", ext, got)
				case !existed && !errors.Is(rerr, fs.ErrNotExist):
					// A refused WritePair must not leave half a pair: a new
					// key beside someone else's .pub would not match it.
					t.Errorf("%s was left behind by a refused WritePair", ext)
				}
			}
		})
	}
}

func TestWritePairThenLoad(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "cfo")
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WritePair(prefix, pub, priv); err != nil {
		t.Fatal(err)
	}
	got, err := keys.LoadPrivateFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Error("loaded another key than was written")
	}
	gotPub, err := keys.ParsePublic(mustRead(t, prefix+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !gotPub.Equal(pub) {
		t.Error(".pub holds another key")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadPrivateFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := keys.LoadPrivateFile(filepath.Join(dir, "missing.key"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "ec.key")
	if err := os.WriteFile(bad, readTestdata(t, "openssl-p256.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = keys.LoadPrivateFile(bad)
	if !errors.Is(err, keys.ErrNotEd25519) || !strings.Contains(err.Error(), bad) {
		t.Errorf("ECDSA key file: %v, want ErrNotEd25519 naming the file", err)
	}

	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.LoadPrivateFile(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage key file: %v, want an error naming the file", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.key")
	k1, created, err := keys.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("first call: created = false")
	}
	k2, created, err := keys.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("second call: created = true; it must load the existing key")
	}
	if !k1.Equal(k2) {
		t.Error("second call returned another key")
	}
	fromFile, err := keys.ParsePrivate(mustRead(t, path))
	if err != nil || !fromFile.Equal(k1) {
		t.Errorf("the file holds another key (%v)", err)
	}
}

func TestLoadOrCreateNeverReplaces(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		mode os.FileMode
		want string // in the error
	}{
		{"garbage file", []byte("not a key"), 0o600, "PRIVATE KEY"},
		{"ECDSA key", nil, 0o600, keys.ErrNotEd25519.Error()},
		{"Ed25519 key readable by others", nil, 0o644, "chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gateway.key")
			data := c.data
			if data == nil {
				data = readTestdata(t, "openssl-p256.key")
				if c.want == "chmod 600" {
					data = readTestdata(t, "openssl-ed25519.key")
				}
			}
			if err := os.WriteFile(path, data, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil { // whatever the umask
				t.Fatal(err)
			}
			k, created, err := keys.LoadOrCreate(path)
			if err == nil || k != nil || created {
				t.Fatalf("LoadOrCreate = %v, created %v, %v; want an error", k != nil, created, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if got := mustRead(t, path); !bytes.Equal(got, data) {
				t.Error("LoadOrCreate replaced an existing file")
			}
		})
	}
}

func TestLoadOrCreateMissingDir(t *testing.T) {
	_, _, err := keys.LoadOrCreate(filepath.Join(t.TempDir(), "no", "such", "dir", "gateway.key"))
	if err == nil {
		t.Fatal("created a key in a directory that does not exist")
	}
}
