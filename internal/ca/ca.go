package ca

import (
	"container/list"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
)

// File names inside a CA directory.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca.key"
)

const (
	// Validity is how long a CA made by Init is valid.
	Validity = 10 * 365 * 24 * time.Hour
	// LeafValidity is how long a minted leaf is valid. Leaves live only in
	// memory; a short life bounds what a leaked one is worth.
	LeafValidity = 7 * 24 * time.Hour
	// renewBefore: a cached leaf this close to expiry is minted anew.
	renewBefore = 24 * time.Hour
	// DefaultCacheSize bounds the leaf cache (one entry per host).
	DefaultCacheSize = 1024
	// backdate covers clients whose clocks run a little behind.
	backdate = time.Hour
)

// Sentinel errors; match with errors.Is.
var (
	// ErrExists: Init found ca.pem or ca.key already there.
	ErrExists = errors.New("CA files already exist")
	// ErrKeyExposed: ca.key can be read by group or others.
	ErrKeyExposed = errors.New("CA key is readable by other users")
	// ErrNotCA: the certificate is not a usable CA (not a CA, expired, or
	// not matching its key).
	ErrNotCA = errors.New("not a usable CA")
	// ErrBadHost: a leaf was asked for something that is neither an IP
	// address nor a DNS host name.
	ErrBadHost = errors.New("not a host name or IP address")
)

// Options tunes an Authority; the zero value is the default.
type Options struct {
	// CacheSize bounds the number of cached leaves (DefaultCacheSize if 0).
	CacheSize int
	// Now is the clock used for validity periods (time.Now if nil).
	Now func() time.Time
}

// Authority signs leaf certificates for intercepted hosts.
type Authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	now     func() time.Time
	max     int
	minted  atomic.Uint64

	mu       sync.Mutex
	lru      *list.List // of *leaf, most recent first
	byHost   map[string]*list.Element
	inflight map[string]*mint
}

type leaf struct {
	host     string
	cert     *tls.Certificate
	notAfter time.Time
}

// mint is one signing in progress; others asking for the same host wait.
type mint struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// Init creates a new CA in dir: ca.key (PKCS#8 PEM, 0600) and ca.pem
// (0644). It refuses to overwrite either file.
func Init(dir string, o Options) (*Authority, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%w: %s (remove it first if you really mean to replace the CA every client trusts)", ErrExists, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	now := clock(o)()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			Organization: []string{"uapk-proxy"},
			CommonName:   strings.TrimSpace("uapk-proxy interception CA " + host + " " + now.UTC().Format("2006-01-02")),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // leaves only, never intermediate CAs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return Parse(certPEM, keyPEM, o)
}

// writeNew creates path exclusively with exactly mode, durably.
func writeNew(path string, data []byte, mode os.FileMode) error {
	err := fsutil.WriteNew(path, data, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	return err
}

// Load reads the CA in dir made by Init (or any CA with a PKCS#8 key).
func Load(dir string, o Options) (*Authority, error) {
	keyPath := filepath.Join(dir, KeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; chmod 600 it", ErrKeyExposed, keyPath, st.Mode().Perm())
	}
	keyPEM, err := fsutil.ReadRegular(keyPath, 64<<10)
	if err != nil {
		return nil, err
	}
	certPEM, err := fsutil.ReadRegular(filepath.Join(dir, CertFile), 1<<20)
	if err != nil {
		return nil, err
	}
	a, err := Parse(certPEM, keyPEM, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return a, nil
}

// Parse builds an Authority from a PEM certificate and a PKCS#8 PEM key.
func Parse(certPEM, keyPEM []byte, o Options) (*Authority, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: %s holds no PEM CERTIFICATE", ErrNotCA, CertFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotCA, CertFile, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM PRIVATE KEY (PKCS#8)", ErrNotCA, KeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotCA, KeyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %s: key of type %T cannot sign", ErrNotCA, KeyFile, k)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, fmt.Errorf("%w: %s does not belong to %s", ErrNotCA, KeyFile, CertFile)
	}
	now := clock(o)()
	switch {
	case !cert.IsCA || !cert.BasicConstraintsValid:
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrNotCA, CertFile)
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("%w: %s may not sign certificates (key usage)", ErrNotCA, CertFile)
	case now.After(cert.NotAfter) || now.Before(cert.NotBefore):
		return nil, fmt.Errorf("%w: %s is valid only from %s to %s", ErrNotCA, CertFile,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	size := o.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Authority{
		cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: signer,
		now: clock(o), max: size, lru: list.New(), byHost: map[string]*list.Element{}, inflight: map[string]*mint{},
	}, nil
}

// CertPEM returns the CA certificate, PEM encoded: what clients must trust.
func (a *Authority) CertPEM() []byte { return a.certPEM }

// Certificate returns the parsed CA certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Fingerprint is the hex SHA-256 of the CA certificate's DER bytes.
func (a *Authority) Fingerprint() string {
	s := sha256.Sum256(a.cert.Raw)
	return hex.EncodeToString(s[:])
}

// Minted counts the leaves signed so far (cache misses).
func (a *Authority) Minted() uint64 { return a.minted.Load() }

// Leaf returns a certificate for host (a DNS name or an IP address, without
// port), from the cache when one is there and not near expiry.
func (a *Authority) Leaf(host string) (*tls.Certificate, error) {
	host, err := canonicalHost(host)
	if err != nil {
		return nil, err
	}
	now := a.now()
	a.mu.Lock()
	if el, ok := a.byHost[host]; ok {
		l := el.Value.(*leaf)
		if now.Before(l.notAfter.Add(-renewBefore)) {
			a.lru.MoveToFront(el)
			a.mu.Unlock()
			return l.cert, nil
		}
		a.lru.Remove(el)
		delete(a.byHost, host)
	}
	if m, ok := a.inflight[host]; ok {
		a.mu.Unlock()
		<-m.done
		return m.cert, m.err
	}
	m := &mint{done: make(chan struct{})}
	a.inflight[host] = m
	a.mu.Unlock()

	m.cert, m.err = a.sign(host, now)

	a.mu.Lock()
	delete(a.inflight, host)
	if m.err == nil {
		a.byHost[host] = a.lru.PushFront(&leaf{host: host, cert: m.cert, notAfter: m.cert.Leaf.NotAfter})
		for a.lru.Len() > a.max {
			old := a.lru.Remove(a.lru.Back()).(*leaf)
			delete(a.byHost, old.host)
		}
	}
	a.mu.Unlock()
	close(m.done)
	return m.cert, m.err
}

func (a *Authority) sign(host string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(LeafValidity)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %s: %w", host, err)
	}
	leafCert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	a.minted.Add(1)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leafCert}, nil
}

// canonicalHost lowercases a DNS name and checks its syntax, or returns an
// IP address in its standard form. Brackets around IPv6 are dropped.
func canonicalHost(h string) (string, error) {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if ip := net.ParseIP(h); ip != nil {
		return ip.String(), nil
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" || len(h) > 253 {
		return "", fmt.Errorf("%w: %q", ErrBadHost, h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%w: %q", ErrBadHost, h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%w: %q", ErrBadHost, h)
			}
		}
	}
	return h, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

func clock(o Options) func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}
