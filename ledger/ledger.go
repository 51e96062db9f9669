package ledger

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// Bucket names the ledger owns in the bbolt file. Other stores that share the
// file through DB must use other names and must never write these two.
const (
	BucketRecords = "records" // 8-byte big-endian seq -> canonical record JSON
	BucketMeta    = "meta"    // "head" -> JSON Head of the last record
	// BucketForwardPending holds the seq of every allow record (kind request
	// or override, decision allow) that has no forward or outcome record
	// yet (8-byte big-endian seq -> nothing), kept in the transaction of
	// the records themselves. What is left in it at start is what a crash
	// cut short (Recover).
	BucketForwardPending = "forward_pending"
	// BucketProbe holds the one value the health probe rewrites while the
	// ledger is unhealthy; it never grows.
	BucketProbe = "ledger_probe"
)

var (
	bucketRecords = []byte(BucketRecords)
	bucketMeta    = []byte(BucketMeta)
	bucketPending = []byte(BucketForwardPending)
	bucketProbe   = []byte(BucketProbe)
	keyHead       = []byte("head")
)

// maxBatch caps one write transaction so a burst of async appends cannot
// grow a single transaction (and its dirty pages) without bound.
const maxBatch = 1000

// lazyDelay is how long the writer lets AppendAsync entries (forward
// records) wait for company before it writes them on their own: a lone
// agent's next request then carries its last forward record in the same
// sync, so that record costs the agent nothing. A crash meanwhile loses
// only forward records, and Recover's outcome records say so.
const lazyDelay = 2 * time.Millisecond

// applyDelay is how long the applier lets journaled records gather before
// it writes them into bbolt (unless applyMax are waiting): a bbolt commit
// costs two syncs, so fewer, larger ones leave the disk to the journal.
// Readers never wait for it: they apply what they need themselves.
const (
	applyDelay = 20 * time.Millisecond
	applyMax   = 2000
)

// initialMmap is how much of the file bbolt maps at Open: address space,
// not memory (only pages read are resident). bbolt maps again each time the
// file outgrows the map (doubling up to 1 GiB), and a remap first copies
// every key and value the write transaction has touched to the heap: the
// applier's transactions hold thousands of records, so with bbolt's 32 KiB
// start every record of a young ledger was copied about once more. Readers
// also wait for a remap. 1 GiB holds about two million records; 32-bit
// builds keep bbolt's default.
var initialMmap = func() int {
	if strconv.IntSize == 64 {
		return 1 << 30
	}
	return 0
}()

// chunkRecords and chunkBytes bound every read transaction: a reader holding
// a transaction blocks bbolt from remapping a growing file, and a blocked
// remap blocks the writer. Variables so tests can cross chunk boundaries.
var (
	chunkRecords = 10000
	chunkBytes   = 8 << 20
)

// Stats counts the writer's work since Open. Appends/Commits is the mean
// group-commit batch size.
type Stats struct {
	Appends  uint64 `json:"appends"`   // records committed
	Commits  uint64 `json:"commits"`   // successful write transactions, one fsync each
	MaxBatch uint64 `json:"max_batch"` // most records in one transaction
	Failures uint64 `json:"failures"`  // write transactions that failed to commit
	// Slow counts write transactions that took longer than
	// Options.StuckAfter (a stuck disk, a frozen file system).
	Slow uint64 `json:"slow"`
	// Outcomes counts outcome records written (Recover and follow-ups).
	Outcomes uint64 `json:"outcomes"`
	// Journaled counts the records made durable by a journal write (one
	// fdatasync per commit) rather than by a bbolt commit (records with a
	// Tx hook, outcome records, and everything while the journal is off).
	Journaled uint64 `json:"journaled"`
	// Applies counts the bbolt transactions that copied journaled records
	// into ledger.db.
	Applies uint64 `json:"applies"`
	// JournalBytes is the journal's size; 0 when the ledger runs without
	// one (Options.JournalSize < 0, or too little free space to make it).
	JournalBytes int64 `json:"journal_bytes"`
}

// Ledger is an open hash-chained ledger. All methods are safe for concurrent
// use.
type Ledger struct {
	db       *bolt.DB
	path     string
	now      func() time.Time
	readOnly bool

	stuckAfter time.Duration
	probeEvery time.Duration
	epoch      time.Time    // monotonic base of inflight
	inflight   atomic.Int64 // when the write transaction in flight began (ns since epoch, +1); 0 when none
	openHead   uint64       // the head at Open: Recover looks no further

	qmu    sync.Mutex
	wake   chan struct{} // one token: an eager entry queued, a lazy one fell due, or closed was set
	queue  []*pending
	eager  int // entries in queue that are not lazy
	closed bool
	// lazyTimer is the writer's, for lazyWait.
	lazyTimer *time.Timer
	// lazyKick wakes the writer lazyDelay after a lazy entry went into an
	// empty queue: queuing one wakes nobody (it would cost a lone agent
	// a goroutine wake-up on every request, on its way to the ERP's
	// answer), so the entry waits for the next eager one or for this.
	lazyKick *time.Timer

	// j is the journal (nil on a read-only ledger or with
	// Options.JournalSize < 0); the writer, the probe (scrub) and Close
	// use it under jmu.
	j   *journal
	jmu sync.Mutex
	// applyMu is held by whoever copies records into bbolt: the applier,
	// a reader that needs them, or the writer's own bbolt commit, which
	// must find every journaled record there before its own.
	applyMu sync.Mutex
	umu     sync.Mutex // guards unapplied, applied, applyErr
	// unapplied holds the records durable in the journal and not yet in
	// bbolt, in seq order.
	unapplied []jrec
	applied   uint64 // bbolt's head seq
	applyErr  error  // the last apply's failure; nil after a success
	applyWake chan struct{}
	applyDone chan struct{} // closed when the applier has exited
	// reloadHead, set by the writer after a failed bbolt commit, makes
	// its next journal write read the head from bbolt first.
	reloadHead bool
	// overlay holds, on a read-only ledger, the records in the journal
	// beyond bbolt's head (a proxy stopped before it applied them), served
	// after bbolt's by every reader; applied is then bbolt's head.
	overlay []jrec

	mu    sync.Mutex // guards head, err, stats, owed
	head  Head
	err   error // last commit error; nil after a successful commit or probe
	stats Stats
	// owed holds the outcome records this process owes (request seq ->
	// what it knows), written as soon as the ledger commits again.
	owed map[uint64]*owed

	quit      chan struct{} // closed by Close: stops the probe
	probeDone chan struct{} // closed when the probe goroutine has exited

	stopped   chan struct{} // closed when the writer goroutine has drained and exited
	callbacks sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	onCommit func(records int, took time.Duration, err error)

	// enc is the writer's record encoder (write and what it calls);
	// recs and jrecs are its reused lists of a batch's records, recs
	// handed to commit until the batch is answered.
	enc   recordEncoder
	recs  []Record
	jrecs []jrec

	// failCommit, set only by tests, makes a write transaction fail after
	// its records are put, as a full disk or an fsync error would, or
	// stall, as a frozen file system would.
	failCommit func() error
	// failProbe, set only by tests, fails the health probe.
	failProbe atomic.Pointer[func() error]
}

// A pending entry moves from queued to taken (by the writer) or cancelled (by
// its caller); whichever swap wins decides who owns the outcome.
//
// Once taken, an Append whose context ends first swaps taken for abandoned;
// otherwise the writer swaps it for answered when the commit is over.
const (
	stateQueued int32 = iota
	stateTaken
	stateCancelled
	stateAnswered
	stateAbandoned
)

type pending struct {
	e     Entry
	parts recordParts // the record's encoded fields, made before queuing
	state atomic.Int32
	done  func(Record, error) // AppendAsync; may be nil
	res   chan result         // Append

	lazy   bool      // AppendAsync: may wait lazyDelay for company
	queued time.Time // when a lazy entry was queued
	opens  bool      // an allow record: its seq goes into BucketForwardPending
	closes uint64    // a forward or outcome record: the request seq it takes out
	// onlyIfOpen: an outcome record, written only while closes is still
	// pending (never a second one, never after a late forward record).
	onlyIfOpen bool
	// bounded: a record of an agent's request (kind request or override),
	// whose Append returns at its deadline even while its commit is in
	// flight; every other Append waits for its commit's result.
	bounded bool
}

type result struct {
	rec Record
	err error
}

// entryError marks a failure that belongs to one entry of a batch (its Tx
// hook, its encoding), as opposed to the transaction as a whole; it never
// makes the ledger unhealthy.
type entryError struct {
	i   int
	err error
}

func (e *entryError) Error() string { return e.err.Error() }
func (e *entryError) Unwrap() error { return e.err }

// Open opens or creates the ledger file at path (mode 0600) and starts its
// writer. With opts.ReadOnly it takes a shared lock instead and never writes;
// if a running proxy holds the file, Open fails after opts.LockTimeout with
// an error wrapping ErrLocked.
func Open(path string, opts Options) (*Ledger, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = 2 * time.Second
	}
	if opts.ProbeEvery <= 0 {
		opts.ProbeEvery = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly,
		InitialMmapSize: initialMmap})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open ledger %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, SpaceError(path, err))
	}
	l := &Ledger{db: db, path: path, now: opts.Now, readOnly: opts.ReadOnly, onCommit: opts.OnCommit,
		stopped: make(chan struct{}), stuckAfter: opts.StuckAfter, probeEvery: opts.ProbeEvery, epoch: time.Now(),
		owed: map[uint64]*owed{}, quit: make(chan struct{}), probeDone: make(chan struct{}),
		wake: make(chan struct{}, 1), applyWake: make(chan struct{}, 1), applyDone: make(chan struct{})}
	if err := l.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, SpaceError(path, err))
	}
	if err := l.openJournal(opts); err != nil {
		if l.j != nil {
			_ = l.j.close()
		}
		_ = db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, SpaceError(path, err))
	}
	l.openHead = l.head.Seq
	l.applied = l.head.Seq - uint64(len(l.overlay))
	if l.readOnly {
		close(l.stopped)
		close(l.probeDone)
		close(l.applyDone)
		return l, nil
	}
	go l.run()
	go l.probeLoop()
	if l.j != nil {
		go l.applyLoop()
	} else {
		close(l.applyDone)
	}
	return l, nil
}

// openJournal opens the journal beside the file and applies to bbolt every
// record it holds beyond bbolt's head (replayPlan); then it starts the
// journal's next round. A journal left by a run with the journal on is
// replayed even when this one runs without (Options.JournalSize < 0), and
// then removed. A read-only ledger applies nothing: it keeps those records
// in memory and serves them after bbolt's (Behind).
func (l *Ledger) openJournal(opts Options) error {
	jp := journalPath(l.path)
	if l.readOnly {
		return l.readJournal(jp)
	}
	_, statErr := os.Stat(jp)
	exists := statErr == nil
	if opts.JournalSize < 0 && !exists {
		return nil
	}
	size := max(cmp.Or(opts.JournalSize, DefaultJournalSize), MinJournalSize)
	if !exists {
		// A new journal takes at most a quarter of the free space; with
		// less room than the smallest one, the ledger runs without (every
		// group a bbolt commit) rather than not at all.
		if free := freeBytes(filepath.Dir(l.path)); free >= 0 && free/4 < size {
			size = free / 4
		}
		if size < MinJournalSize {
			return nil
		}
	}
	j, err := openJournal(jp, size)
	if !exists && errors.Is(err, syscall.ENOSPC) {
		return nil
	}
	if err != nil {
		return err
	}
	l.j = j
	frames, err := j.read()
	if err != nil {
		return err
	}
	var todo []jrec
	h := l.head
	if err := l.db.View(func(tx *bolt.Tx) error {
		todo, h, err = replayPlan(frames, l.head, storedIn(tx), jp)
		return err
	}); err != nil {
		return err
	}
	if len(todo) > 0 {
		err := l.db.Update(func(tx *bolt.Tx) error {
			return applyRecords(tx, todo)
		})
		if err != nil {
			return fmt.Errorf("apply %d journaled records: %w", len(todo), err)
		}
		l.head = h
	}
	if opts.JournalSize < 0 {
		l.j = nil
		if err := j.close(); err != nil {
			return err
		}
		if err := os.Remove(jp); err != nil {
			return err
		}
		return fsutil.SyncDir(filepath.Dir(jp))
	}
	l.stats.JournalBytes = j.size
	return j.reset(l.head.Seq + 1)
}

// readJournal, on a read-only ledger, keeps in memory the records the
// journal holds beyond bbolt's head, checked as Open checks them.
func (l *Ledger) readJournal(jp string) error {
	f, err := os.Open(jp)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < MinJournalSize {
		return nil
	}
	j := &journal{f: f, path: jp, size: st.Size()}
	frames, err := j.read()
	if err != nil {
		return err
	}
	return l.db.View(func(tx *bolt.Tx) error {
		todo, h, err := replayPlan(frames, l.head, storedIn(tx), jp)
		if err != nil {
			return err
		}
		l.overlay, l.head = todo, h
		return nil
	})
}

// Behind returns, on a ledger opened read-only, how many records the
// journal holds that ledger.db does not yet: a proxy stopped (killed, or
// its disk full) before it applied them. Its next start applies them;
// until then an offline reader does not see them. 0 on a writable ledger.
func (l *Ledger) Behind() int { return len(l.overlay) }

func (l *Ledger) init() error {
	if l.readOnly {
		// A damaged head must not stop an offline tool from opening the
		// file: Verify is what reports it.
		return l.db.View(func(tx *bolt.Tx) error {
			if h, err := readHead(tx); err == nil {
				l.head = h
			}
			return nil
		})
	}
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if err := checkTail(tx.Bucket(bucketRecords), h, true); err != nil {
			return err
		}
		if tx.Bucket(bucketPending) == nil {
			// First start with the index (or a file older than it):
			// build it once from the chain.
			if err := buildPending(tx); err != nil {
				return err
			}
		}
		l.head = h
		return nil
	})
}

// readHead reads the stored head; a missing one is the empty chain.
func readHead(tx *bolt.Tx) (Head, error) {
	h := Head{Hash: ZeroHash}
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return h, nil
	}
	v := b.Get(keyHead)
	if v == nil {
		return h, nil
	}
	if err := json.Unmarshal(v, &h); err != nil {
		return Head{}, fmt.Errorf("%w: stored head: %v", ErrCorrupt, err)
	}
	if _, err := decodeHash(h.Hash); err != nil {
		return Head{}, fmt.Errorf("%w: stored head hash: %v", ErrCorrupt, err)
	}
	if h.Seq == 0 {
		return h, nil
	}
	if _, err := parseTime(h.Time); err != nil {
		return Head{}, fmt.Errorf("%w: stored head time: %v", ErrCorrupt, err)
	}
	return h, nil
}

// checkTail refuses to extend a chain whose stored head is not its last
// record: a new record would then fork or hide the damage. full also checks
// the last record's hash, which costs a parse and so runs only at Open.
func checkTail(records *bolt.Bucket, h Head, full bool) error {
	k, v := records.Cursor().Last()
	if k == nil {
		if h.Seq != 0 {
			return fmt.Errorf("%w: stored head names record %d but there are no records", ErrCorrupt, h.Seq)
		}
		return nil
	}
	if len(k) != 8 || binary.BigEndian.Uint64(k) != h.Seq {
		return fmt.Errorf("%w: stored head names record %d but the last key is %x", ErrCorrupt, h.Seq, k)
	}
	if !full {
		return nil
	}
	var last struct {
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal(v, &last); err != nil || last.Hash != h.Hash {
		return fmt.Errorf("%w: stored head hash differs from record %d", ErrCorrupt, h.Seq)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// Append records e and returns the record once it is durable (committed and
// fsynced). If ctx ends while the entry is still queued, nothing is written
// and ctx.Err() is returned. Once the writer has taken it, the commit's own
// result is returned, because a record half-abandoned by its client must
// still be reported truthfully; except for the record of an agent's
// request (kind request or override): if ctx ends while its commit is in
// flight (a stuck disk), Append returns at once an error wrapping
// ErrCommitInFlight and ctx.Err(), and the caller must act as if nothing
// was written (answer 503, forward nothing), so that no request waits on a
// stuck disk longer than its append timeout. That record may still become
// durable when the commit ends; if it is an allow record (decision allow)
// the ledger then appends its outcome record, not_forwarded, as its caller
// was told it failed.
func (l *Ledger) Append(ctx context.Context, e Entry) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	p, err := prepare(e)
	if err != nil {
		return Record{}, err
	}
	return l.wait(ctx, p)
}

// wait queues p and waits for its outcome, as Append describes.
func (l *Ledger) wait(ctx context.Context, p *pending) (Record, error) {
	p.res = make(chan result, 1)
	if err := l.enqueue(p); err != nil {
		return Record{}, err
	}
	select {
	case r := <-p.res:
		return r.rec, r.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(stateQueued, stateCancelled) {
			return Record{}, ctx.Err()
		}
		if p.bounded && p.state.CompareAndSwap(stateTaken, stateAbandoned) {
			return Record{}, fmt.Errorf("%w: %w", ErrCommitInFlight, ctx.Err())
		}
		r := <-p.res // answered already
		return r.rec, r.err
	}
}

// AppendAsync queues e behind everything already queued and returns at once.
// The writer may hold it back up to lazyDelay for company: use it for
// records nobody waits for (forward records). done, if not nil, gets the
// outcome once the commit is over, on a goroutine shared with the other
// callbacks of that commit, in order (keep it quick; Close waits for it),
// or on the caller's goroutine, before AppendAsync returns, if e is refused
// before queuing (invalid entry, closed ledger).
func (l *Ledger) AppendAsync(e Entry, done func(Record, error)) {
	p, err := prepare(e)
	if err == nil {
		p.done, p.lazy, p.queued = done, true, time.Now()
		err = l.enqueue(p)
	}
	if err != nil && done != nil {
		done(Record{}, err)
	}
}

func prepare(e Entry) (*pending, error) {
	if err := checkEntry(&e); err != nil {
		return nil, err
	}
	parts, err := encodeParts(&e)
	if err != nil {
		return nil, err
	}
	p := &pending{e: e, parts: parts}
	p.opens, p.closes = forwardLink(&e)
	p.bounded = e.Kind == record.KindRequest || e.Kind == record.KindOverride
	return p, nil
}

// enqueue queues ps together, so that the writer takes them in one batch.
func (l *Ledger) enqueue(ps ...*pending) error {
	if l.readOnly {
		return ErrReadOnly
	}
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closed {
		return ErrClosed
	}
	wasEmpty, eager := len(l.queue) == 0, false
	for _, p := range ps {
		if !p.lazy {
			l.eager++
			eager = true
		}
	}
	l.queue = append(l.queue, ps...)
	switch {
	case eager:
		l.kick()
	case wasEmpty:
		// The writer is asleep or committing; either way it looks at the
		// queue again when lazyKick fires, if nothing eager came first.
		if l.lazyKick == nil {
			l.lazyKick = time.AfterFunc(lazyDelay, l.kick)
		} else {
			l.lazyKick.Reset(lazyDelay)
		}
	}
	return nil
}

// kick wakes the writer (at most one token waits).
func (l *Ledger) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// lazyWait waits up to d for the queue to change, on the writer's one
// timer.
func (l *Ledger) lazyWait(d time.Duration) {
	if l.lazyTimer == nil {
		l.lazyTimer = time.NewTimer(d)
	} else {
		l.lazyTimer.Reset(d)
	}
	select {
	case <-l.wake:
		l.lazyTimer.Stop()
	case <-l.lazyTimer.C:
	}
}

// run is the single writer. An Append never waits for company: whatever
// queued while the previous fsync ran becomes the next batch, so a lone
// request costs one commit and a crowd shares one. Only AppendAsync
// entries with no Append behind them wait, up to lazyDelay (take).
func (l *Ledger) run() {
	defer close(l.stopped)
	for {
		batch, ok := l.take()
		if !ok {
			return
		}
		l.commit(batch)
	}
}

// take blocks until entries are queued and claims up to maxBatch of them. It
// reports false once the ledger is closed and the queue is drained.
func (l *Ledger) take() ([]*pending, bool) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for {
		if len(l.queue) == 0 {
			if l.closed {
				return nil, false
			}
			l.qmu.Unlock()
			<-l.wake
			l.qmu.Lock()
			continue
		}
		if l.eager == 0 && !l.closed {
			if wait := lazyDelay - time.Since(l.queue[0].queued); wait > 0 {
				l.qmu.Unlock()
				l.lazyWait(wait)
				l.qmu.Lock()
				continue
			}
		}
		n := min(len(l.queue), maxBatch)
		batch := make([]*pending, 0, n)
		for _, p := range l.queue[:n] {
			if !p.lazy {
				l.eager--
			}
			if p.state.CompareAndSwap(stateQueued, stateTaken) {
				batch = append(batch, p)
			}
		}
		// Copy the rest so the old backing array, and the entries it
		// pins, can be freed.
		l.queue = append([]*pending(nil), l.queue[n:]...)
		if len(batch) > 0 {
			return batch, true
		}
	}
}

// commit writes batch and answers every entry in it. When an entry's hook
// fails it takes the whole transaction with it, so that entry alone is failed
// and the others are written again, in order, without it: no seq is burnt and
// the chain keeps no gap. The entries before it are committed on their own
// first, so each entry is encoded at most twice and every failure costs the
// rest at most one extra commit, however many failing hooks a hostile caller
// sends.
func (l *Ledger) commit(batch []*pending) {
	for len(batch) > 0 {
		start := time.Now()
		recs, err := l.write(batch)
		var ee *entryError
		if !errors.As(err, &ee) {
			if l.onCommit != nil {
				n := len(recs)
				if err != nil {
					n = 0
				}
				l.onCommit(n, time.Since(start), err)
			}
			if err != nil {
				l.lost(batch)
			}
			// The callbacks' goroutine is started before the waiters are
			// answered: the goroutine made runnable last runs first once
			// the writer sleeps, and that should be an agent's request,
			// on its way to the ERP, not a forward record's callback.
			calls := l.callbackRoom(batch)
			for i, p := range batch {
				if p.res == nil {
					calls = l.answer(p, recs, i, err, calls)
				}
			}
			l.call(calls)
			for i, p := range batch {
				if p.res != nil {
					l.answer(p, recs, i, err, nil)
				}
			}
			clear(recs) // pin no caller's data until the next batch
			if err == nil {
				l.flushOwed()
			}
			return
		}
		l.call(l.answer(batch[ee.i], nil, 0, err, l.callbackRoom(batch[ee.i:ee.i+1])))
		if ee.i > 0 {
			l.commit(batch[:ee.i])
		}
		batch = batch[ee.i+1:]
	}
}

// callback is an AppendAsync entry's callback with its outcome.
type callback struct {
	done func(Record, error)
	rec  Record
	err  error
}

// callbackRoom makes room for the callbacks of batch, for answer to fill.
func (l *Ledger) callbackRoom(batch []*pending) []callback {
	n := 0
	for _, p := range batch {
		if p.res == nil && p.done != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return make([]callback, 0, n)
}

// answer gives p its outcome, or, for AppendAsync, adds its callback to
// calls for call to run.
func (l *Ledger) answer(p *pending, recs []Record, i int, err error, calls []callback) []callback {
	p.parts.release() // final: nothing encodes p again
	var rec Record
	var ee *entryError
	switch {
	case errors.As(err, &ee):
		err = fmt.Errorf("ledger: %w", ee.err)
	case err != nil:
		err = fmt.Errorf("ledger commit: %w", err)
	default:
		rec = recs[i]
	}
	if p.res != nil {
		if !p.state.CompareAndSwap(stateTaken, stateAnswered) {
			// Abandoned: its caller answered the client as if nothing
			// was written.
			if err == nil && p.opens {
				l.owe(rec.Seq, &owed{reason: record.NotForwarded})
			}
		}
		p.res <- result{rec, err}
		return calls
	}
	if p.done == nil {
		return calls
	}
	return append(calls, callback{p.done, rec, err})
}

// call runs a group's AppendAsync callbacks in order, on one goroutine of
// their own: never on the writer's, where a callback that appends again
// would deadlock it.
func (l *Ledger) call(calls []callback) {
	if len(calls) == 0 {
		return
	}
	l.callbacks.Add(1)
	go func() {
		defer l.callbacks.Done()
		for i := range calls {
			calls[i].done(calls[i].rec, calls[i].err)
		}
	}()
}

// write makes batch durable: in one journal frame and one fdatasync when
// the journal can take it, else in one bbolt transaction.
func (l *Ledger) write(batch []*pending) ([]Record, error) {
	began := time.Since(l.epoch)
	l.inflight.Store(int64(began) + 1)
	var recs []Record
	var head Head
	var err error
	// A failed journal frame may still be whole on the disk: nothing is
	// written until its header is zeroed.
	if err = l.scrub(); err == nil {
		if l.journalable(batch) {
			recs, head, err = l.writeJournal(batch)
		} else {
			recs, head, err = l.writeBolt(batch)
		}
	}
	took := time.Since(l.epoch) - began
	l.inflight.Store(0)

	l.mu.Lock()
	defer l.mu.Unlock()
	if took > l.stuckAfter {
		l.stats.Slow++
	}
	var ee *entryError
	switch {
	case err == nil:
		l.head, l.err = head, nil
		l.stats.Appends += uint64(len(batch))
		l.stats.Commits++
		l.stats.MaxBatch = max(l.stats.MaxBatch, uint64(len(batch)))
		for _, p := range batch {
			if p.onlyIfOpen {
				l.stats.Outcomes++
			}
		}
	case !errors.As(err, &ee):
		err = SpaceError(l.path, err)
		l.err = err
		l.stats.Failures++
	}
	return recs, err
}

// journalable reports whether batch can go to the journal: no entry has a
// Tx hook or must read bbolt's state (an outcome record), and the journal
// is on.
func (l *Ledger) journalable(batch []*pending) bool {
	if l.j == nil {
		return false
	}
	for _, p := range batch {
		if p.e.Tx != nil || p.onlyIfOpen {
			return false
		}
	}
	return true
}

// writeJournal appends batch to the journal in one frame and one
// fdatasync, chaining it onto the head in memory: only this goroutine
// moves the head, and a failed write moves nothing.
func (l *Ledger) writeJournal(batch []*pending) ([]Record, Head, error) {
	if err := l.applyFailed(); err != nil {
		// Fail closed: records bbolt cannot take would pile up here.
		return nil, Head{}, err
	}
	if l.db.NoSync {
		return nil, Head{}, errNoSync
	}
	if l.reloadHead {
		if err := l.readStoredHead(); err != nil {
			return nil, Head{}, err
		}
		l.reloadHead = false
	}
	h := l.Head()
	var prevTime time.Time
	if h.Seq > 0 {
		prevTime, _ = parseTime(h.Time) // validated when it became the head
	}
	recs := l.recordsFor(batch)
	js := l.jrecs[:0]
	l.enc.begin(batch)
	raws := 0
	for i, p := range batch {
		t := l.now().UTC()
		if t.Before(prevTime) {
			t = prevTime
		}
		rec := newRecord(p.e, h, t)
		raw, err := l.enc.encode(&rec, &p.parts)
		if err != nil {
			return nil, Head{}, &entryError{i, err}
		}
		recs[i] = rec
		js = append(js, jrec{seq: rec.Seq, raw: raw, hash: rec.Hash, time: rec.Time, opens: p.opens, closes: p.closes})
		raws += len(raw)
		h, prevTime = Head{Seq: rec.Seq, Hash: rec.Hash, Time: rec.Time}, t
	}
	n := frameSize(raws, len(js))
	if n > l.j.capacity()/2 {
		// Too big for the journal (huge records): bbolt takes it.
		return l.writeBolt(batch)
	}
	if !l.j.fits(n) {
		// A new round: bbolt must hold everything in this one first.
		if err := l.applyNow(); err != nil {
			return nil, Head{}, err
		}
		l.jmu.Lock()
		err := l.j.reset(js[0].seq)
		l.jmu.Unlock()
		if err != nil {
			return nil, Head{}, fmt.Errorf("journal: %w", err)
		}
	}
	if l.failCommit != nil {
		if err := l.failCommit(); err != nil {
			return nil, Head{}, err
		}
	}
	l.jmu.Lock()
	err := l.j.append(js)
	l.jmu.Unlock()
	if err != nil {
		return nil, Head{}, fmt.Errorf("journal: %w", err)
	}
	l.umu.Lock()
	l.unapplied = append(l.unapplied, js...)
	l.umu.Unlock()
	clear(js) // unapplied has them now
	if cap(js) <= maxBatch {
		l.jrecs = js[:0]
	}
	l.mu.Lock()
	l.stats.Journaled += uint64(len(js))
	l.mu.Unlock()
	select {
	case l.applyWake <- struct{}{}:
	default:
	}
	return recs, h, nil
}

var errNoSync = errors.New("bbolt NoSync is set: records would not be durable")

// scrub zeroes a failed journal frame's header (journal.scrub); nil when
// there is none.
func (l *Ledger) scrub() error {
	if l.j == nil {
		return nil
	}
	l.jmu.Lock()
	defer l.jmu.Unlock()
	if err := l.j.scrub(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// readStoredHead makes the head in memory bbolt's, once bbolt has every
// journaled record and a synced commit has made what the failed one left
// durable (its pages may be in the page cache only).
func (l *Ledger) readStoredHead() error {
	if err := l.applyNow(); err != nil {
		return err
	}
	if err := l.probe(); err != nil {
		return err
	}
	var h Head
	err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		h, err = readHead(tx)
		return err
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.head = h
	l.mu.Unlock()
	return nil
}

// writeBolt appends batch in one bbolt transaction: one commit, two syncs.
// Every journaled record not yet in bbolt goes first, in the same
// transaction. The head is read inside the transaction rather than trusted
// from memory, so a commit that failed after reaching the disk can never
// lead to a fork.
func (l *Ledger) writeBolt(batch []*pending) (_ []Record, _ Head, err error) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.umu.Lock()
	pre := l.unapplied
	l.umu.Unlock()
	recs := l.recordsFor(batch)
	var head Head
	l.enc.begin(batch)
	var ee *entryError
	defer func() {
		if err != nil && !errors.As(err, &ee) {
			// A failed commit may still have reached the disk: the next
			// journal write must chain onto what bbolt holds.
			l.reloadHead = true
		}
	}()
	err = l.db.Update(func(tx *bolt.Tx) error {
		if tx.DB().NoSync {
			// Someone flipped it through DB(): a commit would return
			// before the disk has the record, so refuse to pretend.
			return errNoSync
		}
		records, meta, open := tx.Bucket(bucketRecords), tx.Bucket(bucketMeta), tx.Bucket(bucketPending)
		if err := applyRecords(tx, pre); err != nil {
			return err
		}
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if err := checkTail(records, h, false); err != nil {
			return err
		}
		var prevTime time.Time
		if h.Seq > 0 {
			prevTime, _ = parseTime(h.Time) // validated by readHead
		}
		for i, p := range batch {
			t := l.now().UTC()
			if t.Before(prevTime) {
				// A clock stepping back must not make the chain's
				// times go backwards.
				t = prevTime
			}
			if p.onlyIfOpen && open.Get(seqKey(p.closes)) == nil {
				return &entryError{i, errNotOpen}
			}
			rec := newRecord(p.e, h, t)
			raw, err := l.enc.encode(&rec, &p.parts)
			if err != nil {
				return &entryError{i, err}
			}
			if err := records.Put(seqKey(rec.Seq), raw); err != nil {
				return fmt.Errorf("put record %d: %w", rec.Seq, err)
			}
			if p.e.Tx != nil {
				if err := runHook(p.e.Tx, tx, rec); err != nil {
					return &entryError{i, fmt.Errorf("tx hook: %w", err)}
				}
			}
			if p.opens {
				if err := open.Put(seqKey(rec.Seq), nil); err != nil {
					return fmt.Errorf("put pending %d: %w", rec.Seq, err)
				}
			}
			if p.closes != 0 {
				if err := open.Delete(seqKey(p.closes)); err != nil {
					return fmt.Errorf("delete pending %d: %w", p.closes, err)
				}
			}
			recs[i] = rec
			h, prevTime = Head{Seq: rec.Seq, Hash: rec.Hash, Time: rec.Time}, t
		}
		if l.failCommit != nil {
			if err := l.failCommit(); err != nil {
				return err
			}
		}
		hb, err := json.Marshal(h)
		if err != nil {
			return err
		}
		head = h
		return meta.Put(keyHead, hb)
	})
	if err == nil {
		l.appliedTo(len(pre), head.Seq)
	}
	return recs, head, err
}

// recordsFor returns the writer's list of records for batch, reused from
// batch to batch: commit copies each out as it answers.
func (l *Ledger) recordsFor(batch []*pending) []Record {
	if cap(l.recs) < len(batch) {
		l.recs = make([]Record, len(batch))
	}
	return l.recs[:len(batch)]
}

func newRecord(e Entry, h Head, t time.Time) Record {
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	return Record{
		V: 1, Seq: h.Seq + 1, Time: formatTime(t), Kind: e.Kind, App: e.App,
		Action: e.Action, Decision: e.Decision, Reason: e.Reason,
		ApprovalID: e.ApprovalID, Digest: e.Digest, Policy: e.Policy,
		Data: data, Prev: h.Hash,
	}
}

// runHook turns a panicking hook into that entry's error: the writer
// goroutine is shared by every request and must survive one bad caller.
func runHook(fn func(*bolt.Tx, *Record) error, tx *bolt.Tx, rec Record) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(tx, &rec)
}

// Head returns the last committed record's seq, hash and time.
func (l *Ledger) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Stats returns the writer's counters.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Healthy returns nil while appends can be expected to succeed: not closed,
// not read-only, no write transaction in flight for longer than
// Options.StuckAfter, and the last write transaction committed. A
// successful commit clears an earlier failure, and so does the probe the
// ledger runs every Options.ProbeEvery while unhealthy (a small synced
// write beside the chain), so that readiness comes back without traffic
// once the disk is writable again. Use it for readiness.
func (l *Ledger) Healthy() error {
	if l.readOnly {
		return ErrReadOnly
	}
	l.qmu.Lock()
	closed := l.closed
	l.qmu.Unlock()
	if closed {
		return ErrClosed
	}
	if d := l.InFlight(); d > l.stuckAfter {
		return fmt.Errorf("%w: a ledger commit has been in flight for %s (over %s): the disk is not answering",
			ErrStuck, d.Round(time.Millisecond), l.stuckAfter)
	}
	l.umu.Lock()
	applyErr := l.applyErr
	l.umu.Unlock()
	if applyErr != nil {
		return applyErr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return fmt.Errorf("last ledger commit failed: %w", l.err)
	}
	return nil
}

// InFlight returns how long the write transaction now in flight (a group
// commit or the health probe) has been running; 0 when none is.
func (l *Ledger) InFlight() time.Duration {
	s := l.inflight.Load()
	if s == 0 {
		return 0
	}
	return max(time.Since(l.epoch)-time.Duration(s-1), 0)
}

// DB returns the underlying bbolt database so that other stores can keep
// their buckets in the same file, and update them atomically with a record
// through Entry.Tx. They must not touch BucketRecords or BucketMeta, must not
// set NoSync (the writer then refuses to commit), and should keep their own
// write transactions short: each one delays every pending append.
func (l *Ledger) DB() *bolt.DB { return l.db }

// Get returns a copy of the stored bytes of record seq, or an error wrapping
// ErrNotFound.
func (l *Ledger) Get(seq uint64) ([]byte, error) {
	if err := l.visible(seq); err != nil {
		return nil, fmt.Errorf("get record %d: %w", seq, err)
	}
	if r, ok := l.fromOverlay(seq); ok {
		return bytes.Clone(r.raw), nil
	}
	var out []byte
	err := l.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRecords); b != nil {
			out = bytes.Clone(b.Get(seqKey(seq)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get record %d: %w", seq, err)
	}
	if out == nil {
		return nil, fmt.Errorf("record %d: %w", seq, ErrNotFound)
	}
	return out, nil
}

// Range calls fn for each stored record with from <= seq <= to, in order,
// stopping at fn's first error, which it returns. raw is a copy that fn owns
// and may keep. fn runs outside any transaction, so it may be slow (stream to
// a client, upload) or even Append; records are read in bounded transactions
// of at most 10,000 records each. Range does not check the chain: missing
// records are simply not visited. Use Verify for that.
func (l *Ledger) Range(from, to uint64, fn func(seq uint64, raw []byte) error) error {
	from = max(from, 1)
	if err := l.visible(to); err != nil {
		return fmt.Errorf("range %d-%d: %w", from, to, err)
	}
	for from <= to {
		items, _, _, err := l.readChunk(seqKey(from), to)
		if err != nil {
			return fmt.Errorf("range %d-%d: %w", from, to, err)
		}
		if len(items) == 0 {
			break
		}
		var seq uint64
		for _, it := range items {
			if len(it.key) != 8 {
				return fmt.Errorf("range: %w: key %x", ErrCorrupt, it.key)
			}
			seq = binary.BigEndian.Uint64(it.key)
			if err := fn(seq, it.raw); err != nil {
				return err
			}
		}
		if seq == math.MaxUint64 {
			return nil
		}
		from = seq + 1
	}
	for _, r := range l.overlay {
		if r.seq >= from && r.seq <= to {
			if err := fn(r.seq, bytes.Clone(r.raw)); err != nil {
				return err
			}
		}
	}
	return nil
}

// fromOverlay returns record seq from a read-only ledger's overlay.
func (l *Ledger) fromOverlay(seq uint64) (jrec, bool) {
	if len(l.overlay) == 0 || seq <= l.applied || seq > l.overlay[len(l.overlay)-1].seq {
		return jrec{}, false
	}
	return l.overlay[seq-l.overlay[0].seq], true
}

// overlayHead is the stored head's JSON as it will be once the overlay is
// applied.
func (l *Ledger) overlayHead() []byte {
	last := l.overlay[len(l.overlay)-1]
	b, _ := json.Marshal(Head{Seq: last.seq, Hash: last.hash, Time: last.time})
	return b
}

type item struct{ key, raw []byte }

// readChunk copies out records from key start (nil: the very first key) up to
// seq to, within one read transaction bounded by chunkRecords and chunkBytes.
// atEnd reports that the bucket's last record was read, and meta is then the
// stored head from that same transaction, so the two are consistent even
// while the writer appends.
func (l *Ledger) readChunk(start []byte, to uint64) (items []item, atEnd bool, meta []byte, err error) {
	err = l.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRecords); b != nil {
			c := b.Cursor()
			k, v := c.First()
			if start != nil {
				k, v = c.Seek(start)
			}
			size := 0
			for ; k != nil; k, v = c.Next() {
				if len(items) == chunkRecords || size >= chunkBytes {
					return nil
				}
				if len(k) == 8 && binary.BigEndian.Uint64(k) > to {
					return nil
				}
				items = append(items, item{bytes.Clone(k), bytes.Clone(v)})
				size += len(v)
			}
		}
		atEnd = true
		if m := tx.Bucket(bucketMeta); m != nil {
			meta = bytes.Clone(m.Get(keyHead))
		}
		return nil
	})
	return items, atEnd, meta, err
}

// Close stops accepting appends, commits everything already queued, waits
// for AppendAsync callbacks, and closes the file. It is idempotent.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		l.qmu.Lock()
		l.closed = true
		l.kick()
		if l.lazyKick != nil {
			l.lazyKick.Stop()
		}
		l.qmu.Unlock()
		if !l.readOnly {
			close(l.quit)
		}
		<-l.probeDone
		<-l.stopped
		<-l.applyDone
		l.callbacks.Wait()
		if l.j != nil {
			// Leave the journal empty when bbolt has it all; if not
			// (a full disk), the next Open applies it.
			if err := l.applyNow(); err != nil {
				l.closeErr = fmt.Errorf("records left in %s for the next start: %w", l.j.path, err)
			} else {
				l.jmu.Lock()
				l.closeErr = l.j.reset(l.Head().Seq + 1)
				l.jmu.Unlock()
			}
			l.closeErr = errors.Join(l.closeErr, l.j.close())
		}
		l.closeErr = errors.Join(l.closeErr, l.db.Close())
	})
	return l.closeErr
}
