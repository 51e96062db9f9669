package gate

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// referenceDigest is the request digest as docs/reference.md#request-digest
// words it, written plainly: the reference digestOf must match.
func referenceDigest(method, url string, body []byte) string {
	bh := sha256.Sum256(body)
	h := sha256.New()
	h.Write([]byte(method + "\n" + url + "\n" + hex.EncodeToString(bh[:])))
	return hex.EncodeToString(h.Sum(nil))
}

func FuzzDigestMatchesReference(f *testing.F) {
	f.Add("POST", "http://erp.example.com/api/v1/journal-entries", []byte(`{"amount":1200000}`))
	f.Add("GET", "https://erp.example.com:8443/api/v1/accounts/1010/balance?as_of=2026-09-30", []byte(nil))
	f.Add("GET", "http://h/"+strings.Repeat("a", 600), []byte("x")) // past the stack buffer
	f.Add("", "", []byte{})
	f.Fuzz(func(t *testing.T, method, url string, body []byte) {
		if got, want := Digest(method, url, body), referenceDigest(method, url, body); got != want {
			t.Fatalf("Digest(%q, %q, %q) = %s, reference %s", method, url, body, got, want)
		}
		sum := sha256.Sum256(body)
		if got, want := hexString(sum), hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("hexString = %s, want %s", got, want)
		}
	})
}
