package archive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// testKey is a fixed gateway key, so checkpoints are reproducible.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func localConfig(t testing.TB, dir string) Config {
	return Config{
		App: "erp-agent", LocalDir: dir, Key: testKey(1),
		SegmentRecords: 10, SegmentInterval: time.Hour,
		RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond,
	}
}

func mustArchiver(t testing.TB, l *ledger.Ledger, cfg Config, store objStore) *Archiver {
	t.Helper()
	var a *Archiver
	var err error
	if store == nil {
		a, err = New(l, cfg)
	} else {
		a, err = newArchiver(l, cfg, store)
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// rangeBytes is what a segment of records first..last must hold.
func rangeBytes(t testing.TB, l *ledger.Ledger, first, last uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Range(first, last, func(_ uint64, raw []byte) error {
		buf.Write(raw)
		buf.WriteByte('\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// kinds returns the kind of every record, in order.
func recordsOfKind(t testing.TB, l *ledger.Ledger, kind record.Kind) []map[string]any {
	t.Helper()
	var out []map[string]any
	err := l.Range(1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var r map[string]any
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if r["kind"] == string(kind) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustVerifyArchive(t testing.TB, l *ledger.Ledger, cfg Config, store objStore, archived uint64) Report {
	t.Helper()
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if store == nil {
		var err error
		if store, err = newStore(context.Background(), &cfg); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := verify(context.Background(), l, &cfg, store, []ed25519.PublicKey{cfg.Key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.ArchivedSeq != archived {
		t.Fatalf("verify archive: ok=%v archived=%d (want %d) problem=%+v", rep.OK, rep.ArchivedSeq, archived, rep.Problem)
	}
	// The signed heads are anchors for the local chain.
	lrep, err := verifier.Verify(context.Background(), l, rep.Anchors...)
	if err != nil || !lrep.OK {
		t.Fatalf("local verify with anchors: %v %+v", err, lrep.Problem)
	}
	return rep
}

func TestArchiveLocalLayout(t *testing.T) {
	dir := t.TempDir()
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 25)
	cfg := localConfig(t, dir)
	a := mustArchiver(t, l, cfg, nil)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 1-10 and 11-20 are full segments; each adds a checkpoint and an
	// archive record (26-29), which ride along with the flushed rest.
	want := [][2]uint64{{1, 10}, {11, 20}, {21, 29}}
	var keys []string
	for _, w := range want {
		keys = append(keys, fmt.Sprintf("erp-agent/segments/%020d-%020d.jsonl", w[0], w[1]))
	}
	got, err := (&localStore{root: dir}).list(context.Background(), "erp-agent/segments")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("segments %v, want %v", got, keys)
	}
	pub := cfg.Key.Public().(ed25519.PublicKey)
	for i, w := range want {
		p := filepath.Join(dir, filepath.FromSlash(keys[i]))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, rangeBytes(t, l, w[0], w[1])) {
			t.Errorf("%s differs from records %d-%d", keys[i], w[0], w[1])
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s mode %v, want 0444", keys[i], fi.Mode().Perm())
		}
		cp, err := os.ReadFile(filepath.Join(dir, "erp-agent", "checkpoints", fmt.Sprintf("%020d", w[1])))
		if err != nil {
			t.Fatal(err)
		}
		c, err := checkpoint.Open(cp, "uapk-proxy/erp-agent", pub)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := l.Get(w[1])
		if c.Size != w[1] || !bytes.Contains(last, []byte(`"hash":"`+c.Hash+`"`)) {
			t.Errorf("checkpoint %+v does not name record %d", c, w[1])
		}
	}
	// No temp files are left behind.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".tmp") {
			t.Errorf("left %s", p)
		}
		return nil
	})

	cps, ars := recordsOfKind(t, l, record.KindCheckpoint), recordsOfKind(t, l, record.KindArchive)
	if len(cps) != 3 || len(ars) != 3 {
		t.Fatalf("%d checkpoint and %d archive records, want 3 and 3", len(cps), len(ars))
	}
	d := ars[0]["data"].(map[string]any)
	sum := sha256.Sum256(rangeBytes(t, l, 1, 10))
	if d["key"] != keys[0] || d["checksum_sha256"] != base64.StdEncoding.EncodeToString(sum[:]) ||
		d["first"] != 1.0 || d["last"] != 10.0 || d["store"] != "local:archive/erp-agent" ||
		d["checkpoint_key"] != "erp-agent/checkpoints/00000000000000000010" {
		t.Errorf("archive record data %v", d)
	}
	if cd := cps[0]["data"].(map[string]any); cd["size"] != 10.0 || cd["origin"] != "uapk-proxy/erp-agent" || cd["note"] == "" {
		t.Errorf("checkpoint record data %v", cd)
	}
	st := a.Status()
	if st.ArchivedSeq != 29 || st.Backlog != 0 || st.Unarchived != 2 || st.Segments != 3 || st.Ready() != nil {
		t.Errorf("status %+v", st)
	}
	mustVerify(t, l, 31)
	mustVerifyArchive(t, l, cfg, nil, 29)

	// Nothing but the archiver's own records pending: Flush is a no-op.
	if err := a.Flush(context.Background()); err != nil || a.Status().ArchivedSeq != 29 {
		t.Fatalf("idle flush: %v %+v", err, a.Status())
	}
}

// fakeStore is an in-memory objStore whose failures tests choose.
type fakeStore struct {
	mu       sync.Mutex
	objs     map[string][]byte
	puts     int
	putErr   error // every put fails with it
	checkErr error
	getErr   error
}

func newFakeStore() *fakeStore { return &fakeStore{objs: map[string][]byte{}} }

func (f *fakeStore) check(context.Context) (StoreInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return StoreInfo{Kind: "fake"}, f.checkErr
}

func (f *fakeStore) putIfAbsent(_ context.Context, key string, data []byte, _ objectLock) (objectInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return objectInfo{}, f.putErr
	}
	if _, ok := f.objs[key]; ok {
		return objectInfo{}, errObjectExists
	}
	f.puts++
	f.objs[key] = bytes.Clone(data)
	return objectInfo{VersionID: fmt.Sprintf("v%d", f.puts)}, nil
}

func (f *fakeStore) get(_ context.Context, key string) ([]byte, objectInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return nil, objectInfo{}, f.getErr
	}
	b, ok := f.objs[key]
	if !ok {
		return nil, objectInfo{}, errObjectNotFound
	}
	sum := sha256.Sum256(b)
	return bytes.Clone(b), objectInfo{VersionID: "existing", ChecksumSHA256: base64.StdEncoding.EncodeToString(sum[:])}, nil
}

func (f *fakeStore) list(_ context.Context, prefix string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prefix = strings.TrimSuffix(prefix, "/") + "/"
	var keys []string
	for k := range f.objs {
		if rest, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(rest, "/") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func (f *fakeStore) set(key string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objs[key] = data
}

func (f *fakeStore) obj(key string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.objs[key]
}

func (f *fakeStore) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putErr = err
}

func TestArchiveConflictIsAnAlarm(t *testing.T) {
	key := "erp-agent/segments/00000000000000000001-00000000000000000005.jsonl"
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, dir string, l *ledger.Ledger) objStore
		read  func(dir string) []byte
	}{
		{"fake", func(t *testing.T, _ string, _ *ledger.Ledger) objStore {
			f := newFakeStore()
			f.set(key, []byte("someone else's segment\n"))
			return f
		}, nil},
		{"local", func(t *testing.T, dir string, _ *ledger.Ledger) objStore {
			s, _ := newLocalStore(dir)
			if _, err := s.putIfAbsent(context.Background(), key, []byte("someone else's segment\n"), objectLock{}); err != nil {
				t.Fatal(err)
			}
			return s
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTemp(t, ledger.Options{})
			appendN(t, l, 5)
			store := tc.store(t, dir, l)
			cfg := localConfig(t, dir)
			a := mustArchiver(t, l, cfg, store)
			err := a.Flush(context.Background())
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "line 1") {
				t.Fatalf("flush: %v, want ErrConflict naming line 1", err)
			}
			st := a.Status()
			if st.Conflict == "" || st.Ready() == nil || st.ArchivedSeq != 0 || st.Backlog != 5 {
				t.Errorf("status %+v", st)
			}
			if l.Head().Seq != 5 {
				t.Errorf("head %d: a conflict must record nothing", l.Head().Seq)
			}
			got, _, err := store.get(context.Background(), key)
			if err != nil || string(got) != "someone else's segment\n" {
				t.Errorf("the existing object was touched: %q %v", got, err)
			}
			// It stays an alarm on every retry.
			if err := a.Flush(context.Background()); !errors.Is(err, ErrConflict) {
				t.Errorf("second flush: %v", err)
			}
		})
	}
}

func TestArchiveSameBytesTwiceIsSuccess(t *testing.T) {
	dir := t.TempDir()
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 5)
	s, _ := newLocalStore(dir)
	key := "erp-agent/segments/00000000000000000001-00000000000000000005.jsonl"
	if _, err := s.putIfAbsent(context.Background(), key, rangeBytes(t, l, 1, 5), objectLock{}); err != nil {
		t.Fatal(err)
	}
	a := mustArchiver(t, l, localConfig(t, dir), s)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.ArchivedSeq != 5 || st.Conflict != "" {
		t.Fatalf("status %+v", st)
	}
	mustVerifyArchive(t, l, localConfig(t, dir), nil, 5)
}

// TestArchiveResumesAfterCrash cuts a seal short at each stage, as a killed
// proxy would, appends more, and lets a new archiver finish: the same
// segment is redone (same key, same bytes), with no gap and no duplicate
// record.
func TestArchiveResumesAfterCrash(t *testing.T) {
	for _, stage := range []string{"segment", "checkpoint", "checkpoint_record"} {
		t.Run(stage, func(t *testing.T) {
			store := newFakeStore()
			l := openTemp(t, ledger.Options{})
			appendN(t, l, 7)
			cfg := localConfig(t, t.TempDir())
			a := mustArchiver(t, l, cfg, store)
			ctx, cancel := context.WithCancel(context.Background())
			a.hook = func(s string) {
				if s == stage {
					cancel()
				}
			}
			if err := a.Flush(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("flush: %v", err)
			}
			if st := a.Status(); st.ArchivedSeq != 0 {
				t.Fatalf("archived %d after a crash", st.ArchivedSeq)
			}
			appendN(t, l, 5) // the proxy keeps going; the segment stays 1-7

			b := mustArchiver(t, l, cfg, store)
			if err := b.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			seg := store.obj("erp-agent/segments/00000000000000000001-00000000000000000007.jsonl")
			if !bytes.Equal(seg, rangeBytes(t, l, 1, 7)) {
				t.Fatalf("first segment is not records 1-7")
			}
			cps := recordsOfKind(t, l, record.KindCheckpoint)
			ars := recordsOfKind(t, l, record.KindArchive)
			if len(cps) != 2 || len(ars) != 2 {
				t.Fatalf("%d checkpoint and %d archive records, want 2 and 2 (no duplicates)", len(cps), len(ars))
			}
			for i, r := range ars {
				d := r["data"].(map[string]any)
				if i == 0 && (d["first"] != 1.0 || d["last"] != 7.0) {
					t.Errorf("first archive record covers %v-%v", d["first"], d["last"])
				}
			}
			mustVerify(t, l, l.Head().Seq)
			rep := mustVerifyArchive(t, l, cfg, store, b.Status().ArchivedSeq)
			if rep.Segments != 2 {
				t.Errorf("%d segments", rep.Segments)
			}
		})
	}
}

func TestArchiveOutageKeepsAppendsFlowing(t *testing.T) {
	store := newFakeStore()
	store.fail(errors.New("dial tcp 127.0.0.1:9000: connect: connection refused"))
	l := openTemp(t, ledger.Options{})
	cfg := localConfig(t, t.TempDir())
	cfg.SegmentRecords = 5
	cfg.SegmentInterval = 20 * time.Millisecond
	a := mustArchiver(t, l, cfg, store)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	appendN(t, l, 23)
	waitFor(t, "a failure to be reported", func() bool { return a.Status().Failures >= 2 })
	st := a.Status()
	if st.ArchivedSeq != 0 || st.Backlog != 23 || st.LastError == "" || st.Ready() != nil {
		t.Fatalf("during the outage: %+v", st)
	}
	if st.BacklogAgeSeconds <= 0 {
		t.Errorf("backlog age %v", st.BacklogAgeSeconds)
	}
	store.fail(nil)
	waitFor(t, "the backlog to drain", func() bool { return a.Status().Backlog == 0 })
	a.Close() // graceful: no seal left half done
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mustVerify(t, l, l.Head().Seq)
	mustVerifyArchive(t, l, cfg, store, a.Status().ArchivedSeq)
}

func TestArchiveRefusedStoreGetsNothing(t *testing.T) {
	store := newFakeStore()
	store.checkErr = fmt.Errorf("%w: bucket b does not have Object Lock enabled", ErrRefused)
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 3)
	a := mustArchiver(t, l, localConfig(t, t.TempDir()), store)
	if err := a.Flush(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("flush: %v", err)
	}
	st := a.Status()
	if !strings.Contains(st.Refused, "Object Lock") || st.Ready() == nil || st.Checked {
		t.Errorf("status %+v", st)
	}
	if store.puts != 0 || l.Head().Seq != 3 {
		t.Errorf("%d puts, head %d: a refused store must get nothing", store.puts, l.Head().Seq)
	}
}

// TestArchiveIntervalAndIdle: a partial segment goes up after the interval;
// an idle proxy does not seal its own bookkeeping records forever.
func TestArchiveIntervalAndIdle(t *testing.T) {
	dir := t.TempDir()
	l := openTemp(t, ledger.Options{})
	cfg := localConfig(t, dir)
	cfg.SegmentRecords = 1000
	// Long enough that three appends (an fsync each, slow on a loaded
	// machine) land in one interval.
	cfg.SegmentInterval = 250 * time.Millisecond
	a := mustArchiver(t, l, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	appendN(t, l, 3)
	waitFor(t, "the interval seal", func() bool { return a.Status().ArchivedSeq == 3 })
	time.Sleep(10 * cfg.SegmentInterval)
	if st := a.Status(); st.ArchivedSeq != 3 || st.Segments != 1 || st.Backlog != 0 {
		t.Fatalf("idle: %+v", st)
	}
	appendN(t, l, 1) // seq 6, after the checkpoint (4) and archive (5) records
	waitFor(t, "the next seal", func() bool { return a.Status().ArchivedSeq == 6 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	mustVerifyArchive(t, l, cfg, nil, 6)
}

func TestArchiveCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	l := openTemp(t, ledger.Options{})
	cfg := localConfig(t, dir)
	a := mustArchiver(t, l, cfg, nil)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	appendN(t, l, 4)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.ArchivedSeq != 4 {
		t.Fatalf("close did not flush: %+v", st)
	}
	if err := a.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	// Closed before it ran: Run returns at once.
	b := mustArchiver(t, l, cfg, nil)
	b.Close()
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestArchiveConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"ok", func(c *Config) {}, ""},
		{"app", func(c *Config) { c.App = ".." }, "app"},
		{"app chars", func(c *Config) { c.App = "a/b" }, "app"},
		{"mode", func(c *Config) { c.Mode = "legal-hold" }, "mode"},
		{"governance", func(c *Config) { c.Mode = "governance" }, ""},
		{"retention", func(c *Config) { c.RetentionYears = -1 }, "retention_years"},
		{"records", func(c *Config) { c.SegmentRecords = -5 }, "segment_records"},
		{"nowhere", func(c *Config) { c.LocalDir = "" }, "neither"},
		{"bucket", func(c *Config) { c.S3 = &S3Config{} }, "s3.bucket"},
		{"prefix", func(c *Config) { c.S3 = &S3Config{Bucket: "b", Prefix: "a/../b"} }, "s3.prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := localConfig(t, "/tmp/x")
			tc.edit(&c)
			err := c.setDefaults()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c := Config{App: "x", LocalDir: "d"}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.SegmentRecords != 10000 || c.SegmentInterval != time.Minute || c.Mode != "COMPLIANCE" || c.RetentionYears != 7 || c.Origin != "uapk-proxy/x" {
		t.Errorf("defaults %+v", c)
	}
	c.S3 = &S3Config{Bucket: "b", Prefix: "/audit/uapk/"}
	if c.base() != "audit/uapk/x" || c.storeID() != "s3://b/audit/uapk/x" {
		t.Errorf("base %q id %q", c.base(), c.storeID())
	}
	l := openTemp(t, ledger.Options{})
	if _, err := New(l, Config{App: "x", LocalDir: "d"}); err == nil {
		t.Error("an archiver without a key was made")
	}
}

func TestRetainUntil(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2026-01-15T14:30:00.000000000Z", "2033-01-15T14:30:00Z"},
		{"2026-01-15T14:30:00.000000001Z", "2033-01-15T14:30:01Z"}, // rounded up, never shortened
		{"2028-02-29T23:59:59.500000000Z", "2035-03-02T00:00:00Z"}, // Feb 29 + 7y is Mar 1, then rounded up
	} {
		if got := s3Time(retainUntil(tc.in, 7)); got != tc.want {
			t.Errorf("retainUntil(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestVerifyArchiveFindsTheFirstDifference tampers with a local archive in
// each way an auditor must hear about.
func TestVerifyArchiveFindsTheFirstDifference(t *testing.T) {
	seg := func(f, l uint64) string { return fmt.Sprintf("erp-agent/segments/%020d-%020d.jsonl", f, l) }
	cpk := func(l uint64) string { return fmt.Sprintf("erp-agent/checkpoints/%020d", l) }
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, s *fakeStore, l *ledger.Ledger)
		reason string
		key    string
		seq    uint64
	}{
		{"intact", func(*testing.T, *fakeStore, *ledger.Ledger) {}, "", "", 0},
		{"record edited", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			b := s.obj(seg(11, 20))
			s.set(seg(11, 20), bytes.Replace(b, []byte(`"amount":"113.00"`), []byte(`"amount":"913.00"`), 1))
		}, ReasonMismatch, seg(11, 20), 14},
		{"record dropped", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			b := s.obj(seg(1, 10))
			lines := bytes.SplitAfter(b, []byte("\n"))
			s.set(seg(1, 10), bytes.Join(slices.Delete(lines, 4, 5), nil))
		}, ReasonMismatch, seg(1, 10), 5},
		{"segment missing", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			delete(s.objs, seg(11, 20))
		}, ReasonGap, seg(21, 29), 11},
		{"overlap", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			s.set(seg(5, 12), rangeBytes(t, l, 5, 12))
		}, ReasonOverlap, seg(5, 12), 5},
		{"bad name", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			s.set("erp-agent/segments/1-10.jsonl", rangeBytes(t, l, 1, 10))
		}, ReasonBadName, "erp-agent/segments/1-10.jsonl", 0},
		{"checkpoint missing", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			delete(s.objs, cpk(20))
		}, ReasonCheckpointMissing, cpk(20), 20},
		{"checkpoint by another key", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			c, _ := checkpoint.Open(s.obj(cpk(10)), "uapk-proxy/erp-agent", testKey(1).Public().(ed25519.PublicKey))
			msg, _ := checkpoint.Sign(c, testKey(9))
			s.set(cpk(10), msg)
		}, ReasonCheckpointInvalid, cpk(10), 10},
		{"checkpoint for another head", func(t *testing.T, s *fakeStore, l *ledger.Ledger) {
			msg, _ := checkpoint.Sign(checkpoint.Checkpoint{Origin: "uapk-proxy/erp-agent", Size: 20, Hash: ledger.ZeroHash}, testKey(1))
			s.set(cpk(20), msg)
		}, ReasonCheckpointHead, cpk(20), 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore()
			l := openTemp(t, ledger.Options{})
			appendN(t, l, 25)
			cfg := localConfig(t, t.TempDir())
			a := mustArchiver(t, l, cfg, store)
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, store, l)
			cfg.setDefaults()
			rep, err := verify(context.Background(), l, &cfg, store, []ed25519.PublicKey{testKey(1).Public().(ed25519.PublicKey)})
			if err != nil {
				t.Fatal(err)
			}
			if tc.reason == "" {
				if !rep.OK || rep.ArchivedSeq != 29 || rep.Segments != 3 || rep.Checkpoints != 3 || len(rep.Anchors) != 3 {
					t.Fatalf("report %+v", rep)
				}
				return
			}
			if rep.OK || rep.Problem == nil {
				t.Fatalf("tampering not found: %+v", rep)
			}
			if p := rep.Problem; p.Reason != tc.reason || p.Key != tc.key || p.Seq != tc.seq {
				t.Fatalf("problem %+v, want %s at %s seq %d", p, tc.reason, tc.key, tc.seq)
			}
		})
	}
}

// TestVerifyArchiveAgainstAnotherChain: an archive is checked against the
// local chain, so a local chain rewritten or cut short after archiving is
// caught.
func TestVerifyArchiveAgainstAnotherChain(t *testing.T) {
	store := newFakeStore()
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 12)
	cfg := localConfig(t, t.TempDir())
	if err := mustArchiver(t, l, cfg, store).Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	keys := []ed25519.PublicKey{testKey(1).Public().(ed25519.PublicKey)}

	short := openTemp(t, ledger.Options{})
	appendN(t, short, 5)
	rep, err := verify(context.Background(), short, &cfg, store, keys)
	if err != nil || rep.OK || rep.Problem.Reason != ReasonMismatch {
		// Same entries but other times: record 1 already differs.
		t.Fatalf("other chain: %v %+v", err, rep.Problem)
	}
	if rep.Problem.Seq != 1 {
		t.Errorf("first difference at %d, want 1", rep.Problem.Seq)
	}
}

// TestVerifyArchiveLocalShorter: the archive holds records the local chain
// no longer has (a tail cut together with its head, which the local verify
// alone cannot see).
func TestVerifyArchiveLocalShorter(t *testing.T) {
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 8)
	store := newFakeStore()
	cfg := localConfig(t, t.TempDir())
	if err := mustArchiver(t, l, cfg, store).Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The same records 1-5 and nothing after, head rewritten to match.
	short := openTemp(t, ledger.Options{})
	err := short.DB().Update(func(tx *bolt.Tx) error {
		return l.Range(1, 5, func(seq uint64, raw []byte) error {
			putRecord(t, tx, seq, raw)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	rep, err := verify(context.Background(), short, &cfg, store, []ed25519.PublicKey{testKey(1).Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Problem.Reason != ReasonLocalMissing || rep.Problem.Seq != 6 {
		t.Fatalf("problem %+v", rep.Problem)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestArchiveRefusesABrokenLink: a record whose prev does not link to the
// record before it (a fork spliced into the file) is never archived.
func TestArchiveRefusesABrokenLink(t *testing.T) {
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 6)
	raw, _ := l.Get(4)
	prev, _ := memberString(raw, "prev")
	forged := bytes.Replace(raw, []byte(`"prev":"`+prev+`"`), []byte(`"prev":"`+ledger.ZeroHash+`"`), 1)
	if err := l.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(ledger.BucketRecords)).Put(seqKey(4), forged)
	}); err != nil {
		t.Fatal(err)
	}
	store := newFakeStore()
	a := mustArchiver(t, l, localConfig(t, t.TempDir()), store)
	err := a.Flush(context.Background())
	if !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "record 4") {
		t.Fatalf("flush: %v", err)
	}
	if store.puts != 0 {
		t.Errorf("%d objects written from a broken chain", store.puts)
	}
}

func TestMemberString(t *testing.T) {
	// "data" may hold the same names; the top-level member is the last.
	raw := []byte(`{"action":"","app":"a","approval_id":"","data":{"hash":"inner","x":{"prev":"inner"}},"decision":"","digest":"","hash":"H","kind":"checkpoint","policy":"","prev":"P","reason":"with \",\"prev\":\"fake","seq":3,"time":"T","v":1}`)
	for name, want := range map[string]string{"hash": "H", "prev": "P", "time": "T"} {
		if got, ok := memberString(raw, name); !ok || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestArchiveStopsWhenTheLedgerCloses(t *testing.T) {
	l := openTemp(t, ledger.Options{})
	cfg := localConfig(t, t.TempDir())
	cfg.SegmentInterval = 5 * time.Millisecond
	a := mustArchiver(t, l, cfg, nil)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	appendN(t, l, 3)
	// Under load the first seal may take only part of the three; a later
	// segment then covers the rest with the archiver's own records.
	waitFor(t, "a segment", func() bool { return a.Status().ArchivedSeq >= 3 })
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ledger.ErrClosed) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going on a closed ledger")
	}
}

// TestArchiveLogsNameTheComponentOnce: the archiver adds its store to the
// logger it is given but no component of its own, which zerolog would write
// as a second "component" key beside the caller's.
func TestArchiveLogsNameTheComponentOnce(t *testing.T) {
	var buf bytes.Buffer
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 3)
	cfg := localConfig(t, t.TempDir())
	cfg.Logger = zerolog.New(&buf).With().Str("component", "archive").Logger()
	if err := mustArchiver(t, l, cfg, nil).Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) < 2 {
		t.Fatalf("want the store check and the segment logged, got %q", buf.String())
	}
	for _, line := range lines {
		if n := bytes.Count(line, []byte(`"component":`)); n != 1 {
			t.Errorf("%d component keys in %s", n, line)
		}
		if !bytes.Contains(line, []byte(`"store":"local:archive/erp-agent"`)) {
			t.Errorf("no store in %s", line)
		}
	}
}

// TestLastIndexComma holds member's backwards walk to bytes.LastIndex on
// random records made of the bytes that matter.
func TestLastIndexComma(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	alphabet := []byte(`,"prev:hash\x`)
	for _, pat := range [][]byte{patPrev, patHash, patTime, []byte(`,`)} {
		for range 20000 {
			raw := make([]byte, rng.IntN(40))
			for i := range raw {
				raw[i] = alphabet[rng.IntN(len(alphabet))]
			}
			if rng.IntN(3) == 0 {
				at := rng.IntN(len(raw) + 1)
				raw = append(raw[:at:at], append(append([]byte{}, pat...), raw[at:]...)...)
			}
			if got, want := lastIndexComma(raw, pat), bytes.LastIndex(raw, pat); got != want {
				t.Fatalf("lastIndexComma(%q, %q) = %d, bytes.LastIndex %d", raw, pat, got, want)
			}
		}
	}
}
