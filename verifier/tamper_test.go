package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// forge rewrites a stored record through edit and gives it a correct hash for
// its (possibly edited) prev: what an attacker with write access to the file
// and this package's source can produce.
func forge(t *testing.T, raw []byte, edit func(r map[string]any)) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var r map[string]any
	if err := d.Decode(&r); err != nil {
		t.Fatal(err)
	}
	edit(r)
	delete(r, "hash")
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	body, err := CanonicalWithoutHash(b)
	if err != nil {
		t.Fatal(err)
	}
	if r["hash"], err = ComputeHash(r["prev"].(string), body); err != nil {
		t.Fatal(err)
	}
	if b, err = json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	if b, err = jcs.Transform(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hashOf(t *testing.T, raw []byte) string {
	t.Helper()
	var r Head
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r.Hash
}

// putHead stores raw's seq, hash and time as the ledger's head, as a
// writer would after appending it.
func putHead(t *testing.T, tx *bolt.Tx, raw []byte) {
	t.Helper()
	var r Head
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	h, _ := json.Marshal(r)
	if err := tx.Bucket([]byte(ledger.BucketMeta)).Put([]byte("head"), h); err != nil {
		t.Fatal(err)
	}
}

// TestTamper writes 10 records with Append, damages the file directly through
// bbolt, and expects Verify (on a read-only open, as the offline verify
// command does it) to name the first bad record and why.
func TestTamper(t *testing.T) {
	const n = 10
	type env struct {
		t    *testing.T
		tx   *bolt.Tx
		recs *bolt.Bucket
		orig map[uint64][]byte
	}
	get := func(e env, seq uint64) []byte { return bytes.Clone(e.recs.Get(seqKey(seq))) }
	put := func(e env, seq uint64, raw []byte) {
		if err := e.recs.Put(seqKey(seq), raw); err != nil {
			e.t.Fatal(err)
		}
	}
	del := func(e env, seq uint64) {
		if err := e.recs.Delete(seqKey(seq)); err != nil {
			e.t.Fatal(err)
		}
	}
	replace := func(e env, seq uint64, old, new string) {
		raw := get(e, seq)
		if !bytes.Contains(raw, []byte(old)) {
			e.t.Fatalf("record %d has no %q", seq, old)
		}
		put(e, seq, bytes.Replace(raw, []byte(old), []byte(new), 1))
	}

	tests := []struct {
		name     string
		tamper   func(e env)
		anchors  func(e env) []Head
		wantSeq  uint64
		reason   string
		noWriter bool // write-mode Open must refuse the file
	}{
		{
			name:    "flip a byte in data",
			tamper:  func(e env) { replace(e, 4, `"amount":"103.00"`, `"amount":"903.00"`) },
			wantSeq: 4, reason: ReasonHashMismatch,
		},
		{
			name:    "flip a byte in the stored hash",
			tamper:  func(e env) { h := hashOf(e.t, get(e, 4)); replace(e, 4, h, flipHex(h)) },
			wantSeq: 4, reason: ReasonHashMismatch,
		},
		{
			name:    "flip a structural byte",
			tamper:  func(e env) { replace(e, 4, `"seq":4`, `"seq"x4`) },
			wantSeq: 4, reason: ReasonBadRecord,
		},
		{
			name:    "same content, not canonical",
			tamper:  func(e env) { replace(e, 4, `"seq":4`, `"seq": 4`) },
			wantSeq: 4, reason: ReasonBadRecord,
		},
		{
			name:    "delete a middle record",
			tamper:  func(e env) { del(e, 5) },
			wantSeq: 5, reason: ReasonSeqGap,
		},
		{
			name: "swap two records",
			tamper: func(e env) {
				r3, r7 := get(e, 3), get(e, 7)
				put(e, 3, r7)
				put(e, 7, r3)
			},
			wantSeq: 3, reason: ReasonKeyMismatch,
		},
		{
			name:    "truncate the tail",
			tamper:  func(e env) { del(e, 9); del(e, 10) },
			wantSeq: 9, reason: ReasonHeadMismatch, noWriter: true,
		},
		{
			name:    "truncate the tail and rewrite the head: invisible without an anchor",
			tamper:  func(e env) { del(e, 9); del(e, 10); putHead(e.t, e.tx, get(e, 8)) },
			wantSeq: 0, reason: "",
		},
		{
			name:    "truncate the tail and rewrite the head, with an anchor",
			tamper:  func(e env) { del(e, 9); del(e, 10); putHead(e.t, e.tx, get(e, 8)) },
			anchors: func(e env) []Head { return []Head{{Seq: n, Hash: hashOf(e.t, e.orig[n])}} },
			wantSeq: 9, reason: ReasonTruncated,
		},
		{
			name:    "head rolled back behind the records",
			tamper:  func(e env) { putHead(e.t, e.tx, get(e, 8)) },
			wantSeq: 9, reason: ReasonHeadMismatch, noWriter: true,
		},
		{
			name:    "head missing",
			tamper:  func(e env) { _ = e.tx.Bucket([]byte(ledger.BucketMeta)).Delete([]byte("head")) },
			wantSeq: 1, reason: ReasonHeadMismatch, noWriter: true,
		},
		{
			name: "fork: record replaced by a self-consistent one",
			tamper: func(e env) {
				put(e, 6, forge(e.t, get(e, 6), func(r map[string]any) { r["decision"] = "deny" }))
			},
			wantSeq: 7, reason: ReasonPrevMismatch,
		},
		{
			name: "fork of the last record with the head rewritten, with an anchor",
			tamper: func(e env) {
				f := forge(e.t, get(e, n), func(r map[string]any) { r["decision"] = "deny" })
				put(e, n, f)
				putHead(e.t, e.tx, f)
			},
			anchors: func(e env) []Head { return []Head{{Seq: n, Hash: hashOf(e.t, e.orig[n])}} },
			wantSeq: n, reason: ReasonAnchorMismatch,
		},
		{
			name: "re-hashed record with an earlier time",
			tamper: func(e env) {
				put(e, 6, forge(e.t, get(e, 6), func(r map[string]any) { r["time"] = "2001-01-01T00:00:00.000000000Z" }))
			},
			wantSeq: 6, reason: ReasonTimeOrder,
		},
		{
			name: "re-hashed record with a float",
			tamper: func(e env) {
				put(e, 6, forge(e.t, get(e, 6), func(r map[string]any) { r["data"] = map[string]any{"amount": 1.5} }))
			},
			wantSeq: 6, reason: ReasonBadRecord,
		},
		{
			name: "re-hashed record with an unknown kind",
			tamper: func(e env) {
				put(e, 6, forge(e.t, get(e, 6), func(r map[string]any) { r["kind"] = "note" }))
			},
			wantSeq: 6, reason: ReasonBadRecord,
		},
		{
			name: "stray key after the last record",
			tamper: func(e env) {
				if err := e.recs.Put([]byte("x"), get(e, n)); err != nil {
					e.t.Fatal(err)
				}
			},
			wantSeq: n + 1, reason: ReasonBadKey, noWriter: true,
		},
		{
			name:    "record 0 before record 1",
			tamper:  func(e env) { put(e, 0, get(e, 1)) },
			wantSeq: 1, reason: ReasonBadKey,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l, err := ledger.Open(path, ledger.Options{})
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, l, n)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}

			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := env{t: t, orig: map[uint64][]byte{}}
			err = db.Update(func(tx *bolt.Tx) error {
				e.tx, e.recs = tx, tx.Bucket([]byte(ledger.BucketRecords))
				for s := uint64(1); s <= n; s++ {
					e.orig[s] = get(e, s)
				}
				tt.tamper(e)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			if tt.noWriter {
				if _, err := ledger.Open(path, ledger.Options{}); !errors.Is(err, ledger.ErrCorrupt) {
					t.Errorf("write-mode open of the damaged file: %v, want ErrCorrupt", err)
				}
			}
			ro := openAt(t, path, ledger.Options{ReadOnly: true})
			var anchors []Head
			if tt.anchors != nil {
				anchors = tt.anchors(e)
			}
			rep, err := Verify(context.Background(), ro, anchors...)
			if err != nil {
				t.Fatal(err)
			}
			// The parallel check says what one Verifier fed record by
			// record says, whichever batch the problem falls in.
			if want := verifyInOrder(t, ro, anchors...); !reflect.DeepEqual(rep, want) {
				t.Fatalf("Verify %+v %+v, one Verifier in order %+v %+v", rep, rep.Problem, want, want.Problem)
			}
			for _, size := range []int{1, 3} {
				withBatch(t, size)
				if again, err := Verify(context.Background(), ro, anchors...); err != nil || !reflect.DeepEqual(again, rep) {
					t.Fatalf("batches of %d: %+v %+v (%v), want %+v", size, again, again.Problem, err, rep)
				}
			}
			if tt.reason == "" {
				if !rep.OK || rep.Problem != nil {
					t.Fatalf("report %+v, want ok", rep.Problem)
				}
				return
			}
			if rep.OK || rep.Problem == nil {
				t.Fatalf("damage not detected: %+v", rep)
			}
			if rep.Problem.Seq != tt.wantSeq || rep.Problem.Reason != tt.reason {
				t.Fatalf("problem = %d %s (%s), want %d %s", rep.Problem.Seq, rep.Problem.Reason, rep.Problem.Detail, tt.wantSeq, tt.reason)
			}
			if rep.Head.Seq != rep.Records || (tt.reason != ReasonHeadMismatch && rep.Records >= rep.Problem.Seq) {
				t.Errorf("report head %d, records %d, problem at %d", rep.Head.Seq, rep.Records, rep.Problem.Seq)
			}
			if strings.TrimSpace(rep.Problem.Detail) == "" {
				t.Error("no detail")
			}
			t.Logf("%s at %d: %s", rep.Problem.Reason, rep.Problem.Seq, rep.Problem.Detail)
		})
	}
}

// flipHex changes the first hex digit of h, whatever it was: a fixed
// replacement digit would leave one hash in sixteen unchanged.
func flipHex(h string) string {
	if h[0] == 'f' {
		return "0" + h[1:]
	}
	return "f" + h[1:]
}
