package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// oldEncodeRecord is encodeRecord as it was before the writer encoded
// records straight into a batch's slab: the record built without its hash
// in a scratch buffer behind prev's 32 bytes, hashed, then copied into its
// stored form. Kept verbatim as the reference the writer's encoder must
// match byte for byte.
// encodeRecord is one record through a writer's encoder of its own: the
// tests' way to make a record's stored bytes.
func encodeRecord(rec *Record, p *recordParts) ([]byte, error) {
	enc := recordEncoder{slab: make([]byte, 0, len(p.buf)+storedMax)}
	return enc.encode(rec, p)
}

func oldEncodeRecord(rec *Record, p *recordParts, scratch []byte) (stored, scratchOut []byte, err error) {
	if rec.Seq > MaxInt {
		return nil, scratch, fmt.Errorf("record %d: seq above 2^53-1", rec.Seq)
	}
	b, err := appendHashBytes(scratch[:0], rec.Prev)
	if err != nil {
		return nil, scratch, fmt.Errorf("hash record %d: prev: %w", rec.Seq, err)
	}
	body := len(b)
	b = append(b, p.buf[:p.prevAt]...)
	b = append(b, rec.Prev...)
	b = append(b, p.buf[p.prevAt:]...)
	b = strconv.AppendUint(b, rec.Seq, 10)
	b = append(b, `,"time":`...)
	var ok bool
	if b, ok = appendString(b, rec.Time); !ok {
		return nil, b, fmt.Errorf("record %d: time is not valid UTF-8", rec.Seq)
	}
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, int64(rec.V), 10)
	b = append(b, '}')
	sum := sha256.Sum256(b)

	const hashMember = len(`"hash":"",`) + 2*sha256.Size
	stored = make([]byte, 0, len(b)-body+hashMember)
	stored = append(stored, b[body:body+p.hashAt]...)
	stored = append(stored, `"hash":"`...)
	at := len(stored)
	stored = hex.AppendEncode(stored, sum[:])
	rec.Hash = string(stored[at:])
	stored = append(stored, `",`...)
	stored = append(stored, b[body+p.hashAt:]...)
	return stored, b, nil
}

// genEntries makes n valid entries from seeded fuzz bytes (valueGen, as
// FuzzCanonicalMatchesJCS builds them), of every size from empty to large.
func genEntries(t *testing.T, seed uint64, n int) []Entry {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []Entry
	for len(out) < n {
		b := make([]byte, r.IntN(400))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		g := &valueGen{b: b}
		data := g.object(0)
		e := Entry{
			Kind: fuzzKinds[int(g.byte())%len(fuzzKinds)], App: g.str(), Action: g.str(),
			Decision: "allow", Reason: "auto_approve", ApprovalID: g.str(), Digest: g.str(), Policy: g.str(),
			Data: data,
		}
		if r.IntN(8) == 0 {
			e.Data = nil
		}
		if g.bad != 0 || checkEntry(&e) != nil {
			continue
		}
		if _, err := encodeParts(&e); err != nil {
			continue
		}
		out = append(out, e)
	}
	out = append(out, benchEntry(), forwardEntry(7, "forwarded"))
	out = append(out, katEntries...)
	return out
}

// TestWriterEncoderMatchesOld holds the writer's encoder, run as the writer
// runs it (batches sharing one slab and one SHA-256 state, parts buffers
// recycled between batches), to the former encoder: the same stored bytes
// and hash for every record of a chain of generated entries, and records
// that never share or overrun each other's bytes.
func TestWriterEncoderMatchesOld(t *testing.T) {
	entries := genEntries(t, 1, 3000)
	var enc recordEncoder
	h := Head{Seq: 0, Hash: ZeroHash}
	base := time.Date(2026, 1, 15, 14, 30, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(2, 3))
	for len(entries) > 0 {
		n := min(len(entries), 1+r.IntN(40))
		batch := make([]*pending, n)
		for i := range batch {
			p, err := prepare(entries[i])
			if err != nil {
				t.Fatal(err)
			}
			batch[i] = p
		}
		entries = entries[n:]
		enc.begin(batch)
		var stored [][]byte
		var wants [][]byte
		for _, p := range batch {
			at := base.Add(time.Duration(r.Int64N(1e12)))
			want := newRecord(p.e, h, at)
			wantRaw, _, err := oldEncodeRecord(&want, &p.parts, []byte("dirty scratch"))
			if err != nil {
				t.Fatal(err)
			}
			got := newRecord(p.e, h, at)
			gotRaw, err := enc.encode(&got, &p.parts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotRaw, wantRaw) || got.Hash != want.Hash {
				t.Fatalf("record %d differs:\n got %s (%s)\nwant %s (%s)", got.Seq, gotRaw, got.Hash, wantRaw, want.Hash)
			}
			if cap(gotRaw) != len(gotRaw) {
				t.Fatalf("record %d: cap %d beyond its %d bytes: an append would overwrite the next", got.Seq, cap(gotRaw), len(gotRaw))
			}
			stored, wants = append(stored, gotRaw), append(wants, wantRaw)
			h = Head{Seq: got.Seq, Hash: got.Hash, Time: got.Time}
			if r.IntN(50) == 0 {
				// Far seqs and a fresh prev, as after a reload.
				h.Seq = r.Uint64N(MaxInt - 1)
			}
		}
		for i := range stored {
			if !bytes.Equal(stored[i], wants[i]) {
				t.Fatalf("record %d of its batch changed after later ones were encoded", i)
			}
		}
		for _, p := range batch {
			p.parts.release()
		}
	}
	// The refusals are the old ones too.
	p, err := prepare(benchEntry())
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []Record{
		newRecord(p.e, Head{Seq: MaxInt, Hash: ZeroHash}, base),
		newRecord(p.e, Head{Seq: 1, Hash: "ABC"}, base),
		newRecord(p.e, Head{Seq: 1, Hash: ZeroHash[:63] + "G"}, base),
		{V: 1, Seq: 2, Time: "\xff", Prev: ZeroHash},
	} {
		_, _, wantErr := oldEncodeRecord(&rec, &p.parts, nil)
		enc.begin([]*pending{p})
		_, gotErr := enc.encode(&rec, &p.parts)
		if wantErr == nil || gotErr == nil || wantErr.Error() != gotErr.Error() {
			t.Fatalf("refusal differs: got %v, want %v", gotErr, wantErr)
		}
	}
}

// TestFormatTimeMatchesLayout holds the direct time formatter to
// time.Format with TimeLayout, across the years it writes itself and those
// it hands to time.Format, in and out of UTC.
func TestFormatTimeMatchesLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	zones := []*time.Location{time.UTC, time.FixedZone("x", 3600), time.FixedZone("y", -12*3600-1800), time.Local}
	times := []time.Time{
		{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 12, 31, 23, 59, 59, 1, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(999, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(2026, 1, 15, 14, 30, 0, 123456789, time.UTC), time.Date(2024, 2, 29, 23, 59, 60, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 30, 0, 0, time.FixedZone("z", 3600)), // the day before in UTC
	}
	for range 200000 {
		times = append(times, time.Unix(r.Int64N(400000000000)-200000000000, r.Int64N(1e9)))
	}
	for range 20000 {
		times = append(times, time.Unix(r.Int64N(1<<62)-(1<<61), r.Int64N(1e9)))
	}
	for i, tm := range times {
		tm = tm.In(zones[i%len(zones)])
		if got, want := formatTime(tm), tm.UTC().Format(TimeLayout); got != want {
			t.Fatalf("formatTime(%v) = %q, time.Format gives %q", tm, got, want)
		}
	}
}

// TestReleasedPartsRefused: an entry whose encoding went back to the pool
// is refused by the writer's encoder, never written as a record without its
// fields.
func TestReleasedPartsRefused(t *testing.T) {
	p, err := prepare(entry(1))
	if err != nil {
		t.Fatal(err)
	}
	p.parts.release()
	rec := newRecord(p.e, Head{Hash: ZeroHash}, time.Unix(0, 0))
	var enc recordEncoder
	enc.begin([]*pending{p})
	if raw, err := enc.encode(&rec, &p.parts); err == nil {
		t.Fatalf("released parts encoded without error: %s", raw)
	}
}
