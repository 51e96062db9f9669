package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// gotRec is a record as Append or AppendAsync handed it back, with its
// entry and its JSON at that moment.
type gotRec struct {
	e    Entry
	rec  Record
	snap string
}

// returned gathers what the writers were handed back.
type returned struct {
	mu  sync.Mutex
	got []*gotRec
}

func (r *returned) keep(e Entry, rec Record) {
	b, _ := json.Marshal(rec)
	r.mu.Lock()
	r.got = append(r.got, &gotRec{e: e, rec: rec, snap: string(b)})
	r.mu.Unlock()
}

func (r *returned) all() []*gotRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*gotRec(nil), r.got...)
}

// checkReturned: no record handed back has changed since, none was handed
// back twice, and each is what ledger.db holds and what the former encoder
// (oldEncodeRecord) makes of its entry.
func checkReturned(t *testing.T, l *Ledger, got []*gotRec) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, g := range got {
		b, _ := json.Marshal(g.rec)
		if string(b) != g.snap {
			t.Fatalf("record %d changed after it was returned:\n was %s\n now %s", g.rec.Seq, g.snap, b)
		}
		if seen[g.rec.Seq] {
			t.Fatalf("seq %d returned twice", g.rec.Seq)
		}
		seen[g.rec.Seq] = true
		raw, err := l.Get(g.rec.Seq)
		if err != nil {
			t.Fatal(err)
		}
		p, err := prepare(g.e)
		if err != nil {
			t.Fatal(err)
		}
		want := g.rec
		want.Hash = ""
		wantRaw, _, err := oldEncodeRecord(&want, &p.parts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != string(wantRaw) || want.Hash != g.rec.Hash {
			t.Fatalf("record %d: stored\n %s\nformer encoder\n %s", g.rec.Seq, raw, wantRaw)
		}
	}
}

// TestWriterRecordsStableUnderFaults holds the writer's reused buffers
// (one slab a group, recycled parts, reused record lists, the kept
// unapplied array) to what they must never do: concurrent Append (with
// failing hooks, expiring contexts, huge entries) and AppendAsync, failing
// commits, a small journal (rounds, too-big frames) and readers; every
// record handed back must match ledger.db byte for byte, match the former
// encoder, and never change, and the chain verifies before and after a
// reopen.
func TestWriterRecordsStableUnderFaults(t *testing.T) {
	l := openTemp(t, Options{JournalSize: MinJournalSize})
	var calls atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	l.failCommit = func() error {
		if failing.Load() && calls.Add(1)%9 == 0 {
			return errors.New("injected commit failure")
		}
		return nil
	}
	var rs returned
	keep := rs.keep
	big := strings.Repeat("x", 40<<10)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 120 {
				e := entry(i*10 + w)
				switch (i + w) % 6 {
				case 0:
					e.Tx = func(tx *bolt.Tx, r *Record) error {
						if r.Seq%3 == 0 {
							return errors.New("hook says no")
						}
						_, err := tx.CreateBucketIfNotExists([]byte("side"))
						return err
					}
				case 1:
					e.Data = map[string]any{"blob": big, "n": i}
				case 2:
					fe := forwardEntry(uint64(i+1), record.Forwarded)
					fe.Data["w"] = w
					l.AppendAsync(fe, func(r Record, err error) {
						if err == nil {
							keep(fe, r)
						}
					})
					continue
				case 3:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%3)*time.Millisecond)
					r, err := l.Append(ctx, e)
					cancel()
					if err == nil {
						keep(e, r)
					}
					continue
				}
				r, err := l.Append(context.Background(), e)
				if err == nil {
					keep(e, r)
					if _, err := l.Get(r.Seq); err != nil {
						t.Errorf("Get(%d): %v", r.Seq, err)
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = l.Range(1, math.MaxUint64, func(uint64, []byte) error { return nil })
			_, _ = l.Pending()
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	failing.Store(false)
	// Let owed outcome records and callbacks land.
	mustAppend(t, l, entry(999999))
	time.Sleep(50 * time.Millisecond)
	close(stop)
	rg.Wait()
	l.callbacks.Wait()

	checkReturned(t, l, rs.all())
	h := l.Head()
	t.Logf("%d records returned, head %d, stats %+v", len(rs.all()), h.Seq, l.Stats())
	mustVerify(t, l, h.Seq)
	path := l.path
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := openAt(t, path, Options{JournalSize: MinJournalSize})
	mustVerify(t, l2, h.Seq)
}

// TestWriterBigBatches: a queue lined up behind a parked writer, so that
// batches hold hundreds of entries mixing Appends with failing hooks,
// bounded Appends whose context expires while their commit is in flight,
// and AppendAsync forward records; every record handed back must be what
// ledger.db holds and never change.
func TestWriterBigBatches(t *testing.T) {
	l := openTemp(t, Options{JournalSize: MinJournalSize})
	var rs returned
	keep := rs.keep
	for round := range 3 {
		release := blockWriter(t, l)
		var wg sync.WaitGroup
		for i := range 300 {
			e := entry(round*1000 + i)
			switch i % 5 {
			case 0:
				fe := forwardEntry(uint64(i+1), record.Forwarded)
				l.AppendAsync(fe, func(r Record, err error) {
					if err == nil {
						keep(fe, r)
					}
				})
				continue
			case 1:
				k := i
				e.Tx = func(tx *bolt.Tx, r *Record) error {
					if k%30 == 1 {
						return errors.New("hook says no")
					}
					return nil
				}
			case 2:
				ctx, cancel := context.WithCancel(context.Background())
				wg.Go(func() {
					r, err := l.Append(ctx, e)
					if err == nil {
						keep(e, r)
					}
				})
				time.AfterFunc(time.Duration(i%7)*time.Millisecond, cancel)
				continue
			}
			wg.Go(func() {
				r, err := l.Append(context.Background(), e)
				if err != nil {
					if !strings.Contains(err.Error(), "hook says no") {
						t.Errorf("append: %v", err)
					}
					return
				}
				keep(e, r)
			})
		}
		time.Sleep(20 * time.Millisecond)
		release()
		wg.Wait()
	}
	mustAppend(t, l, entry(999999))
	l.callbacks.Wait()
	time.Sleep(20 * time.Millisecond)
	l.callbacks.Wait()
	checkReturned(t, l, rs.all())
	h := l.Head()
	t.Logf("%d records returned, head %d, stats %+v", len(rs.all()), h.Seq, l.Stats())
	mustVerify(t, l, h.Seq)
}
