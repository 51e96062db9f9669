package checkpoint

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// TestCheckpointFormat pins the C2SP checkpoint layout. Reproduce the body:
//
//	printf 'uapk-proxy/erp-agent\n42\n%s\n' "$(printf %s HASH | xxd -r -p | base64)"
func TestCheckpointFormat(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	hash := strings.Repeat("ab", 32)
	c := Checkpoint{Origin: "uapk-proxy/erp-agent", Size: 42, Hash: hash}
	msg, err := Sign(c, key)
	if err != nil {
		t.Fatal(err)
	}
	body := "uapk-proxy/erp-agent\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
	if !strings.HasPrefix(string(msg), body+"\n\u2014 uapk-proxy/erp-agent ") {
		t.Fatalf("note:\n%s", msg)
	}
	again, _ := Sign(c, key)
	if !bytes.Equal(msg, again) {
		t.Error("signing is not deterministic: a re-upload would look like a conflict")
	}
	// Any signed-note implementation can check it with the verifier key.
	vkey, err := VerifierKey(c.Origin, pub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := note.Open(msg, note.VerifierList(v)); err != nil || n.Text != body {
		t.Fatalf("note.Open: %v", err)
	}
	got, err := Open(msg, c.Origin, testKey(2).Public().(ed25519.PublicKey), pub)
	if err != nil || got != c {
		t.Fatalf("Open = %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		msg    []byte
		origin string
		key    ed25519.PrivateKey
	}{
		"other key":    {msg, c.Origin, testKey(2)},
		"other origin": {msg, "uapk-proxy/other", key},
		"edited":       {bytes.Replace(msg, []byte("\n42\n"), []byte("\n43\n"), 1), c.Origin, key},
	} {
		if _, err := Open(tc.msg, tc.origin, tc.key.Public().(ed25519.PublicKey)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := parse("o\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\next\n", "o"); err == nil {
		t.Error("extension lines accepted")
	}
	if _, err := parse("o\n01\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n", "o"); err == nil {
		t.Error("leading zero accepted")
	}
}

// TestRefusesBadInput: what Sign would have to invent is refused.
func TestRefusesBadInput(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for name, c := range map[string]Checkpoint{
		"upper-case hash": {Origin: "o", Size: 1, Hash: strings.ToUpper(hash)},
		"short hash":      {Origin: "o", Size: 1, Hash: "abab"},
		"origin with +":   {Origin: "a+b", Size: 1, Hash: hash},
		"origin empty":    {Origin: "", Size: 1, Hash: hash},
	} {
		if _, err := Sign(c, testKey(1)); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := Sign(Checkpoint{Origin: "o", Size: 1, Hash: hash}, ed25519.PrivateKey{1, 2}); err == nil {
		t.Error("signed with a truncated key")
	}
}

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
		vkey, err := VerifierKey(origin, pub)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(vkey, "+") < 3 {
			continue // only keys whose base64 holds a '+' make the case
		}
		found++
		c := Checkpoint{Origin: origin, Size: 42, Hash: strings.Repeat("ab", 32)}
		msg, err := Sign(c, priv)
		if err != nil {
			t.Fatalf("sign with %s: %v", vkey, err)
		}
		got, err := Open(msg, origin, pub)
		if err != nil || got.Size != 42 || got.Hash != c.Hash {
			t.Fatalf("open with %s: %+v %v", vkey, got, err)
		}
	}
	if found == 0 {
		t.Fatal("no key with '+' in 200 tries")
	}
}
