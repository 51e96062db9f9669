package verifier

import (
	"bytes"
	"testing"
)

// FuzzVerifyRecord feeds arbitrary bytes to the record verifier, as a hostile
// evidence bundle or a damaged file would. It must never panic, and whatever
// it accepts must be canonical and re-derive its own hash.
func FuzzVerifyRecord(f *testing.F) {
	for _, r := range readKAT(f) {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v := New(1, "")
		ok := v.Add(raw)
		rep := v.Finish()
		if ok != rep.OK {
			t.Fatalf("Add said %v, report %+v", ok, rep)
		}
		body, err := CanonicalWithoutHash(raw)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("accepted a record CanonicalWithoutHash refuses: %v", err)
		}
		hash, err := ComputeHash(zeroHash, body)
		if err != nil || hash != rep.Head.Hash {
			t.Fatalf("accepted record hashes to %s (%v), report says %s", hash, err, rep.Head.Hash)
		}
		// Seq 1 verified: the same bytes must verify again as a stream.
		again, err := VerifyRecords(stream(bytes.Clone(raw)), "", 1)
		if err != nil || !again.OK || again.Head != rep.Head {
			t.Fatalf("second verification differs: %+v %v", again, err)
		}
	})
}
