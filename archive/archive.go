package archive

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// Bucket is the bbolt bucket where the archiver keeps its position,
// one key per store ("pos/" + the store id), beside the chain so that the
// position and the archive record commit in one transaction.
const Bucket = "archive"

// Defaults (docs/reference.md#archive and the manifest's audit section).
const (
	DefaultSegmentRecords  = 10000
	DefaultSegmentInterval = time.Minute
	DefaultRetentionYears  = 7
	DefaultMode            = "COMPLIANCE"
	DefaultSlowUpload      = 10 * time.Second
	DefaultStallTimeout    = 30 * time.Second
)

// Config configures an Archiver and Verify. App, the gateway Key and one
// of S3 or LocalDir are required; the rest have defaults.
type Config struct {
	// App is the manifest's app_id: the APP of PREFIX/APP/segments/ and the
	// checkpoint origin "uapk-proxy/APP".
	App string
	// Instance, when set, names this proxy among a fleet's: its archive is
	// PREFIX/APP/INSTANCE/, beside the others' (archive.instance).
	Instance string
	// S3 sends the archive to a bucket with Object Lock; nil writes it
	// under LocalDir instead.
	S3 *S3Config
	// LocalDir is the local archive root, DATA/archive, used when S3 is nil.
	LocalDir string

	// A segment is sealed when SegmentRecords records wait (default 10000)
	// or when the oldest waiting record is SegmentInterval old (default
	// 1m), whichever comes first.
	SegmentRecords  int
	SegmentInterval time.Duration

	// Mode is the Object Lock mode of every object: the manifest's
	// audit.storage_class, COMPLIANCE (default) or GOVERNANCE.
	Mode string
	// RetentionYears is the manifest's audit.retention_years (default 7):
	// each object is locked until its last record's time plus this many
	// years (rounded up to the second).
	RetentionYears int

	// Key is the gateway's Ed25519 key; it signs the checkpoints. Not
	// needed by Verify.
	Key ed25519.PrivateKey
	// Origin is the checkpoint origin and signed-note key name; default
	// "uapk-proxy/" + App.
	Origin string
	// Policy goes into the policy field of the checkpoint and archive
	// records (hex SHA-256 of the manifest in force); may be empty.
	Policy string

	// Logger receives the archiver's lines (segments sealed, failures,
	// backlog growing and draining, refusals, conflicts), each with the
	// store. Name the component in it (component=archive): the archiver
	// adds no component of its own, as zerolog would repeat the key. Zero:
	// silent.
	Logger zerolog.Logger

	// Retries of a failed seal wait RetryMin (default 1s), doubling up to
	// RetryMax (default 1m), with jitter.
	RetryMin, RetryMax time.Duration
	// RequestTimeout bounds each store call (default 2m).
	RequestTimeout time.Duration
	// SlowUpload: a segment or checkpoint upload, or the start-up check of
	// the store, still going after this long is logged at warn, once per
	// call, with its key, the time so far, the attempt and the backlog,
	// and counted in Status.SlowUploads (default 10s). An S3 that hangs
	// without failing is otherwise silent until RequestTimeout.
	SlowUpload time.Duration
	// StallTimeout (S3 only) abandons an attempt whose answer has not begun
	// this long after the request was sent in full (the transport's
	// response header timeout), so that a hung connection is retried on a
	// new one well before RequestTimeout (default 30s). The time to send a
	// segment's bytes does not count against it: a slow link is not a hang.
	StallTimeout time.Duration
	// FlushTimeout bounds Close's last seal of what is pending (default 10s).
	FlushTimeout time.Duration
	// Now is the clock for backlog ages and the interval (default time.Now).
	Now func() time.Time
}

var appPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c *Config) setDefaults() error {
	var probs []string
	if !appPattern.MatchString(c.App) || c.App == "." || c.App == ".." {
		probs = append(probs, fmt.Sprintf("app %q must be 1 to 64 of [A-Za-z0-9_.-], not . or ..", c.App))
	}
	if c.Instance != "" && (!appPattern.MatchString(c.Instance) || c.Instance == "." || c.Instance == "..") {
		probs = append(probs, fmt.Sprintf("instance %q must be 1 to 64 of [A-Za-z0-9_.-], not . or ..", c.Instance))
	}
	if c.S3 == nil && c.LocalDir == "" {
		probs = append(probs, "neither s3 nor a local directory is set")
	}
	if c.S3 != nil && c.S3.Bucket == "" {
		probs = append(probs, "s3.bucket is required")
	}
	if c.S3 != nil {
		for _, seg := range strings.Split(strings.Trim(c.S3.Prefix, "/"), "/") {
			if seg == "." || seg == ".." {
				probs = append(probs, fmt.Sprintf("s3.prefix %q has a . or .. segment", c.S3.Prefix))
				break
			}
		}
	}
	if c.SegmentRecords == 0 {
		c.SegmentRecords = DefaultSegmentRecords
	}
	if c.SegmentRecords < 1 || c.SegmentRecords > 1_000_000 {
		probs = append(probs, fmt.Sprintf("segment_records %d must be 1 to 1000000", c.SegmentRecords))
	}
	if c.SegmentInterval == 0 {
		c.SegmentInterval = DefaultSegmentInterval
	}
	if c.SegmentInterval < time.Millisecond {
		probs = append(probs, fmt.Sprintf("segment_interval %s must be at least 1ms", c.SegmentInterval))
	}
	c.Mode = strings.ToUpper(c.Mode)
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.Mode != "COMPLIANCE" && c.Mode != "GOVERNANCE" {
		probs = append(probs, fmt.Sprintf("mode %q must be COMPLIANCE or GOVERNANCE", c.Mode))
	}
	if c.RetentionYears == 0 {
		c.RetentionYears = DefaultRetentionYears
	}
	if c.RetentionYears < 1 || c.RetentionYears > 100 {
		probs = append(probs, fmt.Sprintf("retention_years %d must be 1 to 100", c.RetentionYears))
	}
	if c.Origin == "" {
		c.Origin = "uapk-proxy/" + c.App
	}
	if !checkpoint.ValidOrigin(c.Origin) {
		probs = append(probs, fmt.Sprintf("origin %q must have no spaces or '+'", c.Origin))
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Minute
	}
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 2 * time.Minute
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = 10 * time.Second
	}
	if c.SlowUpload <= 0 {
		c.SlowUpload = DefaultSlowUpload
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(probs) > 0 {
		return fmt.Errorf("archive config: %s", strings.Join(probs, "; "))
	}
	return nil
}

// base is PREFIX/APP (PREFIX/APP/INSTANCE in a fleet), the folder every
// key of this archive is under.
func (c *Config) base() string {
	b := c.App
	if c.Instance != "" {
		b += "/" + c.Instance
	}
	if c.S3 != nil {
		if p := strings.Trim(c.S3.Prefix, "/"); p != "" {
			return p + "/" + b
		}
	}
	return b
}

// storeID names the archive: it keys the position in bbolt and appears in
// records and Status. A local archive is named relative to the data
// directory, so moving the directory keeps its position.
func (c *Config) storeID() string {
	if c.S3 != nil {
		return "s3://" + c.S3.Bucket + "/" + c.base()
	}
	return "local:archive/" + c.base()
}

func segmentKey(base string, first, last uint64) string {
	return fmt.Sprintf("%s/segments/%020d-%020d.jsonl", base, first, last)
}

func checkpointKey(base string, last uint64) string {
	return fmt.Sprintf("%s/checkpoints/%020d", base, last)
}

// objStore is where sealed segments and checkpoints go: an S3 bucket with
// Object Lock (s3Store) or a directory (localStore). Tests fake it.
type objStore interface {
	// check reports the store's protection; an error wrapping
	// ErrRefused means never write there.
	check(ctx context.Context) (StoreInfo, error)
	// putIfAbsent writes data under key, locked as lock says where the
	// store can, unless an object is already there: errObjectExists.
	putIfAbsent(ctx context.Context, key string, data []byte, lock objectLock) (objectInfo, error)
	// get reads the current object under key, or errObjectNotFound.
	get(ctx context.Context, key string) ([]byte, objectInfo, error)
	// list returns the keys directly under prefix (a folder), sorted.
	list(ctx context.Context, prefix string) ([]string, error)
}

var (
	errObjectExists   = errors.New("object already exists")
	errObjectNotFound = errors.New("object not found")
	errPositionMoved  = errors.New("archive position moved: another archiver is running")
)

type objectLock struct {
	Mode        string // COMPLIANCE or GOVERNANCE
	RetainUntil time.Time
}

type objectInfo struct {
	VersionID      string
	ChecksumSHA256 string // base64 SHA-256 of the bytes (computed)
	StoredChecksum string // base64 SHA-256 the server reports for the object, if any
	LockMode       string // "" where the store has no object lock
	RetainUntil    time.Time
}

// StoreInfo is what the start-up check found.
type StoreInfo struct {
	Kind             string `json:"kind"`                        // "s3" or "local"
	Versioning       string `json:"versioning,omitempty"`        // S3: Enabled, Suspended, Unversioned
	ObjectLock       bool   `json:"object_lock"`                 // S3: bucket has Object Lock enabled
	DefaultMode      string `json:"default_mode,omitempty"`      // S3: bucket default retention mode, if any
	DefaultRetention string `json:"default_retention,omitempty"` // S3: e.g. "7y" or "30d"
}

func newStore(ctx context.Context, c *Config) (objStore, error) {
	if c.S3 != nil {
		return newS3Store(ctx, *c.S3, c.StallTimeout)
	}
	return newLocalStore(c.LocalDir)
}

// segRange is a segment's first and last seq.
type segRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// archivePos is the archiver's position in one store, kept in bbolt.
type archivePos struct {
	Seq      uint64 `json:"seq"`  // last archived record; 0 for none
	Hash     string `json:"hash"` // its hash: the prev of the next segment
	Key      string `json:"key,omitempty"`
	Segments uint64 `json:"segments"`
	// Own lists records above Seq that the archiver wrote itself
	// (checkpoint and archive records). They go into the next segment but
	// do not make one on their own: otherwise an idle proxy would seal a
	// segment of bookkeeping every interval forever.
	Own []uint64 `json:"own,omitempty"`
	// Sealing is the segment being archived, fixed before its upload so
	// that after a crash exactly the same segment (same key, same bytes)
	// is retried, however many records came since.
	Sealing *segRange `json:"sealing,omitempty"`
	// Checkpointed is Sealing.Last once its checkpoint record is in the
	// chain, so a retry does not record the checkpoint twice.
	Checkpointed uint64 `json:"checkpointed,omitempty"`
}

func (p *archivePos) ownAbove(seq uint64) (n uint64) {
	for _, s := range p.Own {
		if s > seq {
			n++
		}
	}
	return n
}

func posKey(id string) []byte { return []byte("pos/" + id) }

func readPos(tx *bolt.Tx, id string) (archivePos, error) {
	p := archivePos{Hash: ledger.ZeroHash}
	b := tx.Bucket([]byte(Bucket))
	if b == nil {
		return p, nil
	}
	v := b.Get(posKey(id))
	if v == nil {
		return p, nil
	}
	if err := json.Unmarshal(v, &p); err != nil {
		return p, fmt.Errorf("%w: archive position: %v", ledger.ErrCorrupt, err)
	}
	return p, nil
}

func writePos(tx *bolt.Tx, id string, p archivePos) error {
	b, err := tx.CreateBucketIfNotExists([]byte(Bucket))
	if err != nil {
		return err
	}
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.Put(posKey(id), v)
}

// Archiver copies the sealed chain to a WORM store. It never blocks Append:
// it reads committed records and appends its own checkpoint and archive
// records like any other caller. All methods are safe for concurrent use.
type Archiver struct {
	l     *ledger.Ledger
	cfg   Config
	store objStore
	id    string
	base  string
	lock  bool // the store keeps object lock: set retention on puts
	log   zerolog.Logger
	poll  time.Duration

	sealMu sync.Mutex // one step at a time: Run's loop and Flush

	mu         sync.Mutex // guards everything below
	pos        archivePos
	info       StoreInfo
	checked    bool
	refused    string
	conflict   string
	lastErr    string
	lastErrAt  time.Time
	lastSealAt time.Time
	sealed     uint64
	failures   uint64
	ageSeq     uint64 // cache for the backlog age: record ageSeq has time ageTime
	ageTime    time.Time
	logged     uint64 // backlog last logged as growing; 0 when not
	slow       uint64 // store calls that passed SlowUpload
	callKey    string // the store call in flight: its key ("" for the check)
	callStart  time.Time
	calling    bool

	attempt atomic.Int64 // Run's attempt at the current step: 1, then 2, ... while it fails

	closing   chan struct{}
	closeOnce sync.Once
	running   atomic.Bool
	done      chan struct{}

	// hook, set only by tests, runs at each stage of a seal ("segment",
	// "checkpoint": stored; "checkpoint_record": in the chain) so a test
	// can cut the seal short there, as a crash would.
	hook func(stage string)
}

// New prepares an archiver for l, which must be writable. It checks
// cfg and reads the position; it does not contact the store (Run does).
func New(l *ledger.Ledger, cfg Config) (*Archiver, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	store, err := newStore(context.Background(), &cfg)
	if err != nil {
		return nil, err
	}
	return newArchiver(l, cfg, store)
}

func newArchiver(l *ledger.Ledger, cfg Config, store objStore) (*Archiver, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("archive config: the gateway Ed25519 key is required to sign checkpoints")
	}
	if errors.Is(l.Healthy(), ledger.ErrReadOnly) {
		return nil, ledger.ErrReadOnly
	}
	a := &Archiver{
		l: l, cfg: cfg, store: store, id: cfg.storeID(), base: cfg.base(),
		lock:    cfg.S3 != nil,
		log:     cfg.Logger.With().Str("store", cfg.storeID()).Logger(),
		poll:    min(max(cfg.SegmentInterval/4, 10*time.Millisecond), time.Second),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := a.reload(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Archiver) reload() error {
	var p archivePos
	err := a.l.DB().View(func(tx *bolt.Tx) error {
		var err error
		p, err = readPos(tx, a.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("archive position: %w", err)
	}
	a.mu.Lock()
	a.pos = p
	a.mu.Unlock()
	return nil
}

func (a *Archiver) savePos(update func(p *archivePos)) error {
	err := a.l.DB().Update(func(tx *bolt.Tx) error {
		p, err := readPos(tx, a.id)
		if err != nil {
			return err
		}
		update(&p)
		return writePos(tx, a.id, p)
	})
	if err != nil {
		return fmt.Errorf("archive position: %w", err)
	}
	return a.reload()
}

// Run archives until ctx ends (an abort: whatever is in flight is dropped
// and redone by the next archiver) or Close is called (graceful: what is
// pending is sealed first, within FlushTimeout). Failures are retried with
// capped backoff; Run returns only then, with nil, or with an error once the
// ledger is closed under it.
func (a *Archiver) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("archive: Run called twice")
	}
	defer close(a.done)
	select {
	case <-a.closing:
		return nil
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.closing:
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(a.cfg.FlushTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-ctx.Done():
		}
	}()
	a.log.Info().Str("mode", a.cfg.Mode).Int("retention_years", a.cfg.RetentionYears).
		Int("segment_records", a.cfg.SegmentRecords).Dur("segment_interval", a.cfg.SegmentInterval).
		Uint64("archived_seq", a.Status().ArchivedSeq).Msg("archiver started")
	fails := 0
	a.attempt.Store(1)
	for {
		err := a.step(ctx, false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ledger.ErrClosed) || errors.Is(a.l.Healthy(), ledger.ErrClosed) {
			a.log.Warn().Msg("archiver stopped: the ledger was closed under it (close the archiver first)")
			return ledger.ErrClosed
		}
		wait := a.poll
		if err != nil {
			fails++
			wait = a.backoff(fails)
			a.logFailure(err, fails, wait)
		} else {
			fails = 0
		}
		a.attempt.Store(int64(fails + 1)) // the next step's: 1, or 2 and on after failures
		a.watchBacklog()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.closing:
			t.Stop()
			if err := a.step(ctx, true); err != nil && ctx.Err() == nil {
				a.log.Warn().Err(err).Msg("archive: last flush before close failed; the records stay in the ledger and go up at the next start")
			}
			return nil
		case <-t.C:
		}
	}
}

// Close stops Run after sealing what is pending (bounded by FlushTimeout)
// and waits for it. Call it before closing the ledger. It is idempotent.
func (a *Archiver) Close() error {
	a.closeOnce.Do(func() { close(a.closing) })
	if a.running.Load() {
		<-a.done
	}
	closeIdle(a.store)
	return nil
}

// closeIdle lets a store drop its idle connections, so no goroutine of the
// HTTP client outlives the archiver.
func closeIdle(s objStore) {
	if c, ok := s.(interface{ closeIdle() }); ok {
		c.closeIdle()
	}
}

// Flush seals and uploads everything appended so far, now, whatever the
// segment size and interval (at most SegmentRecords per segment). It
// returns the first failure.
func (a *Archiver) Flush(ctx context.Context) error { return a.step(ctx, true) }

func (a *Archiver) backoff(fails int) time.Duration {
	d := a.cfg.RetryMin
	for i := 1; i < fails && d < a.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, a.cfg.RetryMax)
	return d/2 + rand.N(d/2+1) // jitter, so many proxies do not retry in step
}

// step seals every segment that is due (all pending records with force),
// one at a time, stopping at the first failure.
func (a *Archiver) step(ctx context.Context, force bool) error {
	a.sealMu.Lock()
	defer a.sealMu.Unlock()
	if err := a.ensureChecked(ctx); err != nil {
		a.noteErr(err)
		return err
	}
	target := a.l.Head().Seq // with force: what was there when asked
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !force {
			select {
			case <-a.closing:
				return nil
			default:
			}
		}
		r, ok, err := a.next(force, target)
		if err == nil && ok {
			err = a.seal(ctx, r)
		}
		if err != nil {
			a.noteErr(err)
			return err
		}
		if !ok {
			return nil
		}
	}
}

func (a *Archiver) ensureChecked(ctx context.Context) error {
	a.mu.Lock()
	checked := a.checked
	a.mu.Unlock()
	if checked {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	done := a.watchCall("check", "")
	info, err := a.store.check(cctx)
	done(err)
	cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.info = info
	switch {
	case errors.Is(err, ErrRefused):
		if a.refused != err.Error() {
			a.log.Error().Err(err).Str("versioning", info.Versioning).Bool("object_lock", info.ObjectLock).
				Msg("archive refused: nothing will be written to this store until it is fixed")
		}
		a.refused = err.Error()
		return err
	case err != nil:
		return fmt.Errorf("archive store check: %w", err)
	}
	a.checked, a.refused = true, ""
	a.log.Info().Str("kind", info.Kind).Str("versioning", info.Versioning).Bool("object_lock", info.ObjectLock).
		Str("default_mode", info.DefaultMode).Str("default_retention", info.DefaultRetention).
		Msg("archive store checked")
	return nil
}

// next picks the segment to seal, if one is due.
func (a *Archiver) next(force bool, target uint64) (segRange, bool, error) {
	head := a.l.Head()
	a.mu.Lock()
	p := a.pos
	a.mu.Unlock()
	if p.Sealing != nil {
		return *p.Sealing, true, nil
	}
	if head.Seq < p.Seq {
		return segRange{}, false, fmt.Errorf("%w: the chain ends at record %d but record %d is already archived", ledger.ErrCorrupt, head.Seq, p.Seq)
	}
	pending := head.Seq - p.Seq
	n := uint64(a.cfg.SegmentRecords)
	if pending >= n && (!force || p.Seq < target) {
		return segRange{p.Seq + 1, p.Seq + n}, true, nil
	}
	real := pending - min(p.ownAbove(p.Seq), pending)
	if real == 0 {
		return segRange{}, false, nil
	}
	if force {
		if p.Seq >= target {
			return segRange{}, false, nil
		}
		return segRange{p.Seq + 1, head.Seq}, true, nil
	}
	if t, ok := a.oldestPendingTime(); ok && a.cfg.Now().Sub(t) >= a.cfg.SegmentInterval {
		return segRange{p.Seq + 1, head.Seq}, true, nil
	}
	return segRange{}, false, nil
}

// oldestPendingTime is the time of the oldest record not yet archived that
// is not the archiver's own bookkeeping.
func (a *Archiver) oldestPendingTime() (time.Time, bool) {
	head := a.l.Head()
	a.mu.Lock()
	seq := a.pos.Seq + 1
	for seq <= head.Seq && slices.Contains(a.pos.Own, seq) {
		seq++
	}
	if seq > head.Seq {
		a.mu.Unlock()
		return time.Time{}, false
	}
	if a.ageSeq == seq {
		t := a.ageTime
		a.mu.Unlock()
		return t, true
	}
	a.mu.Unlock()
	raw, err := a.l.Get(seq)
	if err != nil {
		return time.Time{}, false
	}
	ts, _ := memberString(raw, "time")
	t, err := recordTime(ts)
	if err != nil {
		return time.Time{}, false
	}
	a.mu.Lock()
	a.ageSeq, a.ageTime = seq, t
	a.mu.Unlock()
	return t, true
}

// seal archives one segment: fix it, read and re-check it, store it and its
// checkpoint (each idempotently), then record both in the chain, the archive
// record moving the position in the same transaction. A crash anywhere
// leaves a state from which the same steps, redone, give the same objects and
// no duplicate records.
func (a *Archiver) seal(ctx context.Context, r segRange) error {
	a.mu.Lock()
	p := a.pos
	a.mu.Unlock()
	if p.Sealing == nil {
		if err := a.savePos(func(q *archivePos) { q.Sealing, q.Checkpointed = &r, 0 }); err != nil {
			return err
		}
	}
	data, last, err := a.build(r, p.Hash)
	if err != nil {
		return err
	}
	lock := objectLock{}
	if a.lock {
		lock = objectLock{Mode: a.cfg.Mode, RetainUntil: retainUntil(last.Time, a.cfg.RetentionYears)}
	}
	segKey := segmentKey(a.base, r.First, r.Last)
	seg, err := a.putOnce(ctx, segKey, data, lock)
	if err != nil {
		return err
	}
	a.at("segment")
	cp := checkpoint.Checkpoint{Origin: a.cfg.Origin, Size: r.Last, Hash: last.Hash}
	signed, err := checkpoint.Sign(cp, a.cfg.Key)
	if err != nil {
		return err
	}
	cpKey := checkpointKey(a.base, r.Last)
	cpInfo, err := a.putOnce(ctx, cpKey, signed, lock)
	if err != nil {
		return err
	}
	a.at("checkpoint")

	// moved refuses to record anything if the position is not the one
	// this seal started from: a second archiver on the same store.
	moved := func(q archivePos) error {
		if q.Seq != r.First-1 || q.Sealing == nil || *q.Sealing != r {
			return errPositionMoved
		}
		return nil
	}
	if p.Checkpointed != r.Last {
		_, err := a.l.Append(ctx, ledger.Entry{
			Kind: record.KindCheckpoint, App: a.cfg.App, Policy: a.cfg.Policy,
			Data: (&record.Checkpoint{
				Store: a.id, Origin: cp.Origin, Size: cp.Size, Hash: cp.Hash,
				Key: cpKey, VersionID: cpInfo.VersionID, Note: string(signed),
				Segment: segKey,
			}).Map(),
			Tx: func(tx *bolt.Tx, rec *ledger.Record) error {
				q, err := readPos(tx, a.id)
				if err != nil {
					return err
				}
				if err := moved(q); err != nil {
					return err
				}
				q.Checkpointed = r.Last
				q.Own = append(q.Own, rec.Seq)
				return writePos(tx, a.id, q)
			},
		})
		if err != nil {
			return fmt.Errorf("checkpoint record: %w", err)
		}
		a.at("checkpoint_record")
	}
	rec, err := a.l.Append(ctx, ledger.Entry{
		Kind: record.KindArchive, App: a.cfg.App, Policy: a.cfg.Policy,
		Data: (&record.Archive{
			Store: a.id, Key: segKey, VersionID: seg.VersionID,
			ChecksumSHA256: seg.ChecksumSHA256, Bytes: len(data),
			First: r.First, Last: r.Last, LastHash: last.Hash,
			ObjectLockMode: seg.LockMode, RetainUntil: s3Time(seg.RetainUntil),
			CheckpointKey: cpKey, CheckpointVersionID: cpInfo.VersionID,
		}).Map(),
		Tx: func(tx *bolt.Tx, rec *ledger.Record) error {
			q, err := readPos(tx, a.id)
			if err != nil {
				return err
			}
			if err := moved(q); err != nil {
				return err
			}
			own := slices.DeleteFunc(append(q.Own, rec.Seq), func(s uint64) bool { return s <= r.Last })
			q = archivePos{Seq: r.Last, Hash: last.Hash, Key: segKey, Segments: q.Segments + 1, Own: own}
			return writePos(tx, a.id, q)
		},
	})
	if err != nil {
		return fmt.Errorf("archive record: %w", err)
	}
	if err := a.reload(); err != nil {
		return err
	}
	a.mu.Lock()
	a.sealed++
	a.lastSealAt = a.cfg.Now()
	a.conflict = ""
	a.mu.Unlock()
	a.log.Info().Str("key", segKey).Uint64("first", r.First).Uint64("last", r.Last).
		Int("bytes", len(data)).Str("version_id", seg.VersionID).Str("retain_until", s3Time(seg.RetainUntil)).
		Uint64("seq", rec.Seq).Msg("segment archived")
	return nil
}

func (a *Archiver) at(stage string) {
	if a.hook != nil {
		a.hook(stage)
	}
}

// build reads the segment's records (each record and a newline) and checks
// their linkage: keys contiguous, each prev the previous record's hash, the
// first continuing the archive (prev). It does not re-derive the hashes:
// that is what Verify is for, and re-canonicalising costs more CPU per
// record than the append did, which a busy proxy would feel. A record
// whose content was edited in place is still caught by Verify, from the
// archived copy. The records are read where the file keeps them and copied
// once, into the segment, whose buffer is sized from the first record.
func (a *Archiver) build(r segRange, prevHash string) ([]byte, ledger.Head, error) {
	var seg []byte
	var prev [64]byte
	if len(prevHash) != len(prev) {
		return nil, ledger.Head{}, fmt.Errorf("%w: archive position hash %q", ledger.ErrCorrupt, prevHash)
	}
	copy(prev[:], prevHash)
	want := r.First
	var last ledger.Head
	err := a.l.RangeBorrow(r.First, r.Last, func(seq uint64, raw []byte) error {
		if seq != want {
			return fmt.Errorf("%w: record %d is missing", ledger.ErrCorrupt, want)
		}
		p, ok1 := member(raw, patPrev)
		h, ok2 := member(raw, patHash)
		if !ok1 || !ok2 || len(h) != 64 {
			return fmt.Errorf("%w: record %d has no prev or hash", ledger.ErrCorrupt, seq)
		}
		if !bytes.Equal(p, prev[:]) {
			return fmt.Errorf("%w: record %d has prev %s, not the hash %s of record %d", ledger.ErrCorrupt, seq, p, prev[:], seq-1)
		}
		want = seq + 1
		if seq == r.Last {
			t, _ := member(raw, patTime)
			last = ledger.Head{Seq: seq, Hash: string(h), Time: string(t)}
		}
		copy(prev[:], h)
		if seg == nil {
			// A segment is at most 1,000,000 records.
			n := min(r.Last-r.First+1, 1<<20)
			seg = make([]byte, 0, int(n)*(len(raw)+1)*5/4)
		}
		seg = append(seg, raw...)
		seg = append(seg, '\n')
		return nil
	})
	if err != nil {
		return nil, ledger.Head{}, fmt.Errorf("refusing to archive records %d-%d: %w", r.First, r.Last, err)
	}
	if last.Seq != r.Last {
		return nil, ledger.Head{}, fmt.Errorf("%w: refusing to archive records %d-%d: the chain has only up to %d",
			ledger.ErrCorrupt, r.First, r.Last, want-1)
	}
	if _, err := recordTime(last.Time); err != nil {
		return nil, ledger.Head{}, fmt.Errorf("%w: record %d time: %v", ledger.ErrCorrupt, last.Seq, err)
	}
	return seg, last, nil
}

// memberString reads a top-level string member that comes after "data" in a
// stored record (hash, prev, time, ...), without parsing the record. Stored
// records are canonical, so members are in a fixed order; "data" is the only
// nested value and comes before these, and no string can hold an unescaped
// quote, so the last `,"name":"` is the member itself.
func memberString(raw []byte, name string) (string, bool) {
	v, ok := member(raw, []byte(`,"`+name+`":"`))
	return string(v), ok
}

// The patterns member looks for, for the members build reads of every
// record.
var (
	patPrev = []byte(`,"prev":"`)
	patHash = []byte(`,"hash":"`)
	patTime = []byte(`,"time":"`)
)

// member is memberString for the pattern `,"name":"`; the value is a
// slice of raw. The members it is used for sit in the record's last few
// hundred bytes (after "data", only kind, policy, prev, reason, seq, time
// and v follow "hash"), so it walks back from the end comma by comma, which
// costs a fraction of a backwards substring search.
func member(raw, pat []byte) ([]byte, bool) {
	i := lastIndexComma(raw, pat)
	if i < 0 {
		return nil, false
	}
	rest := raw[i+len(pat):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// lastIndexComma is bytes.LastIndex(raw, pat) for a pat that starts with a
// comma.
func lastIndexComma(raw, pat []byte) int {
	for end := len(raw); end > 0; {
		i := bytes.LastIndexByte(raw[:end], ',')
		if i < 0 {
			return -1
		}
		if bytes.HasPrefix(raw[i:], pat) {
			return i
		}
		end = i
	}
	return -1
}

// recordTime parses a record's time, which the writer gives in
// ledger.TimeLayout (UTC, nine fractional digits).
func recordTime(s string) (time.Time, error) {
	t, err := time.Parse(ledger.TimeLayout, s)
	if err != nil {
		return time.Time{}, err
	}
	if t.UTC().Format(ledger.TimeLayout) != s {
		return time.Time{}, fmt.Errorf("time %q is not UTC with 9 fractional digits", s)
	}
	return t, nil
}

// retainUntil is t plus years, rounded up to the whole second S3 keeps, so
// that rounding never shortens the retention.
func retainUntil(lastTime string, years int) time.Time {
	t, err := recordTime(lastTime)
	if err != nil {
		t = time.Now() // cannot happen: build checked the record
	}
	u := t.UTC().AddDate(years, 0, 0)
	if u.Nanosecond() != 0 {
		u = u.Truncate(time.Second).Add(time.Second)
	}
	return u
}

// putOnce is setObjectIfNoneMatch: an object already under key with the same
// bytes is success (a retry after a crash or a lost response); with other
// bytes it is the archive's alarm and nothing is written.
func (a *Archiver) putOnce(ctx context.Context, key string, data []byte, lock objectLock) (info objectInfo, err error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	done := a.watchCall("upload", key)
	defer func() { done(err) }()
	return a.putOnceCall(ctx, key, data, lock)
}

func (a *Archiver) putOnceCall(ctx context.Context, key string, data []byte, lock objectLock) (objectInfo, error) {
	info, err := a.store.putIfAbsent(ctx, key, data, lock)
	if err == nil {
		return info, nil
	}
	if !errors.Is(err, errObjectExists) {
		return objectInfo{}, err
	}
	got, ginfo, err := a.store.get(ctx, key)
	if errors.Is(err, errObjectNotFound) {
		return objectInfo{}, fmt.Errorf("%s: the store says it exists but has no current version", key)
	}
	if err != nil {
		return objectInfo{}, err
	}
	if bytes.Equal(got, data) {
		a.log.Info().Str("key", key).Str("version_id", ginfo.VersionID).Msg("already archived with the same bytes")
		return ginfo, nil
	}
	want := sha256.Sum256(data)
	err = fmt.Errorf("%w: %s holds %d bytes (sha256 %s) but the local chain gives %d bytes (sha256 %s)%s",
		ErrConflict, key, len(got), ginfo.ChecksumSHA256, len(data),
		base64.StdEncoding.EncodeToString(want[:]), firstDiff(got, data))
	a.mu.Lock()
	a.conflict = err.Error()
	a.mu.Unlock()
	a.log.Error().Err(err).Str("key", key).Str("version_id", ginfo.VersionID).
		Msg("ARCHIVE CONFLICT: an archived object differs from the local chain; not overwritten, archiving stopped here")
	return objectInfo{}, err
}

// watchCall marks a store call in flight (Status.InFlight) and, once it has
// taken SlowUpload, logs it at warn and counts it: an S3 that hangs without
// failing shows before RequestTimeout, not only as a growing backlog. The
// returned func ends the call; a slow call logs again how it ended.
func (a *Archiver) watchCall(op, key string) func(error) {
	start := time.Now()
	a.mu.Lock()
	a.calling, a.callKey, a.callStart = true, key, start
	a.mu.Unlock()
	var slow atomic.Bool
	t := time.AfterFunc(a.cfg.SlowUpload, func() {
		slow.Store(true)
		a.mu.Lock()
		a.slow++
		a.mu.Unlock()
		st := a.Status()
		a.log.Warn().Str("op", op).Str("key", key).Dur("elapsed", time.Since(start)).
			Int64("attempt", max(a.attempt.Load(), 1)).Dur("timeout", a.cfg.RequestTimeout).
			Uint64("backlog", st.Backlog).Float64("backlog_age_seconds", st.BacklogAgeSeconds).
			Msg("archive upload slow: the store has not answered; still waiting")
	})
	return func(err error) {
		t.Stop()
		a.mu.Lock()
		a.calling, a.callKey, a.callStart = false, "", time.Time{}
		a.mu.Unlock()
		if !slow.Load() {
			return
		}
		ev := a.log.Info()
		if err != nil {
			ev = a.log.Warn().Err(err)
		}
		ev.Str("op", op).Str("key", key).Dur("elapsed", time.Since(start)).
			Int64("attempt", max(a.attempt.Load(), 1)).Bool("ok", err == nil).
			Msg("archive upload slow: the store answered at last")
	}
}

// firstDiff names the first line where two segments differ.
func firstDiff(stored, local []byte) string {
	sl, ll := bytes.SplitAfter(stored, []byte("\n")), bytes.SplitAfter(local, []byte("\n"))
	for i := range min(len(sl), len(ll)) {
		if !bytes.Equal(sl[i], ll[i]) {
			return fmt.Sprintf("; first difference on line %d", i+1)
		}
	}
	return ""
}

func (a *Archiver) noteErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErr, a.lastErrAt = err.Error(), a.cfg.Now()
	a.failures++
}

func (a *Archiver) logFailure(err error, fails int, wait time.Duration) {
	if errors.Is(err, ErrRefused) || errors.Is(err, ErrConflict) {
		return // logged where found, at error level
	}
	st := a.Status()
	if errors.Is(err, ledger.ErrCorrupt) {
		a.log.Error().Err(err).Int("attempt", fails).Uint64("backlog", st.Backlog).
			Msg("ARCHIVE STOPPED: the local chain is broken here; run verify")
		return
	}
	a.log.Warn().Err(err).Int("attempt", fails).Dur("retry_in", wait).
		Uint64("backlog", st.Backlog).Float64("backlog_age_seconds", st.BacklogAgeSeconds).
		Msg("archive failed; records stay in the ledger and will be retried")
}

// watchBacklog logs when the backlog grows past a segment or two intervals
// (and again each time it doubles), and when it has drained.
func (a *Archiver) watchBacklog() {
	st := a.Status()
	late := st.Backlog >= uint64(a.cfg.SegmentRecords) || st.BacklogAgeSeconds >= 2*a.cfg.SegmentInterval.Seconds()
	a.mu.Lock()
	logged := a.logged
	switch {
	case late && st.Backlog > 2*logged:
		a.logged = st.Backlog
	case !late && logged > 0:
		a.logged = 0
	}
	a.mu.Unlock()
	switch {
	case late && st.Backlog > 2*logged:
		a.log.Warn().Uint64("backlog", st.Backlog).Float64("backlog_age_seconds", st.BacklogAgeSeconds).
			Str("last_error", st.LastError).Msg("archive backlog growing")
	case !late && logged > 0:
		a.log.Info().Uint64("backlog", st.Backlog).Uint64("archived_seq", st.ArchivedSeq).Msg("archive backlog drained")
	}
}

// Status is the archiver's state for /readyz, metrics and the
// dashboard.
type Status struct {
	Store          string    `json:"store"` // s3://BUCKET/PREFIX/APP or local:archive/APP
	Mode           string    `json:"mode"`  // object lock mode set on each object (S3)
	RetentionYears int       `json:"retention_years"`
	Bucket         StoreInfo `json:"bucket"`  // what the start-up check found
	Checked        bool      `json:"checked"` // the start-up check has passed
	// Refused says why nothing is written to this store (no Object Lock,
	// no versioning, no such bucket, no permission); "" otherwise.
	Refused string `json:"refused,omitempty"`
	// Conflict is the alarm: an archived object differs from the chain.
	Conflict string `json:"conflict,omitempty"`

	ArchivedSeq uint64 `json:"archived_seq"` // last record in the archive
	LastKey     string `json:"last_key,omitempty"`
	HeadSeq     uint64 `json:"head_seq"`
	// Backlog is the records waiting for the archive, not counting the
	// archiver's own checkpoint and archive records of the last segment
	// (they ride along with the next one). Unarchived counts them too.
	Backlog    uint64 `json:"backlog"`
	Unarchived uint64 `json:"unarchived"`
	// BacklogAgeSeconds is the age of the oldest record in Backlog; 0 if
	// none.
	BacklogAgeSeconds float64 `json:"backlog_age_seconds"`

	Segments    uint64    `json:"segments"` // sealed by this process
	Failures    uint64    `json:"failures"` // failed attempts by this process
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastSealAt  time.Time `json:"last_seal_at,omitzero"`

	// SlowUploads counts store calls (uploads, the start-up check) that
	// took longer than SlowUpload, answered or not.
	SlowUploads uint64 `json:"slow_uploads"`
	// InFlight is the key of the upload in flight ("check" for the
	// start-up check), InFlightSeconds how long it has been going; "" and
	// 0 between calls.
	InFlight        string  `json:"in_flight,omitempty"`
	InFlightSeconds float64 `json:"in_flight_seconds"`
}

// Ready is nil unless archiving cannot proceed without an operator: the
// store was refused, or an archived object conflicts with the chain. An
// outage is not one of these: records wait in the ledger (see Backlog).
func (s Status) Ready() error {
	if s.Refused != "" {
		return fmt.Errorf("archive refused: %s", s.Refused)
	}
	if s.Conflict != "" {
		return fmt.Errorf("archive alarm: %s", s.Conflict)
	}
	return nil
}

// Status reports the position, the backlog and the last failure. It is
// cheap enough for every /readyz and metrics scrape.
func (a *Archiver) Status() Status {
	head := a.l.Head()
	t, hasAge := a.oldestPendingTime()
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{
		Store: a.id, Mode: a.cfg.Mode, RetentionYears: a.cfg.RetentionYears,
		Bucket: a.info, Checked: a.checked, Refused: a.refused, Conflict: a.conflict,
		ArchivedSeq: a.pos.Seq, LastKey: a.pos.Key, HeadSeq: head.Seq,
		Segments: a.sealed, Failures: a.failures, LastError: a.lastErr, LastErrorAt: a.lastErrAt,
		LastSealAt: a.lastSealAt, SlowUploads: a.slow,
	}
	if a.calling {
		st.InFlight = cmp.Or(a.callKey, "check")
		st.InFlightSeconds = time.Since(a.callStart).Seconds()
	}
	if !a.lock {
		st.Mode = ""
	}
	if head.Seq > a.pos.Seq {
		st.Unarchived = head.Seq - a.pos.Seq
		st.Backlog = st.Unarchived - min(a.pos.ownAbove(a.pos.Seq), st.Unarchived)
	}
	if st.Backlog > 0 && hasAge {
		st.BacklogAgeSeconds = max(a.cfg.Now().Sub(t).Seconds(), 0)
	}
	return st
}
