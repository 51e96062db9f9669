package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// pendingKeys lists BucketForwardPending.
func pendingKeys(t *testing.T, l *Ledger) []uint64 {
	t.Helper()
	var out []uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
			out = append(out, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestApplyPendingAnySplit: however the applier's transactions cut a run
// of records, BucketForwardPending after each holds exactly the allow
// records whose forward record is not in yet, whether the forward came in
// the same transaction as its request (no Put, no Delete is made) or in a
// later one.
func TestApplyPendingAnySplit(t *testing.T) {
	// 1 opens, 2 closes 1, 3 opens, 4 neither (a denial), 5 opens,
	// 6 closes 3, 7 opens (never closed), 8 closes 5, 9 closes a
	// request that never opened (4).
	recs := []jrec{
		{seq: 1, opens: true}, {seq: 2, closes: 1}, {seq: 3, opens: true}, {seq: 4},
		{seq: 5, opens: true}, {seq: 6, closes: 3}, {seq: 7, opens: true}, {seq: 8, closes: 5},
		{seq: 9, closes: 4},
	}
	for i := range recs {
		recs[i].raw, recs[i].hash, recs[i].time = []byte(fmt.Sprintf("record %d", i+1)), katDigest, "2026-12-01T00:00:00.000000000Z"
	}
	want := func(upTo uint64) []uint64 {
		var open []uint64
		for _, r := range recs[:upTo] {
			if r.opens {
				open = append(open, r.seq)
			}
			if r.closes != 0 {
				open = slices.DeleteFunc(open, func(s uint64) bool { return s == r.closes })
			}
		}
		return open
	}
	// Every way of cutting 9 records into transactions: bit i of cuts set
	// means a transaction ends after record i+1.
	for cuts := 0; cuts < 1<<(len(recs)-1); cuts++ {
		l := openTemp(t, Options{JournalSize: -1})
		from := 0
		for i := range recs {
			if i < len(recs)-1 && cuts&(1<<i) == 0 {
				continue
			}
			// The earlier records come again too, as after a restart:
			// those bbolt holds are skipped.
			chunk := recs[max(0, from-1) : i+1]
			if err := l.db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, chunk) }); err != nil {
				t.Fatalf("cuts %b: apply %d-%d: %v", cuts, chunk[0].seq, chunk[len(chunk)-1].seq, err)
			}
			if got, w := pendingKeys(t, l), want(uint64(i+1)); !slices.Equal(got, w) {
				t.Fatalf("cuts %b: after record %d pending %v, want %v", cuts, i+1, got, w)
			}
			from = i + 1
		}
		var h Head
		if err := l.db.View(func(tx *bolt.Tx) (err error) { h, err = readHead(tx); return err }); err != nil || h.Seq != 9 {
			t.Fatalf("cuts %b: head %d, %v", cuts, h.Seq, err)
		}
		l.Close()
	}
}

// TestApplyRefusesAGap: records that skip a seq are corrupt, not applied.
func TestApplyRefusesAGap(t *testing.T) {
	l := openTemp(t, Options{JournalSize: -1})
	recs := []jrec{{seq: 1, opens: true}, {seq: 3, closes: 1}}
	for i := range recs {
		recs[i].raw, recs[i].hash, recs[i].time = []byte("r"), katDigest, "2026-12-01T00:00:00.000000000Z"
	}
	err := l.db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, recs) })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("apply with a gap: %v, want ErrCorrupt", err)
	}
	if p := pendingKeys(t, l); len(p) != 0 {
		t.Fatalf("pending %v after a refused apply", p)
	}
}

// TestApplyNeverRemaps: the applier's large transactions never find the
// map too small while the file is under initialMmap, so bbolt never copies
// their records to the heap to remap (node dereferences) and readers never
// wait for a remap. With bbolt's default 32 KiB start, 6 MiB of records in
// one transaction remapped several times.
func TestApplyNeverRemaps(t *testing.T) {
	if initialMmap == 0 {
		t.Skip("32-bit build: bbolt's default map")
	}
	l := openTemp(t, Options{JournalSize: 64 << 20})
	for range 5 {
		var wg sync.WaitGroup
		for range 2000 {
			wg.Add(1)
			l.AppendAsync(entry(0), func(_ Record, err error) {
				defer wg.Done()
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if err := l.applyNow(); err != nil {
			t.Fatal(err)
		}
	}
	st := l.db.Stats()
	if n := st.TxStats.GetNodeDeref(); n != 0 {
		t.Fatalf("%d node dereferences (remaps) applying 10000 records", n)
	}
	if fi, err := os.Stat(l.path); err != nil || fi.Size() < 4<<20 {
		t.Fatalf("ledger.db %v, %v: want the records in it", fi, err)
	}
}
