package proxy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
)

// testTokens is a token set with one token per scope, named and valued
// after it, and "all" with every scope.
func testTokens(t *testing.T) *adminauth.Set {
	t.Helper()
	doc := "tokens:\n"
	for _, s := range adminauth.Scopes {
		doc += "  - {name: " + string(s) + ", sha256: " + adminauth.Hash("tok-"+string(s)) + ", scopes: [" + string(s) + "]}\n"
	}
	doc += "  - {name: all, sha256: " + adminauth.Hash("tok-all") + ", scopes: [read, decide, override, evidence]}\n"
	p := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := adminauth.LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return set
}
