package upstreamauth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	writeFile(t, good, "s3cr3t-value\n")
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, " \n")
	twoLines := filepath.Join(dir, "two-lines")
	writeFile(t, twoLines, "first\nsecond\n")
	missing := filepath.Join(dir, "missing")
	link := filepath.Join(dir, "link")
	if err := os.Symlink("good", link); err != nil {
		t.Fatal(err)
	}
	oauth := func(mod func(*OAuth2)) *OAuth2 {
		o := &OAuth2{TokenURL: "https://idp.example.com/oauth2/token", ClientID: "uapk", ClientSecretFile: good, Scopes: []string{"erp.read", "erp:write"}}
		if mod != nil {
			mod(o)
		}
		return o
	}

	tests := []struct {
		name string
		cfg  Config
		// want lists each expected problem as "path: part of the message",
		// in the order Check reports them; nil means no problem.
		want []string
	}{
		{"header and value file", Config{Header: "Authorization", ValueFile: good}, nil},
		{"lower-case header", Config{Header: "x-api-key", ValueFile: good}, nil},
		{"value file through a symlink", Config{Header: "X-Api-Key", ValueFile: link}, nil},
		{"oauth2", Config{OAuth2: oauth(nil)}, nil},
		{"oauth2 on 127.0.0.1 over http", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "http://127.0.0.1:8080/token" })}, nil},
		{"oauth2 on localhost over http", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "http://localhost/token" })}, nil},
		{"oauth2 on ::1 over http", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "http://[::1]:9000/token" })}, nil},
		{"oauth2 without scopes", Config{OAuth2: oauth(func(o *OAuth2) { o.Scopes = nil })}, nil},

		{"nothing", Config{}, []string{"upstream_auth: set header with value_file, or oauth2"}},
		{"both", Config{Header: "Authorization", ValueFile: good, OAuth2: oauth(nil)}, []string{"upstream_auth: not both"}},
		{"header alone", Config{Header: "Authorization"}, []string{"upstream_auth.value_file: required with header"}},
		{"value file alone", Config{ValueFile: good}, []string{"upstream_auth.header: required with value_file"}},
		{"header not a token", Config{Header: "X Api Key", ValueFile: good}, []string{"upstream_auth.header: not a header name"}},
		{"header with colon", Config{Header: "Authorization:", ValueFile: good}, []string{"upstream_auth.header: not a header name"}},
		{"header with underscore", Config{Header: "X_Api_Key", ValueFile: good}, []string{`upstream_auth.header: "X_Api_Key" has an underscore`}},
		{"host", Config{Header: "host", ValueFile: good}, []string{"upstream_auth.header: Host cannot carry"}},
		{"content-length", Config{Header: "content-length", ValueFile: good}, []string{"upstream_auth.header: Content-Length cannot carry"}},
		{"transfer-encoding", Config{Header: "Transfer-Encoding", ValueFile: good}, []string{"upstream_auth.header: Transfer-Encoding cannot carry"}},
		{"connection", Config{Header: "CONNECTION", ValueFile: good}, []string{"upstream_auth.header: Connection cannot carry"}},
		{"proxy's own header", Config{Header: "X-UAPK-App", ValueFile: good}, []string{"upstream_auth.header: X-Uapk-App cannot carry"}},
		{"value file missing", Config{Header: "Authorization", ValueFile: missing}, []string{"upstream_auth.value_file: no such file"}},
		{"value file a directory", Config{Header: "Authorization", ValueFile: dir}, []string{"upstream_auth.value_file: not a regular file"}},
		{"value file empty", Config{Header: "Authorization", ValueFile: empty}, []string{"upstream_auth.value_file: empty"}},
		{"value file two lines", Config{Header: "Authorization", ValueFile: twoLines}, []string{"upstream_auth.value_file: control byte"}},
		{"every header problem at once", Config{Header: "Host", ValueFile: missing}, []string{
			"upstream_auth.header: Host cannot carry",
			"upstream_auth.value_file: no such file",
		}},

		{"token url over http elsewhere", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "http://idp.example.com/token" })}, []string{"upstream_auth.oauth2.token_url: must be https"}},
		{"token url http on a private address", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "http://10.0.0.1/token" })}, []string{"upstream_auth.oauth2.token_url: must be https"}},
		{"token url other scheme", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "ftp://idp.example.com/token" })}, []string{`upstream_auth.oauth2.token_url: scheme "ftp"`}},
		{"token url without host", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "https:///token" })}, []string{"upstream_auth.oauth2.token_url: needs a host"}},
		{"token url relative", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "/token" })}, []string{"upstream_auth.oauth2.token_url: needs a host"}},
		{"token url with user info", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "https://uapk:pw@idp.example.com/token" })}, []string{"upstream_auth.oauth2.token_url: user information"}},
		{"token url not a url", Config{OAuth2: oauth(func(o *OAuth2) { o.TokenURL = "https://idp example.com/%zz" })}, []string{"upstream_auth.oauth2.token_url: not a URL"}},
		{"client id with newline", Config{OAuth2: oauth(func(o *OAuth2) { o.ClientID = "uapk\n" })}, []string{"upstream_auth.oauth2.client_id: control character"}},
		{"client secret file empty", Config{OAuth2: oauth(func(o *OAuth2) { o.ClientSecretFile = empty })}, []string{"upstream_auth.oauth2.client_secret_file: empty"}},
		{"scope with a space", Config{OAuth2: oauth(func(o *OAuth2) { o.Scopes = []string{"erp.read", "erp write"} })}, []string{"upstream_auth.oauth2.scopes[1]: not a scope token"}},
		{"empty scope", Config{OAuth2: oauth(func(o *OAuth2) { o.Scopes = []string{""} })}, []string{"upstream_auth.oauth2.scopes[0]: not a scope token"}},
		{"every oauth2 problem at once", Config{OAuth2: &OAuth2{Scopes: []string{`a"b`}}}, []string{
			"upstream_auth.oauth2.token_url: required",
			"upstream_auth.oauth2.client_id: required",
			"upstream_auth.oauth2.client_secret_file: required",
			"upstream_auth.oauth2.scopes[0]: not a scope token",
		}},
		{"oauth2 secret file missing", Config{OAuth2: oauth(func(o *OAuth2) { o.ClientSecretFile = missing })}, []string{"upstream_auth.oauth2.client_secret_file: no such file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Check()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Check = %v, want an error matching ErrInvalidConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Check = %T, want *ConfigError", err)
			}
			if len(ce.Problems) != len(tc.want) {
				t.Fatalf("Check found %d problems, want %d:\n%v", len(ce.Problems), len(tc.want), err)
			}
			lines := strings.Split(err.Error(), "\n")
			for i, w := range tc.want {
				path, part, _ := strings.Cut(w, ": ")
				if ce.Problems[i].Path != path {
					t.Errorf("problem %d path = %q, want %q", i, ce.Problems[i].Path, path)
				}
				if !strings.Contains(ce.Problems[i].Message, part) {
					t.Errorf("problem %d = %q, want it to say %q", i, ce.Problems[i].Message, part)
				}
				if !strings.HasPrefix(lines[i], path+": ") {
					t.Errorf("line %d = %q, want it to start with %q", i, lines[i], path+": ")
				}
			}
			assertNoSecret(t, "Check's error", err.Error(), "s3cr3t-value", "first", "second")
		})
	}
}

// TestCheckLeavesTheNetworkAlone: Check of an oauth2 section whose endpoint
// does not answer still returns at once, having sent nothing.
func TestCheckLeavesTheNetworkAlone(t *testing.T) {
	ts := newTokenServer(t, "uapk", "pw", 60)
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "pw")
	cfg := Config{OAuth2: &OAuth2{TokenURL: ts.tokenURL(), ClientID: "uapk", ClientSecretFile: secret}}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	if n := ts.requests.Load(); n != 0 {
		t.Fatalf("Check sent %d requests to the token endpoint", n)
	}
}

func TestNewChecksConfig(t *testing.T) {
	_, err := New(t.Context(), Config{Header: "Content-Length", ValueFile: "/nonexistent"})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
}
