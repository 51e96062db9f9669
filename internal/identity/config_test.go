package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	writeFile(t, file, []byte(`{"keys":[]}`))
	ok := Config{JWKS: "https://idp.example.test/.well-known/jwks.json", Issuer: testIssuer, Audience: testAudience}
	with := func(edit func(*Config)) Config { c := ok; edit(&c); return c }

	tests := []struct {
		name string
		cfg  Config
		want []string // each a problem the error must list; none: valid
	}{
		{"https URL", ok, nil},
		{"file", with(func(c *Config) { c.JWKS = file }), nil},
		{"HTTPS URL in capitals", with(func(c *Config) { c.JWKS = "HTTPS://idp.example.test/jwks" }), nil},
		{"all empty", Config{}, []string{"identity.issuer: required", "identity.audience: required", "identity.jwks: required"}},
		{"blank issuer", with(func(c *Config) { c.Issuer = "  " }), []string{"identity.issuer: required"}},
		{"no audience", with(func(c *Config) { c.Audience = "" }), []string{"identity.audience: required"}},
		{"http URL", with(func(c *Config) { c.JWKS = "http://idp.example.test/jwks" }), []string{"identity.jwks: http:// is refused"}},
		{"ftp URL", with(func(c *Config) { c.JWKS = "ftp://idp.example.test/jwks" }), []string{`identity.jwks: scheme "ftp"`}},
		{"file URL", with(func(c *Config) { c.JWKS = "file://" + file }), []string{`identity.jwks: scheme "file"`}},
		{"https without host", with(func(c *Config) { c.JWKS = "https:///jwks" }), []string{"identity.jwks: https URL has no host"}},
		{"missing file", with(func(c *Config) { c.JWKS = filepath.Join(dir, "nope.json") }), []string{"identity.jwks: " + filepath.Join(dir, "nope.json") + ": no such file"}},
		{"directory", with(func(c *Config) { c.JWKS = dir }), []string{"identity.jwks: " + dir + " is a directory"}},
		{"http URL and no issuer", with(func(c *Config) { c.JWKS = "http://x"; c.Issuer = "" }), []string{"identity.issuer: required", "identity.jwks: http:// is refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Check()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("Check: %v, want ErrConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check: %q lacks %q", err, w)
				}
			}
			if got := strings.Count(err.Error(), "identity."); got != len(tt.want) {
				t.Errorf("Check: %q lists %d problems, want %d", err, got, len(tt.want))
			}
			// New refuses the same config, without touching the network.
			if _, nerr := New(context.Background(), tt.cfg); !errors.Is(nerr, ErrConfig) {
				t.Errorf("New: %v, want ErrConfig", nerr)
			}
		})
	}
}

func TestNewRefusesKeySets(t *testing.T) {
	k := loadKeys(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := func(keys ...jose.JSONWebKey) []byte { return mustJSON(t, jose.JSONWebKeySet{Keys: keys}) }
	pub := func(s signer) jose.JSONWebKey { return s.jwk() }
	secret := jose.JSONWebKey{Key: k.rsaPublicPEM(t), KeyID: "hmac", Algorithm: "HS256"}

	tests := []struct {
		name string
		body []byte
		want error // nil: New succeeds
		keys int   // usable keys when New succeeds
	}{
		{"only a symmetric key", set(secret), ErrNoKeys, 0},
		{"RSA 1024", set(jose.JSONWebKey{Key: &rsa1024.PublicKey, KeyID: "small"}), ErrNoKeys, 0},
		{"EC P-384", set(jose.JSONWebKey{Key: &p384.PublicKey, KeyID: "p384"}), ErrNoKeys, 0},
		{"private key", set(jose.JSONWebKey{Key: k.ec.priv, KeyID: "leaked"}), ErrNoKeys, 0},
		{"use enc", set(jose.JSONWebKey{Key: k.rsa.priv.Public(), KeyID: "enc", Use: "enc"}), ErrNoKeys, 0},
		{"RSA key for RS512", set(jose.JSONWebKey{Key: k.rsa.priv.Public(), KeyID: "rs512", Algorithm: "RS512"}), ErrNoKeys, 0},
		{"empty set", []byte(`{"keys":[]}`), ErrNoKeys, 0},
		{"not JSON", []byte("<html>"), ErrJWKS, 0},
		{"no keys member", []byte(`{"kty":"RSA"}`), ErrJWKS, 0},
		{"over 1 MiB", []byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`), ErrJWKS, 0},
		{"unknown key type beside good keys", []byte(`{"keys":[{"kty":"XYZ","kid":"odd"},` +
			string(mustJSON(t, pub(k.ed))) + `]}`), nil, 1},
		{"symmetric and small keys beside good keys", set(secret, jose.JSONWebKey{Key: &rsa1024.PublicKey, KeyID: "small"},
			pub(k.rsa), pub(k.ec)), nil, 2},
		{"duplicate kid and alg", set(pub(k.ec), jose.JSONWebKey{Key: &p384.PublicKey, KeyID: k.ec.kid},
			jose.JSONWebKey{Key: newECSigner(t, k.ec.kid).priv.Public(), KeyID: k.ec.kid}), nil, 1},
		{"one kid, two algs", set(pub(k.rsa), jose.JSONWebKey{Key: k.ed.priv.Public(), KeyID: k.rsa.kid}), nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "jwks.json")
			writeFile(t, file, tt.body)
			logs := &logBuffer{}
			v, err := New(context.Background(), Config{JWKS: file, Issuer: testIssuer, Audience: testAudience, Now: newClock().Now, Logger: zerolog.New(logs)})
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("New: %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := v.keys.Load().n; got != tt.keys {
				t.Errorf("%d usable keys, want %d", got, tt.keys)
			}
			if !strings.Contains(logs.String(), "jwks key ignored") && tt.name != "one kid, two algs" {
				t.Errorf("no key logged as ignored:\n%s", logs)
			}
		})
	}
}

// An https key set that cannot be fetched fails New.
func TestNewFetchFailures(t *testing.T) {
	k := loadKeys(t)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the key set was fetched over plain http")
		_, _ = w.Write(jwksOf(t, k.rsa))
	}))
	defer plain.Close()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		client  func(*httptest.Server) *http.Client
	}{
		{"status 404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, nil},
		{"redirect to http", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
		}, nil},
		{"body over 1 MiB", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`))
		}, nil},
		// The default client trusts the system roots only, not the test CA.
		{"untrusted certificate with the default client", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(jwksOf(t, k.rsa))
		}, func(*httptest.Server) *http.Client { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(tt.handler)
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
			srv.StartTLS()
			defer srv.Close()
			client := srv.Client()
			if tt.client != nil {
				client = tt.client(srv)
			}
			_, err := New(context.Background(), Config{JWKS: srv.URL + "/jwks", Issuer: testIssuer, Audience: testAudience, HTTPClient: client})
			if !errors.Is(err, ErrJWKS) {
				t.Fatalf("New: %v, want ErrJWKS", err)
			}
		})
	}
}

// A redirect to another https URL is followed.
func TestNewFollowsHTTPSRedirect(t *testing.T) {
	k := loadKeys(t)
	f := fixture{srv: newJWKSServer(t, jwksOf(t, k.rsa)), clk: newClock(), log: &logBuffer{}}
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.srv.URL+"/jwks", http.StatusFound)
	}))
	front.TLS = f.srv.TLS
	front.StartTLS()
	defer front.Close()
	cfg := serverConfig(f.srv, f.clk, f.log)
	cfg.JWKS = front.URL
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := v.Verify(context.Background(), mint(t, k.rsa, claims())); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultClient(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	c := defaultClient()
	if c.Timeout != 10*time.Second {
		t.Errorf("Timeout = %v, want 10s", c.Timeout)
	}
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T", c.Transport)
	}
	if tr.Proxy != nil {
		t.Errorf("Transport.Proxy is set; the key set must not go through a proxy from the environment")
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.RootCAs != nil {
		t.Errorf("TLS config %+v: want the system roots", tr.TLSClientConfig)
	}

	// The Verifier copies the caller's client rather than changing it.
	srv := newJWKSServer(t, jwksOf(t, loadKeys(t).ed))
	client := srv.Client()
	if _, err := New(context.Background(), Config{JWKS: srv.URL, Issuer: testIssuer, Audience: testAudience, HTTPClient: client}); err != nil {
		t.Fatal(err)
	}
	if client.CheckRedirect != nil {
		t.Errorf("New changed the caller's client")
	}
}
