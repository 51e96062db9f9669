package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// crashImage is the files a power cut leaves: ledger.db as of its last
// synced apply and the journal's bytes.
type crashImage struct {
	db, journal []byte
	// frames are the journal's frame boundaries after the header: frame i
	// is journal[frames[i]:frames[i+1]].
	frames []int64
	recs   []Record // every record appended, in order
	// groups[i] is how many records frame i holds.
	groups []int
	// applied is ledger.db's head in the image.
	applied uint64
}

// makeCrashImage appends groups: the first applied to ledger.db, the rest
// only journaled (the applier held off), and copies the files as a crash
// would leave them. Requests open forward_pending; forward records close
// it, so the image exercises both.
func makeCrashImage(t *testing.T) crashImage {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{JournalSize: MinJournalSize})
	var img crashImage
	img.frames = append(img.frames, l.j.pos)
	add := func(es ...Entry) {
		ps := make([]*pending, len(es))
		for i, e := range es {
			p, err := prepare(e)
			if err != nil {
				t.Fatal(err)
			}
			p.res = make(chan result, 1)
			ps[i] = p
		}
		// Queued together, written together: one frame.
		if err := l.enqueue(ps...); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			r := <-p.res
			if r.err != nil {
				t.Fatal(r.err)
			}
			img.recs = append(img.recs, r.rec)
		}
		img.frames = append(img.frames, l.j.pos)
		img.groups = append(img.groups, len(es))
	}
	add(entry(0), entry(1))
	// A record with a hook goes into bbolt, not the journal: the next
	// frame starts one seq above the last one's end.
	hooked := entry(7)
	hooked.Tx = func(tx *bolt.Tx, _ *Record) error {
		_, err := tx.CreateBucketIfNotExists([]byte("test_side"))
		return err
	}
	img.recs = append(img.recs, mustAppend(t, l, hooked))
	add(forwardEntry(1, record.Forwarded))
	if err := l.applyNow(); err != nil {
		t.Fatal(err)
	}
	img.applied = l.Head().Seq
	// From here on nothing reaches ledger.db.
	l.applyMu.Lock()
	add(entry(2))
	add(forwardEntry(2, record.Forwarded), entry(3))
	add(forwardEntry(4, record.Forwarded), entry(5))
	if err := l.db.View(func(tx *bolt.Tx) error {
		var b bytes.Buffer
		_, err := tx.WriteTo(&b)
		img.db = b.Bytes()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(journalPath(path))
	if err != nil {
		t.Fatal(err)
	}
	img.journal = j
	l.applyMu.Unlock()
	return img
}

// write puts the image's files into a new directory and returns the
// ledger's path there.
func (img crashImage) write(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	if err := os.WriteFile(path, img.db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journalPath(path), img.journal, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// reopen writes db and journal into dir, replacing what a last reopen left
// there, and opens them.
func reopen(t *testing.T, dir string, db, journal []byte) (*Ledger, error) {
	t.Helper()
	path := filepath.Join(dir, "ledger.db")
	for _, p := range []string{path, journalPath(path)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journalPath(path), journal, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, Options{JournalSize: MinJournalSize})
	if err == nil {
		t.Cleanup(func() { l.Close() })
	}
	return l, err
}

// memDir is a directory in memory where the machine has /dev/shm (a
// thousand opens' syncs cost nothing there), else a temporary one.
func memDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "ledger-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// checkRecovered checks that l holds exactly want, stored as written, with
// forward_pending as those records leave it, and that it appends on top.
func checkRecovered(t *testing.T, l *Ledger, want []Record) {
	t.Helper()
	last := want[len(want)-1]
	if h := l.Head(); h.Seq != last.Seq || h.Hash != last.Hash {
		t.Fatalf("head %d %s, want %d %s", h.Seq, h.Hash, last.Seq, last.Hash)
	}
	open := map[uint64]bool{}
	for _, r := range want {
		raw, err := l.Get(r.Seq)
		if err != nil {
			t.Fatal(err)
		}
		seq, _, hash, _, err := headOf(raw)
		if err != nil || seq != r.Seq || hash != r.Hash {
			t.Fatalf("record %d reads back as %d %s (%v)", r.Seq, seq, hash, err)
		}
		switch {
		case r.Kind == record.KindRequest && r.Decision == record.Allow:
			open[r.Seq] = true
		case r.Kind == record.KindForward:
			delete(open, seqOf(r.Data["request_record"]))
		}
	}
	if _, err := l.Get(last.Seq + 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record %d after the cut: %v", last.Seq+1, err)
	}
	got, err := l.Pending()
	if err != nil {
		t.Fatal(err)
	}
	var wantOpen []uint64
	for s := range open {
		wantOpen = append(wantOpen, s)
	}
	slices.Sort(wantOpen)
	if !slices.Equal(got, wantOpen) {
		t.Fatalf("forward_pending %v, want %v", got, wantOpen)
	}
	next, err := l.Append(context.Background(), entry(9))
	if err != nil {
		t.Fatal(err)
	}
	if next.Seq != last.Seq+1 || next.Prev != last.Hash {
		t.Fatalf("next record %d prev %s, want %d prev %s", next.Seq, next.Prev, last.Seq+1, last.Hash)
	}
	mustVerify(t, l, next.Seq)
}

// TestJournalTornLastGroup is the power cut: the last group's frame reached
// the disk only in part, torn at every offset, with what lay there before
// (zeros, or stale bytes of an earlier round) after the cut, or with its
// tail written and its head not. Its records were never acknowledged (their
// fdatasync had not returned), and nothing acknowledged may be missing: the
// reopened ledger must hold exactly the groups before it, and the whole
// last group only when every byte of it is there.
func TestJournalTornLastGroup(t *testing.T) {
	img := makeCrashImage(t)
	n := len(img.frames)
	from, to := img.frames[n-2], img.frames[n-1]
	before := img.recs[:len(img.recs)-img.groups[len(img.groups)-1]]
	stale := make([]byte, to-from)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range stale {
		stale[i] = byte(rng.UintN(256))
	}
	// Stale bytes that are themselves a valid frame of an earlier round.
	earlier := img.journal[img.frames[0]:img.frames[1]]
	dir := memDir(t)
	for o := from; o <= to; o++ {
		for _, tc := range []struct {
			name  string
			after []byte // what lies at [o, to) on the disk
			head  bool   // the frame's bytes from o on made it, not those before
		}{
			{"zeros", make([]byte, to-o), false},
			{"stale", stale[o-from:], false},
			{"earlier-frame", repeatTo(earlier, int(to-o)), false},
			{"tail-only", nil, true},
		} {
			j := slices.Clone(img.journal)
			if tc.head {
				copy(j[from:o], stale[:o-from])
			} else {
				copy(j[o:to], tc.after)
			}
			l, err := reopen(t, dir, img.db, j)
			if err != nil {
				t.Fatalf("cut at %d (%s): open: %v", o, tc.name, err)
			}
			want := before
			if bytes.Equal(j[from:to], img.journal[from:to]) {
				// The bytes after the cut happen to be the frame's own
				// (zeros where it had zeros): the disk holds the whole.
				want = img.recs
			}
			t.Logf("cut at %d of %d-%d (%s)", o, from, to, tc.name)
			checkRecovered(t, l, want)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func repeatTo(b []byte, n int) []byte {
	out := make([]byte, 0, n+len(b))
	for len(out) < n {
		out = append(out, b...)
	}
	return out[:n]
}

// TestJournalReplay: a crash with records in the journal and not in
// ledger.db loses none of them, whatever part of the journal ledger.db
// already had.
func TestJournalReplay(t *testing.T) {
	img := makeCrashImage(t)
	l, err := reopen(t, t.TempDir(), img.db, img.journal)
	if err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, l, img.recs)
	if s := l.Stats(); s.Journaled != 1 {
		t.Errorf("stats %+v: the record appended after replay should be journaled", s)
	}
}

// TestJournalRefusesABrokenChain: a journal whose records do not continue
// ledger.db's chain (edited, or from another ledger) stops Open with
// ErrCorrupt rather than being applied or dropped.
func TestJournalRefusesABrokenChain(t *testing.T) {
	img := makeCrashImage(t)
	for _, tc := range []struct {
		name string
		edit func(j []byte)
	}{
		{"record edited, crc fixed", func(j []byte) {
			f := img.frames[len(img.frames)-2]
			i := bytes.Index(j[f:], []byte(`"prev":"`)) + int(f) + len(`"prev":"`)
			j[i] ^= 1 // still a hex digit: '0'<->'1', ...
			refixCRC(j, f)
		}},
		{"first journaled record not next", func(j []byte) {
			// The frame after ledger.db's head claims a later seq,
			// as the header's base does.
			binary.BigEndian.PutUint64(j[8:16], binary.BigEndian.Uint64(j[8:16])+100)
			binary.BigEndian.PutUint32(j[16:20], crc32.Checksum(j[:16], castagnoli))
			for k := 0; k+1 < len(img.frames); k++ {
				f := img.frames[k]
				binary.BigEndian.PutUint64(j[f+8:f+16], binary.BigEndian.Uint64(j[f+8:f+16])+100)
				refixCRC(j, f)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := slices.Clone(img.journal)
			tc.edit(j)
			_, err := reopen(t, t.TempDir(), img.db, j)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
		})
	}
}

// refixCRC recomputes the CRC of the frame at f.
func refixCRC(j []byte, f int64) {
	n := int64(binary.BigEndian.Uint32(j[f+4 : f+8]))
	crc := crc32.Update(crc32.Checksum(j[f:f+20], castagnoli), castagnoli, j[f+frameHeaderSize:f+frameHeaderSize+n])
	binary.BigEndian.PutUint32(j[f+20:f+24], crc)
}

// TestJournalRounds: many rounds through a small journal, with a reader
// and hook-carrying appends between them, keep every record, and a crash
// image taken mid-round replays.
func TestJournalRounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{JournalSize: MinJournalSize})
	var last Record
	for i := range 600 {
		e := entry(i)
		if i%50 == 7 {
			e.Tx = func(tx *bolt.Tx, _ *Record) error {
				b, err := tx.CreateBucketIfNotExists([]byte("test_side"))
				if err != nil {
					return err
				}
				return b.Put([]byte("n"), []byte{byte(i)})
			}
		}
		last = mustAppend(t, l, e)
		if i%97 == 0 {
			if _, err := l.Get(last.Seq); err != nil {
				t.Fatalf("get %d right after its append: %v", last.Seq, err)
			}
		}
	}
	s := l.Stats()
	if s.Journaled < 580 || s.Appends != 600 {
		t.Fatalf("stats %+v: want nearly every record journaled", s)
	}
	// 600 records of ~700 bytes do not fit 64 KiB: several rounds.
	if l.j.base < 2 {
		t.Fatalf("journal base %d: no new round was started", l.j.base)
	}
	mustVerify(t, l, last.Seq)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := openAt(t, path, Options{JournalSize: MinJournalSize})
	if h := l2.Head(); h.Seq != last.Seq || h.Hash != last.Hash {
		t.Fatalf("head after reopen %+v, want %d", h, last.Seq)
	}
}

// TestJournalBehind: an offline reader of a crashed proxy's files sees
// every acknowledged record, those still only in the journal too, through
// every reader, and is told how many wait there.
func TestJournalBehind(t *testing.T) {
	img := makeCrashImage(t)
	path := img.write(t)
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	last := img.recs[len(img.recs)-1]
	if got, want := ro.Behind(), len(img.recs)-int(img.applied); got != want {
		t.Fatalf("behind %d, want %d", got, want)
	}
	if h := ro.Head(); h.Seq != last.Seq || h.Hash != last.Hash {
		t.Fatalf("read-only head %+v, want the acknowledged %d", h, last.Seq)
	}
	raw, err := ro.Get(last.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, hash, _, _ := headOf(raw); hash != last.Hash {
		t.Fatalf("Get(%d): hash %s", last.Seq, hash)
	}
	var seen []uint64
	if err := ro.Range(img.applied, last.Seq, func(seq uint64, _ []byte) error {
		seen = append(seen, seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != int(last.Seq-img.applied+1) || seen[0] != img.applied || seen[len(seen)-1] != last.Seq {
		t.Fatalf("Range %d-%d saw %v", img.applied, last.Seq, seen)
	}
	mustVerify(t, ro, last.Seq)
	if _, err := ro.Append(context.Background(), entry(0)); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("append read-only: %v", err)
	}
	// Reading applied nothing: ledger.db is as the crash left it.
	db, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(db, img.db) {
		t.Fatal("a read-only open changed ledger.db")
	}
}

// TestLazyForwardShares: a forward record appended without waiting goes
// out with the next request's group, so one agent's request costs one sync
// and not two.
func TestLazyForwardShares(t *testing.T) {
	l := openTemp(t, Options{})
	const n = 100
	for range n {
		rec := mustAppend(t, l, entry(0))
		l.AppendAsync(forwardEntry(rec.Seq, record.Forwarded), nil)
	}
	s := l.Stats()
	// Without the delay every record is a commit of its own: 2n.
	if s.Commits > n*3/2 {
		t.Fatalf("stats %+v: %d commits for %d requests and their forward records", s, s.Commits, n)
	}
}

// TestNoJournal: JournalSize < 0 writes every group into bbolt and makes
// no journal file.
func TestNoJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{JournalSize: -1})
	appendN(t, l, 3)
	if s := l.Stats(); s.Journaled != 0 || s.JournalBytes != 0 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := os.Stat(journalPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal file: %v", err)
	}
}

// headOf reads what a stored record says of itself: its seq, prev, hash
// and time.
func headOf(raw []byte) (seq uint64, prev, hash, t string, err error) {
	var r struct {
		Seq  uint64 `json:"seq"`
		Prev string `json:"prev"`
		Hash string `json:"hash"`
		Time string `json:"time"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return 0, "", "", "", err
	}
	return r.Seq, r.Prev, r.Hash, r.Time, nil
}

// TestLoneLazyEntryIsWritten: a forward record queued with nothing after it
// wakes no writer when it is queued, so lazyKick must write it on its own
// a little after lazyDelay; one that arrives while the writer already
// waits on an earlier lazy entry goes in the same group (two commits are
// allowed: the test goroutine may lose its core for lazyDelay between the
// two calls).
func TestLoneLazyEntryIsWritten(t *testing.T) {
	l := openTemp(t, Options{})
	for round := range 3 {
		a := mustAppend(t, l, entry(0))
		b := mustAppend(t, l, entry(0))
		commits := l.Stats().Commits
		done := make(chan error, 2)
		queued := time.Now()
		l.AppendAsync(forwardEntry(a.Seq, record.Forwarded), func(_ Record, err error) { done <- err })
		l.AppendAsync(forwardEntry(b.Seq, record.Forwarded), func(_ Record, err error) { done <- err })
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: a lone forward record was never written", round)
			}
		}
		if waited := time.Since(queued); waited < lazyDelay {
			t.Fatalf("round %d: written after %s, before lazyDelay", round, waited)
		}
		if got := l.Stats().Commits - commits; got < 1 || got > 2 {
			t.Fatalf("round %d: %d commits for two lazy entries queued together", round, got)
		}
	}
}
