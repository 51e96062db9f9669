package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestInitWritesFilesWithTheirModesAndNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{CertFile: 0o644, KeyFile: 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v (%v)", name, st.Mode().Perm(), mode, err)
		}
	}
	c := a.Certificate()
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA certificate %+v", c)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is not P-256: %T", c.PublicKey)
	}
	pemBytes, _ := os.ReadFile(filepath.Join(dir, CertFile))
	if string(pemBytes) != string(a.CertPEM()) {
		t.Errorf("CertPEM differs from ca.pem")
	}
	before, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if _, err := Init(dir, Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if string(before) != string(after) {
		t.Fatal("the key was overwritten")
	}
	// Either file alone blocks Init too.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, KeyFile), []byte("x"), 0o600)
	if _, err := Init(other, Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("Init beside an existing key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, CertFile)); err == nil {
		t.Errorf("ca.pem written beside a key it does not belong to")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	made, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != made.Fingerprint() || len(a.Fingerprint()) != 64 {
		t.Errorf("fingerprints %s %s", a.Fingerprint(), made.Fingerprint())
	}

	t.Run("key readable by others", func(t *testing.T) {
		os.Chmod(filepath.Join(dir, KeyFile), 0o644)
		defer os.Chmod(filepath.Join(dir, KeyFile), 0o600)
		if _, err := Load(dir, Options{}); !errors.Is(err, ErrKeyExposed) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		other := t.TempDir()
		Init(other, Options{})
		mixed := t.TempDir()
		copyFile(t, filepath.Join(dir, CertFile), filepath.Join(mixed, CertFile), 0o644)
		copyFile(t, filepath.Join(other, KeyFile), filepath.Join(mixed, KeyFile), 0o600)
		if _, err := Load(mixed, Options{}); !errors.Is(err, ErrNotCA) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		late := func() time.Time { return time.Now().Add(Validity + time.Hour) }
		if _, err := Load(dir, Options{Now: late}); !errors.Is(err, ErrNotCA) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("a leaf is not a CA", func(t *testing.T) {
		leaf, _ := a.Leaf("erp.example.com")
		keyDER, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
		_, err := Parse(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Options{})
		if !errors.Is(err, ErrNotCA) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("missing files", func(t *testing.T) {
		if _, err := Load(t.TempDir(), Options{}); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err %v", err)
		}
	})
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLeavesVerifyForNamesAndAddresses(t *testing.T) {
	a, err := Init(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	for _, host := range []string{"erp.example.com", "ERP.Example.com.", "127.0.0.1", "::1", "[::1]", "localhost"} {
		leaf, err := a.Leaf(host)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		name := host
		if h, err := canonicalHost(host); err == nil {
			name = h
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
		if life := leaf.Leaf.NotAfter.Sub(leaf.Leaf.NotBefore); life > LeafValidity+2*time.Hour {
			t.Errorf("%s: valid for %v", host, life)
		}
	}
	for _, bad := range []string{"", "a..b", "-a.example", "a b", "x/y", "*.example.com", string(make([]byte, 300))} {
		if _, err := a.Leaf(bad); !errors.Is(err, ErrBadHost) {
			t.Errorf("Leaf(%q): %v", bad, err)
		}
	}
}

func TestLeafCache(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	a, err := Init(t.TempDir(), Options{CacheSize: 2, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	// Many first requests for one host share one signing.
	var wg sync.WaitGroup
	certs := make([]*tls.Certificate, 32)
	for i := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			certs[i], _ = a.Leaf("erp.example.com")
		}()
	}
	wg.Wait()
	for _, c := range certs {
		if c != certs[0] {
			t.Fatal("concurrent requests got different leaves")
		}
	}
	if a.Minted() != 1 {
		t.Fatalf("minted %d", a.Minted())
	}
	a.Leaf("b.example.com")
	a.Leaf("erp.example.com") // most recent again
	a.Leaf("c.example.com")   // evicts b
	if a.Minted() != 3 {
		t.Fatalf("minted %d", a.Minted())
	}
	a.Leaf("erp.example.com")
	if a.Minted() != 3 {
		t.Errorf("a cached leaf was minted again")
	}
	a.Leaf("b.example.com")
	if a.Minted() != 4 {
		t.Errorf("the evicted leaf was not minted again")
	}
	// Near its expiry a leaf is replaced.
	now.Add(int64(LeafValidity - time.Hour))
	fresh, _ := a.Leaf("erp.example.com")
	if fresh == certs[0] || a.Minted() != 5 {
		t.Errorf("expiring leaf kept")
	}
}

// A real TLS handshake: a client trusting the CA accepts the leaf, one
// that does not refuses it.
func TestHandshake(t *testing.T) {
	a, err := Init(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return a.Leaf("127.0.0.1")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(a.Certificate())
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("trusting client: %v", err)
	}
	c.Close()
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: x509.NewCertPool()})
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &uae) {
		t.Errorf("untrusting client: %v", err)
	}
}
