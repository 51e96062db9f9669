package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
)

// Standard base64 has '+': a verifier key split on every '+' broke the
// signer for about half of all gateway keys. Every key must sign and open.
func TestCheckpointWithPlusInVerifierKey(t *testing.T) {
	const origin = "uapk-proxy/financial-ai-assistant"
	found := 0
	for i := 0; i < 200 && found < 5; i++ {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		vkey, err := CheckpointVerifierKey(origin, pub)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(vkey, "+") < 3 {
			continue // only keys whose base64 holds a '+' make the case
		}
		found++
		c := Checkpoint{Origin: origin, Size: 42, Hash: strings.Repeat("ab", 32)}
		msg, err := SignCheckpoint(c, priv)
		if err != nil {
			t.Fatalf("sign with %s: %v", vkey, err)
		}
		got, err := OpenCheckpoint(msg, origin, pub)
		if err != nil || got.Size != 42 || got.Hash != c.Hash {
			t.Fatalf("open with %s: %+v %v", vkey, got, err)
		}
	}
	if found == 0 {
		t.Fatal("no key with '+' in 200 tries")
	}
}
