package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

func openTemp(t testing.TB, opts Options) *Ledger {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "ledger.db"), opts)
}

func openAt(t testing.TB, path string, opts Options) *Ledger {
	t.Helper()
	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func entry(i int) Entry {
	return Entry{
		Kind: record.KindRequest, App: "erp-agent", Action: "create_journal_entry",
		Decision: "allow", Reason: "auto_approve", Digest: katDigest, Policy: katPolicy,
		Data: map[string]any{"amount": fmt.Sprintf("%d.00", 100+i), "n": i},
	}
}

func appendN(t testing.TB, l *Ledger, n int) []Record {
	t.Helper()
	recs := make([]Record, n)
	for i := range recs {
		rec, err := l.Append(context.Background(), entry(i))
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = rec
	}
	return recs
}

func mustVerify(t testing.TB, l *Ledger, records uint64) {
	t.Helper()
	rep, err := verifier.Verify(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != records {
		t.Fatalf("verify: ok=%v records=%d (want %d) problem=%+v", rep.OK, rep.Records, records, rep.Problem)
	}
}

// blockWriter appends one record whose hook parks the writer inside its
// transaction until release is called, so tests can line up a queue behind it
// without relying on timing.
func blockWriter(t *testing.T, l *Ledger) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	e := entry(-1)
	e.Tx = func(*bolt.Tx, *Record) error {
		close(entered)
		<-gate
		return nil
	}
	go func() {
		_, err := l.Append(context.Background(), e)
		done <- err
	}()
	<-entered
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(gate)
			if err := <-done; err != nil {
				t.Errorf("blocking append: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitQueued waits until n entries are queued behind the writer.
func waitQueued(t *testing.T, l *Ledger, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.qmu.Lock()
		got := len(l.queue)
		l.qmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAppendFillsRecord(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 5, time.FixedZone("CET", 3600))
	l := openTemp(t, Options{Now: func() time.Time { return now }})
	e := entry(0)
	e.Data = nil
	r1, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if r1.V != 1 || r1.Seq != 1 || r1.Prev != ZeroHash || r1.Time != "2026-03-01T11:00:00.000000005Z" {
		t.Errorf("record 1 = %+v", r1)
	}
	if r1.Data == nil {
		t.Error("nil data not replaced by an empty object")
	}
	raw, err := l.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"data":{}`) {
		t.Errorf("stored %s, want data {}", raw)
	}
	var stored Record
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Hash != r1.Hash {
		t.Errorf("stored hash %s, returned %s", stored.Hash, r1.Hash)
	}
	r2, err := l.Append(context.Background(), entry(1))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Seq != 2 || r2.Prev != r1.Hash {
		t.Errorf("record 2 seq %d prev %s, want 2 and %s", r2.Seq, r2.Prev, r1.Hash)
	}
	if h := l.Head(); h != (Head{Seq: 2, Hash: r2.Hash, Time: r2.Time}) {
		t.Errorf("head = %+v", h)
	}
	mustVerify(t, l, 2)
}

func TestAppendRefusesBadEntries(t *testing.T) {
	type custom struct{ A int }
	deep := map[string]any{}
	for m, i := deep, 0; i < 40; i++ {
		n := map[string]any{}
		m["x"] = n
		m = n
	}
	tests := []struct {
		name string
		e    func(e *Entry)
		want error
	}{
		{"float64", func(e *Entry) { e.Data["amount"] = 12.5 }, ErrFloat},
		{"whole float64", func(e *Entry) { e.Data["amount"] = float64(12) }, ErrFloat},
		{"nested float32", func(e *Entry) { e.Data["lines"] = []any{map[string]any{"amount": float32(1)}} }, ErrFloat},
		{"json.Number fraction", func(e *Entry) { e.Data["amount"] = json.Number("1.5") }, ErrFloat},
		{"json.Number exponent", func(e *Entry) { e.Data["amount"] = json.Number("1e3") }, ErrFloat},
		{"int above 2^53", func(e *Entry) { e.Data["n"] = int64(1 << 53) }, ErrInvalidEntry},
		{"int below -2^53", func(e *Entry) { e.Data["n"] = -int64(1 << 53) }, ErrInvalidEntry},
		{"uint64 above 2^53", func(e *Entry) { e.Data["n"] = uint64(1<<64 - 1) }, ErrInvalidEntry},
		{"json.Number too big", func(e *Entry) { e.Data["n"] = json.Number("9007199254740993") }, ErrInvalidEntry},
		{"struct", func(e *Entry) { e.Data["x"] = custom{1} }, ErrInvalidEntry},
		{"bytes", func(e *Entry) { e.Data["x"] = []byte("hi") }, ErrInvalidEntry},
		{"invalid utf-8 value", func(e *Entry) { e.Data["x"] = "\xff" }, ErrInvalidEntry},
		{"invalid utf-8 key", func(e *Entry) { e.Data["\xff"] = "x" }, ErrInvalidEntry},
		{"invalid utf-8 field", func(e *Entry) { e.Reason = "bad\xfe" }, ErrInvalidEntry},
		{"unknown kind", func(e *Entry) { e.Kind = "audit" }, ErrInvalidEntry},
		{"empty kind", func(e *Entry) { e.Kind = "" }, ErrInvalidEntry},
		{"too deep", func(e *Entry) { e.Data["deep"] = deep }, ErrInvalidEntry},
	}
	l := openTemp(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := entry(0)
			tt.e(&e)
			_, err := l.Append(context.Background(), e)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var got error
			l.AppendAsync(e, func(_ Record, err error) { got = err }) // refusals answer synchronously
			if !errors.Is(got, tt.want) {
				t.Fatalf("async err = %v, want %v", got, tt.want)
			}
		})
	}
	if err := l.Healthy(); err != nil {
		t.Errorf("refused entries made the ledger unhealthy: %v", err)
	}
	if h := l.Head(); h.Seq != 0 {
		t.Errorf("refused entries wrote %d records", h.Seq)
	}
}

func TestAppendAcceptsAllowedTypes(t *testing.T) {
	l := openTemp(t, Options{})
	e := entry(0)
	e.Data = map[string]any{
		"s": "x", "b": true, "nil": nil, "i": -(1<<53 - 1), "i8": int8(-1), "u": uint(7),
		"u64": uint64(1<<53 - 1), "num": json.Number("-42"), "strs": []string{"a", "b"},
		"mixed": []any{"a", 1, false, nil, map[string]any{"k": "v"}},
	}
	if _, err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, l, 1)
}

func TestTimeNeverGoesBackwards(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := []time.Time{base, base.Add(-time.Hour), base.Add(time.Second)}
	var mu sync.Mutex
	l := openTemp(t, Options{Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := clock[0]
		clock = clock[1:]
		return now
	}})
	recs := appendN(t, l, 3)
	want := []string{"2026-03-01T12:00:00.000000000Z", "2026-03-01T12:00:00.000000000Z", "2026-03-01T12:00:01.000000000Z"}
	for i, r := range recs {
		if r.Time != want[i] {
			t.Errorf("record %d time %s, want %s", r.Seq, r.Time, want[i])
		}
	}
	mustVerify(t, l, 3)
}

func TestAppendContext(t *testing.T) {
	t.Run("cancelled before call", func(t *testing.T) {
		l := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := l.Append(ctx, entry(0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if l.Head().Seq != 0 {
			t.Fatal("cancelled append was written")
		}
	})
	t.Run("cancelled while queued", func(t *testing.T) {
		l := openTemp(t, Options{})
		release := blockWriter(t, l)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := l.Append(ctx, entry(0))
			errc <- err
		}()
		waitQueued(t, l, 1)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		release()
		rec, err := l.Append(context.Background(), entry(1))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq != 2 {
			t.Fatalf("next record seq %d, want 2: the cancelled entry consumed a seq", rec.Seq)
		}
		mustVerify(t, l, 2)
	})
	t.Run("cancelled after taken", func(t *testing.T) {
		// The client leaves mid-commit: Append returns at once, saying the
		// commit was in flight, and the record, committed after all, gets
		// its outcome record.
		l := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		e := entry(0)
		e.Tx = func(*bolt.Tx, *Record) error {
			cancel()
			<-errc // Append has returned
			return nil
		}
		go func() {
			_, err := l.Append(ctx, e)
			errc <- err
			if !errors.Is(err, ErrCommitInFlight) || !errors.Is(err, context.Canceled) {
				t.Errorf("append = %v; want ErrCommitInFlight", err)
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for l.Head().Seq < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		mustVerify(t, l, 2)
	})
}

// TestGroupCommit lines up n appends behind a writer parked in a transaction:
// they must all go in the next single transaction.
func TestGroupCommit(t *testing.T) {
	const n = 50
	l := openTemp(t, Options{})
	release := blockWriter(t, l)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := l.Append(context.Background(), entry(i))
			errs <- err
		})
	}
	waitQueued(t, l, n)
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := l.Stats()
	if s.Appends != n+1 || s.Commits != 2 || s.MaxBatch != n {
		t.Fatalf("stats = %+v, want %d appends in 2 commits, max batch %d", s, n+1, n)
	}
	mustVerify(t, l, n+1)
}

func TestConcurrentAppendsGapless(t *testing.T) {
	const workers, each = 32, 40
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{})
	var wg sync.WaitGroup
	seqs := make(chan uint64, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if i%4 == 3 {
					l.AppendAsync(entry(w*each+i), func(r Record, err error) {
						if err != nil {
							t.Error(err)
						}
						seqs <- r.Seq
					})
					continue
				}
				r, err := l.Append(context.Background(), entry(w*each+i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- r.Seq
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil { // drains the async ones
		t.Fatal(err)
	}
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d returned twice", s)
		}
		seen[s] = true
	}
	for s := uint64(1); s <= workers*each; s++ {
		if !seen[s] {
			t.Fatalf("seq %d never returned", s)
		}
	}
	st := l.Stats()
	t.Logf("stats: %+v", st)
	if st.Appends != workers*each {
		t.Fatalf("appends = %d", st.Appends)
	}

	ro := openAt(t, path, Options{ReadOnly: true})
	mustVerify(t, ro, workers*each)
}

func TestAppendAsyncKeepsOrderAndCloseDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	release := blockWriter(t, l)
	var mu sync.Mutex
	var order []int
	for i := range 20 {
		done := func(r Record, err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Data["n"] != i {
				t.Errorf("record %d carries entry %v", r.Seq, r.Data["n"])
			}
			order = append(order, int(r.Seq))
		}
		if i%5 == 0 {
			done = nil
		}
		l.AppendAsync(entry(i), done)
	}
	waitQueued(t, l, 20)
	release()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(order) != 16 {
		t.Fatalf("%d callbacks ran before Close returned, want 16", len(order))
	}

	l = openAt(t, path, Options{})
	if h := l.Head(); h.Seq != 21 {
		t.Fatalf("head %d after reopen, want 21", h.Seq)
	}
	for i := range 20 {
		raw, err := l.Get(uint64(i + 2))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), fmt.Sprintf(`"n":%d}`, i)) {
			t.Fatalf("record %d is %s, want entry %d: queue order lost", i+2, raw, i)
		}
	}
}

var errHook = errors.New("approval already consumed")

func TestTxHook(t *testing.T) {
	l := openTemp(t, Options{})
	if err := l.DB().Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("approvals"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	release := blockWriter(t, l)

	hook := func(name string, fail error) func(*bolt.Tx, *Record) error {
		return func(tx *bolt.Tx, rec *Record) error {
			if err := tx.Bucket([]byte("approvals")).Put([]byte(name), []byte(rec.Hash)); err != nil {
				return err
			}
			return fail
		}
	}
	tests := []struct {
		name string
		tx   func(*bolt.Tx, *Record) error
		want error
	}{
		{"a", hook("a", nil), nil},
		{"b", hook("b", errHook), errHook},
		{"c", hook("c", nil), nil},
		{"panics", func(*bolt.Tx, *Record) error { panic("boom") }, nil},
		{"d", hook("d", nil), nil},
	}
	type out struct {
		rec Record
		err error
	}
	results := make([]chan out, len(tests))
	for i, tt := range tests {
		results[i] = make(chan out, 1)
		e := entry(i)
		e.Tx = tt.tx
		go func() {
			r, err := l.Append(context.Background(), e)
			results[i] <- out{r, err}
		}()
		waitQueued(t, l, i+1) // keep queue order = test order
	}
	release()

	committed := map[string]Record{}
	for i, tt := range tests {
		o := <-results[i]
		switch {
		case tt.name == "panics":
			if o.err == nil || !strings.Contains(o.err.Error(), "panic: boom") {
				t.Errorf("panicking hook: err = %v", o.err)
			}
		case tt.want != nil:
			if !errors.Is(o.err, tt.want) {
				t.Errorf("%s: err = %v, want %v", tt.name, o.err, tt.want)
			}
		case o.err != nil:
			t.Errorf("%s: %v", tt.name, o.err)
		default:
			committed[tt.name] = o.rec
		}
	}
	// Queue order is kept and the failures consumed no seq.
	for i, name := range []string{"a", "c", "d"} {
		if got := committed[name].Seq; got != uint64(i+2) {
			t.Errorf("%s committed as seq %d, want %d", name, got, i+2)
		}
	}
	if err := l.Healthy(); err != nil {
		t.Errorf("hook failures made the ledger unhealthy: %v", err)
	}
	// The blocker, then a, c and d: at most one extra commit per failure.
	if s := l.Stats(); s.Appends != 4 || s.Commits > 4 {
		t.Errorf("stats %+v", s)
	}
	err := l.DB().View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("approvals"))
		for _, name := range []string{"a", "b", "c", "d"} {
			got := string(b.Get([]byte(name)))
			if want := committed[name].Hash; got != want {
				t.Errorf("hook write %q = %q, want %q (atomic with its record)", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, l, 4)
}

func TestFailures(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		l := openTemp(t, Options{})
		appendN(t, l, 1)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if _, err := l.Append(context.Background(), entry(0)); !errors.Is(err, ErrClosed) {
			t.Errorf("append after close: %v", err)
		}
		var async error
		l.AppendAsync(entry(0), func(_ Record, err error) { async = err })
		if !errors.Is(async, ErrClosed) {
			t.Errorf("async append after close: %v", async)
		}
		if err := l.Healthy(); !errors.Is(err, ErrClosed) {
			t.Errorf("healthy after close: %v", err)
		}
	})
	t.Run("db closed underneath", func(t *testing.T) {
		l := openTemp(t, Options{})
		appendN(t, l, 1)
		if err := l.DB().Close(); err != nil {
			t.Fatal(err)
		}
		// The journal may take one more group; copying it into the
		// closed file fails, and from then on nothing is appended.
		if _, err := l.Append(context.Background(), entry(0)); err == nil {
			if _, err := l.Get(2); !errors.Is(err, bolt.ErrDatabaseNotOpen) {
				t.Errorf("get of a journaled record: %v", err)
			}
		}
		if _, err := l.Append(context.Background(), entry(0)); !errors.Is(err, bolt.ErrDatabaseNotOpen) {
			t.Errorf("append: %v", err)
		}
		if err := l.Healthy(); !errors.Is(err, bolt.ErrDatabaseNotOpen) {
			t.Errorf("healthy: %v", err)
		}
		if s := l.Stats(); s.Failures != 1 {
			t.Errorf("stats %+v, want 1 failure", s)
		}
	})
	t.Run("records bucket gone", func(t *testing.T) {
		// A store sharing the file through DB() deleted the chain's bucket:
		// the writer must report the corruption, not dereference nil.
		l := openTemp(t, Options{})
		appendN(t, l, 1)
		if err := l.DB().Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketRecords) }); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(context.Background(), entry(0)); err == nil {
			// Journaled: copying it into ledger.db finds the damage.
			if _, err := l.Get(2); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("get of a journaled record: %v", err)
			}
		}
		if _, err := l.Append(context.Background(), entry(0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("append without the records bucket: %v", err)
		}
		if err := l.Healthy(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("healthy: %v", err)
		}
	})
	t.Run("NoSync refused", func(t *testing.T) {
		l := openTemp(t, Options{})
		l.DB().NoSync = true
		if _, err := l.Append(context.Background(), entry(0)); err == nil || !strings.Contains(err.Error(), "NoSync") {
			t.Fatalf("append with NoSync: %v", err)
		}
		if err := l.Healthy(); err == nil {
			t.Fatal("healthy with NoSync")
		}
		l.DB().NoSync = false
		appendN(t, l, 1)
		if err := l.Healthy(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("commit fails then recovers", func(t *testing.T) {
		l := openTemp(t, Options{})
		appendN(t, l, 2)
		errDisk := errors.New("no space left on device")
		l.failCommit = func() error { return errDisk } // only the writer goroutine reads it, after the next enqueue
		if _, err := l.Append(context.Background(), entry(0)); !errors.Is(err, errDisk) {
			t.Fatalf("append: %v", err)
		}
		if err := l.Healthy(); !errors.Is(err, errDisk) {
			t.Fatalf("healthy: %v", err)
		}
		if h := l.Head(); h.Seq != 2 {
			t.Fatalf("head moved to %d on a failed commit", h.Seq)
		}
		l.failCommit = nil
		rec, err := l.Append(context.Background(), entry(1))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq != 3 {
			t.Fatalf("seq %d after a failed commit, want 3", rec.Seq)
		}
		if err := l.Healthy(); err != nil {
			t.Fatalf("still unhealthy after a good commit: %v", err)
		}
		mustVerify(t, l, 3)
	})
}

func TestReadOnlyAndLocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	w := openAt(t, path, Options{})
	appendN(t, w, 3)

	for _, opts := range []Options{
		{ReadOnly: true, LockTimeout: 100 * time.Millisecond},
		{LockTimeout: 100 * time.Millisecond},
	} {
		start := time.Now()
		_, err := Open(path, opts)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("open %+v while a writer holds the file: %v", opts, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("ErrLocked took %v", d)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	ro := openAt(t, path, Options{ReadOnly: true})
	ro2 := openAt(t, path, Options{ReadOnly: true}) // readers share the lock
	if ro.Head() != ro2.Head() || ro.Head().Seq != 3 {
		t.Errorf("heads %+v %+v", ro.Head(), ro2.Head())
	}
	mustVerify(t, ro, 3)
	if _, err := ro.Append(context.Background(), entry(0)); !errors.Is(err, ErrReadOnly) {
		t.Errorf("append on read-only: %v", err)
	}
	if err := ro.Healthy(); !errors.Is(err, ErrReadOnly) {
		t.Errorf("healthy on read-only: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.db"), Options{ReadOnly: true}); err == nil {
		t.Error("read-only open of a missing file succeeded")
	}
}

func TestGetAndRange(t *testing.T) {
	defer func(n int) { chunkRecords = n }(chunkRecords)
	chunkRecords = 3 // cross read-transaction boundaries

	l := openTemp(t, Options{})
	recs := appendN(t, l, 10)
	if _, err := l.Get(11); !errors.Is(err, ErrNotFound) {
		t.Errorf("get 11: %v", err)
	}
	if _, err := l.Get(0); !errors.Is(err, ErrNotFound) {
		t.Errorf("get 0: %v", err)
	}

	tests := []struct {
		from, to  uint64
		wantFirst uint64
		wantN     int
	}{
		{1, 10, 1, 10},
		{0, 1<<64 - 1, 1, 10},
		{4, 8, 4, 5},
		{7, 7, 7, 1},
		{9, 100, 9, 2},
		{8, 3, 0, 0},
		{11, 20, 0, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d", tt.from, tt.to), func(t *testing.T) {
			var got []uint64
			err := l.Range(tt.from, tt.to, func(seq uint64, raw []byte) error {
				var r Record
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				if r.Seq != seq || r.Hash != recs[seq-1].Hash {
					return fmt.Errorf("seq %d holds %+v", seq, r)
				}
				got = append(got, seq)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantN || (tt.wantN > 0 && got[0] != tt.wantFirst) {
				t.Fatalf("visited %v", got)
			}
			for i := 1; i < len(got); i++ {
				if got[i] != got[i-1]+1 {
					t.Fatalf("visited %v", got)
				}
			}
		})
	}

	stop := errors.New("stop")
	n := 0
	err := l.Range(1, 10, func(seq uint64, _ []byte) error {
		n++
		if seq == 5 {
			// fn runs outside any transaction, so it may append.
			if _, err := l.Append(context.Background(), entry(99)); err != nil {
				return err
			}
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("range stopped with %v after %d records", err, n)
	}
	mustVerify(t, l, 11)
}

// TestTxHookManyFailures queues a batch where every other hook fails: the
// others commit in queue order, gapless, without one commit each.
func TestTxHookManyFailures(t *testing.T) {
	const n = 40
	l := openTemp(t, Options{})
	release := blockWriter(t, l)
	results := make([]chan error, n)
	seqs := make([]uint64, n)
	for i := range n {
		results[i] = make(chan error, 1)
		e := entry(i)
		if i%2 == 1 {
			e.Tx = func(*bolt.Tx, *Record) error { return errHook }
		}
		go func() {
			r, err := l.Append(context.Background(), e)
			seqs[i] = r.Seq
			results[i] <- err
		}()
		waitQueued(t, l, i+1)
	}
	release()
	want := uint64(2)
	for i := range n {
		err := <-results[i]
		if i%2 == 1 {
			if !errors.Is(err, errHook) {
				t.Fatalf("entry %d: %v", i, err)
			}
			continue
		}
		if err != nil || seqs[i] != want {
			t.Fatalf("entry %d: seq %d, %v; want seq %d", i, seqs[i], err, want)
		}
		want++
	}
	if s := l.Stats(); s.Appends != n/2+1 || s.Commits > n/2+2 {
		t.Errorf("stats %+v", s)
	}
	mustVerify(t, l, n/2+1)
}
