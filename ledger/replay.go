package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// replayPlan decides what of the journal's frames goes into bbolt, whose
// head is h and whose stored records stored returns. A record bbolt holds
// already must be the same bytes; one that differs can only be the last
// frame of a write that failed (its callers were told so) and is dropped
// with the rest of that frame, anywhere else the files disagree and the
// plan is refused. Every record after bbolt's head must continue the
// chain (checkJournaled).
func replayPlan(frames [][]jrec, h Head, stored func(seq uint64) []byte, path string) ([]jrec, Head, error) {
	var todo []jrec
	bboltHead := h.Seq
	for fi, frame := range frames {
		for _, r := range frame {
			if r.seq <= bboltHead {
				if bytes.Equal(stored(r.seq), r.raw) {
					continue
				}
				if fi == len(frames)-1 {
					return todo, h, nil
				}
				return nil, Head{}, fmt.Errorf("%w: journal record %d differs from record %d in ledger.db (%s)",
					ErrCorrupt, r.seq, r.seq, path)
			}
			c, err := checkJournaled(r, h)
			if err != nil {
				return nil, Head{}, fmt.Errorf("%w: journal record %d does not continue the chain at record %d: %v (%s)",
					ErrCorrupt, r.seq, h.Seq, err, path)
			}
			todo = append(todo, c)
			h = Head{Seq: c.seq, Hash: c.hash, Time: c.time}
		}
	}
	return todo, h, nil
}

// checkJournaled checks a journaled record as the writer made it: the seq
// and prev after h, a time not before h's, a hash that is the SHA-256 of
// prev and the record without its hash member, and BucketForwardPending
// changes that are what its kind and data say. It returns r with hash and
// time filled in.
func checkJournaled(r jrec, h Head) (jrec, error) {
	var rec struct {
		Seq      uint64          `json:"seq"`
		Prev     string          `json:"prev"`
		Hash     string          `json:"hash"`
		Time     string          `json:"time"`
		Kind     record.Kind     `json:"kind"`
		Decision record.Decision `json:"decision"`
		Data     struct {
			RequestRecord uint64 `json:"request_record"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.raw, &rec); err != nil {
		return r, err
	}
	if rec.Seq != r.seq || rec.Seq != h.Seq+1 {
		return r, fmt.Errorf("seq %d", rec.Seq)
	}
	if rec.Prev != h.Hash {
		return r, fmt.Errorf("prev %s, not %s", rec.Prev, h.Hash)
	}
	t, err := parseTime(rec.Time)
	if err != nil {
		return r, fmt.Errorf("time: %v", err)
	}
	if h.Seq > 0 {
		if ht, err := parseTime(h.Time); err == nil && t.Before(ht) {
			return r, fmt.Errorf("time %s before %s", rec.Time, h.Time)
		}
	}
	sum, err := hashStored(r.raw, rec.Prev)
	if err != nil {
		return r, err
	}
	if sum != rec.Hash {
		return r, fmt.Errorf("hash %s, computed %s", rec.Hash, sum)
	}
	opens, closes := forwardLink(&Entry{Kind: rec.Kind, Decision: rec.Decision,
		Data: map[string]any{"request_record": rec.Data.RequestRecord}})
	if opens != r.opens || closes != r.closes {
		return r, fmt.Errorf("forward_pending change (%v, %d) is not the record's (%v, %d)", r.opens, r.closes, opens, closes)
	}
	r.hash, r.time = rec.Hash, rec.Time
	return r, nil
}

// hashStored recomputes a stored record's hash: the writer stores the
// canonical form with the hash member spliced in, and that member is the
// last "hash" key in the bytes (the members after it are kind, policy,
// prev, reason, seq, time and v, whose values cannot hold an unescaped
// quote), so cutting it out gives the bytes it hashed.
func hashStored(raw []byte, prev string) (string, error) {
	const key = `"hash":"`
	i := bytes.LastIndex(raw, []byte(key))
	end := i + len(key) + 2*sha256.Size
	if i < 0 || end+2 > len(raw) || string(raw[end:end+2]) != `",` {
		return "", fmt.Errorf("no hash member")
	}
	pb, err := decodeHash(prev)
	if err != nil {
		return "", fmt.Errorf("prev: %v", err)
	}
	h := sha256.New()
	h.Write(pb)
	h.Write(raw[:i])
	h.Write(raw[end+2:])
	return hex.EncodeToString(h.Sum(nil)), nil
}

// storedIn returns a reader of tx's stored records.
func storedIn(tx *bolt.Tx) func(uint64) []byte {
	b := tx.Bucket(bucketRecords)
	return func(seq uint64) []byte {
		if b == nil {
			return nil
		}
		return b.Get(seqKey(seq))
	}
}
