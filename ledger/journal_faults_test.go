package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Tests of what an attack pass on the journal found: failures whose writes
// may still have reached the disk, crafted journals, and readers racing the
// applier.

// ambiguousPut puts into bbolt the record e would have become, on top of
// bbolt's head, as a commit reported failed but whose pages and meta
// reached the disk (EIO on the meta's fdatasync) leaves it.
func ambiguousPut(t *testing.T, l *Ledger, e Entry) Record {
	t.Helper()
	if err := l.applyNow(); err != nil {
		t.Fatal(err)
	}
	var h Head
	if err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		h, err = readHead(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p, err := prepare(e)
	if err != nil {
		t.Fatal(err)
	}
	ht, _ := parseTime(h.Time)
	rec := newRecord(p.e, h, ht)
	raw, err := encodeRecord(&rec, &p.parts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.db.Update(func(tx *bolt.Tx) error {
		return applyRecords(tx, []jrec{{seq: rec.Seq, raw: raw, hash: rec.Hash, time: rec.Time, opens: true}})
	}); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestNoForkAfterAFailedCommit: the next group, journaled, chains onto the
// record a failed bbolt commit may have left, not onto the head the writer
// had in memory: for a hooked entry, and for a batch too big for the
// journal, which goes to bbolt from the journal's own path.
func TestNoForkAfterAFailedCommit(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    func() Entry
	}{
		{"hooked", func() Entry {
			e := entry(3)
			e.Tx = func(*bolt.Tx, *Record) error { return nil }
			return e
		}},
		{"too big for the journal", func() Entry {
			e := entry(3)
			e.Data["blob"] = strings.Repeat("x", 40000) // over half of a 64 KiB journal
			return e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openTemp(t, Options{JournalSize: MinJournalSize})
			appendN(t, l, 2)
			l.failCommit = func() error { return errors.New("injected: commit failed") }
			if _, err := l.Append(context.Background(), tc.e()); err == nil {
				t.Fatal("append with a failing commit succeeded")
			}
			l.failCommit = nil
			onDisk := ambiguousPut(t, l, tc.e())
			next := mustAppend(t, l, entry(4))
			if next.Seq != onDisk.Seq+1 || next.Prev != onDisk.Hash {
				t.Fatalf("next record %d prev %s, want %d prev %s (bbolt's)", next.Seq, next.Prev, onDisk.Seq+1, onDisk.Hash)
			}
			if s := l.Stats(); s.Journaled == 0 {
				t.Fatalf("stats %+v: the next record should be journaled", s)
			}
			mustVerify(t, l, next.Seq)
		})
	}
}

// TestFailedFrameNeverReadBack: a frame whose fdatasync failed may be whole
// on the disk though its callers were told it failed. If the next write is
// a bbolt commit of the same seqs and the proxy then dies, the start must
// neither apply that frame nor refuse to start: the failed frame is
// scrubbed before anything else is written, and a start that finds one
// anyway (the scrub lost with the crash) drops it.
func TestFailedFrameNeverReadBack(t *testing.T) {
	for _, scrubbed := range []bool{true, false} {
		t.Run(map[bool]string{true: "scrubbed", false: "left on the disk"}[scrubbed], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openAt(t, path, Options{JournalSize: MinJournalSize})
			appendN(t, l, 2)
			h := l.Head()
			ht, _ := parseTime(h.Time)
			var js []jrec
			for i := range 3 {
				p, err := prepare(entry(10 + i))
				if err != nil {
					t.Fatal(err)
				}
				rec := newRecord(p.e, h, ht)
				raw, err := encodeRecord(&rec, &p.parts)
				if err != nil {
					t.Fatal(err)
				}
				js = append(js, jrec{seq: rec.Seq, raw: raw, hash: rec.Hash, time: rec.Time, opens: true})
				h = Head{Seq: rec.Seq, Hash: rec.Hash, Time: rec.Time}
			}
			// What an append whose fdatasync failed after the bytes
			// reached the disk leaves.
			pos := l.j.pos
			if err := l.j.append(js); err != nil {
				t.Fatal(err)
			}
			l.j.pos, l.j.dirty = pos, scrubbed
			hooked := entry(7)
			hooked.Tx = func(*bolt.Tx, *Record) error { return nil }
			r3 := mustAppend(t, l, hooked)
			// kill -9: the files as the crash leaves them.
			var db bytes.Buffer
			if err := l.db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&db); return err }); err != nil {
				t.Fatal(err)
			}
			jb, err := os.ReadFile(journalPath(path))
			if err != nil {
				t.Fatal(err)
			}
			// Scrubbed, the failed frame is no longer a frame; left, it
			// is, and the start must see it differs from bbolt.
			frames, err := (&journal{f: mustTempFile(t, jb), size: int64(len(jb))}).read()
			if err != nil {
				t.Fatal(err)
			}
			readable := false
			for _, fr := range frames {
				readable = readable || fr[0].seq == js[0].seq
			}
			if readable == scrubbed {
				t.Fatalf("failed frame readable: %v (scrubbed %v)", readable, scrubbed)
			}
			l2, err := reopen(t, t.TempDir(), db.Bytes(), jb)
			if err != nil {
				t.Fatalf("open after the crash: %v", err)
			}
			if hd := l2.Head(); hd.Seq != r3.Seq || hd.Hash != r3.Hash {
				t.Fatalf("head %+v, want the hooked record %d", hd, r3.Seq)
			}
			mustVerify(t, l2, r3.Seq)
		})
	}
}

func mustTempFile(t *testing.T, b []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "j")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestHugeFrameCount: a frame whose CRC holds but whose count claims more
// records than its payload can hold is not a frame: reading stops there,
// without trying to make room for four billion records.
func TestHugeFrameCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{JournalSize: MinJournalSize})
	appendN(t, l, 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(journalPath(path))
	if err != nil {
		t.Fatal(err)
	}
	f := j[journalHeaderSize:]
	binary.BigEndian.PutUint32(f[0:4], frameMagic)
	binary.BigEndian.PutUint32(f[4:8], 13)
	binary.BigEndian.PutUint64(f[8:16], 2)
	binary.BigEndian.PutUint32(f[16:20], math.MaxUint32)
	clear(f[24 : 24+13])
	binary.BigEndian.PutUint32(f[20:24], crc32.Update(crc32.Checksum(f[:20], castagnoli), castagnoli, f[24:24+13]))
	if err := os.WriteFile(journalPath(path), j, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{ReadOnly: true}, {JournalSize: MinJournalSize}} {
		l2, err := Open(path, opts)
		if err != nil {
			t.Fatalf("open %+v: %v", opts, err)
		}
		if h := l2.Head(); h.Seq != 1 {
			t.Errorf("open %+v: head %d", opts, h.Seq)
		}
		l2.Close()
	}
}

// TestJournalOffReplaysACrashJournal: a start without the journal
// (JournalSize < 0) after a crash with one still applies what it holds,
// then removes it.
func TestJournalOffReplaysACrashJournal(t *testing.T) {
	img := makeCrashImage(t)
	path := img.write(t)
	l := openAt(t, path, Options{JournalSize: -1})
	checkRecovered(t, l, img.recs)
	if _, err := os.Stat(journalPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal after a start without one: %v", err)
	}
	if s := l.Stats(); s.Journaled != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestCraftedJournalRecordRefused: a journal record that continues the
// chain by seq and prev but whose hash is not its content's, whose time is
// not a time, or whose forward_pending change is not what it says, stops
// Open with ErrCorrupt; nothing is applied.
func TestCraftedJournalRecordRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    func(good []byte, last Record) []byte
		closes uint64
	}{
		{"copied hash", func(_ []byte, last Record) []byte {
			return []byte(`{"seq":3,"prev":"` + last.Hash + `","hash":"` + last.Hash + `","time":"not a time","kind":"forged"}`)
		}, 0},
		{"content edited", func(good []byte, _ Record) []byte {
			return bytes.Replace(good, []byte(`"amount":"109.00"`), []byte(`"amount":"909.00"`), 1)
		}, 0},
		{"forward_pending change not the record's", func(good []byte, _ Record) []byte { return good }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openAt(t, path, Options{JournalSize: MinJournalSize})
			recs := appendN(t, l, 2)
			p, err := prepare(entry(9))
			if err != nil {
				t.Fatal(err)
			}
			ht, _ := parseTime(recs[1].Time)
			rec := newRecord(p.e, Head{Seq: 2, Hash: recs[1].Hash, Time: recs[1].Time}, ht)
			good, err := encodeRecord(&rec, &p.parts)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			j, err := os.ReadFile(journalPath(path))
			if err != nil {
				t.Fatal(err)
			}
			raw := tc.raw(good, recs[1])
			f := j[journalHeaderSize:]
			pl := binary.BigEndian.AppendUint32(nil, uint32(len(raw)))
			pl = append(pl, raw...)
			pl = append(pl, 1) // opens: an allow request
			pl = binary.BigEndian.AppendUint64(pl, tc.closes)
			binary.BigEndian.PutUint32(f[0:4], frameMagic)
			binary.BigEndian.PutUint32(f[4:8], uint32(len(pl)))
			binary.BigEndian.PutUint64(f[8:16], 3)
			binary.BigEndian.PutUint32(f[16:20], 1)
			copy(f[frameHeaderSize:], pl)
			binary.BigEndian.PutUint32(f[20:24], crc32.Update(crc32.Checksum(f[:20], castagnoli), castagnoli, pl))
			if err := os.WriteFile(journalPath(path), j, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(path, Options{JournalSize: MinJournalSize}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read-only open: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestJournalConcurrentUse: writers (some with hooks, some async with
// callbacks that read), readers and Close at once, under -race: every
// record is readable once its append has returned.
func TestJournalConcurrentUse(t *testing.T) {
	l := openTemp(t, Options{JournalSize: MinJournalSize})
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := range 4 {
		wg.Go(func() {
			for i := range 150 {
				e := entry(i)
				if (i+w)%7 == 0 {
					e.Tx = func(tx *bolt.Tx, _ *Record) error {
						_, err := tx.CreateBucketIfNotExists([]byte("side"))
						return err
					}
				}
				if i%3 == 0 {
					l.AppendAsync(e, func(r Record, err error) {
						if err != nil {
							t.Errorf("async append: %v", err)
							return
						}
						if _, err := l.Get(r.Seq); err != nil {
							t.Errorf("callback: Get(%d): %v", r.Seq, err)
						}
					})
					continue
				}
				r, err := l.Append(ctx, e)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := l.Get(r.Seq); err != nil {
					t.Errorf("Get(%d) after Append: %v", r.Seq, err)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 50 {
				h := l.Head()
				n := 0
				if err := l.Range(1, math.MaxUint64, func(uint64, []byte) error { n++; return nil }); err != nil {
					t.Error(err)
				}
				if uint64(n) < h.Seq {
					t.Errorf("Range saw %d records after head %d", n, h.Seq)
				}
				if _, err := l.Pending(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := openAt(t, l.path, Options{})
	if h := l2.Head(); h.Seq != 600 {
		t.Fatalf("head after reopen %d, want 600", h.Seq)
	}
	mustVerify(t, l2, 600)
}

// FuzzJournalRead: whatever a frame holds (the harness gives it a valid
// header and CRC, which random bytes would almost never have), reading the
// journal and planning its replay onto an empty ledger never panics, never
// allocates beyond the file, and yields only records that continue the
// chain from its start.
func FuzzJournalRead(f *testing.F) {
	// A real frame of two records as the first seed.
	l, err := Open(filepath.Join(f.TempDir(), "ledger.db"), Options{JournalSize: MinJournalSize})
	if err != nil {
		f.Fatal(err)
	}
	p1, _ := prepare(entry(1))
	p2, _ := prepare(forwardEntry(1, "forwarded"))
	for _, p := range []*pending{p1, p2} {
		p.res = make(chan result, 1)
	}
	if err := l.enqueue(p1, p2); err != nil {
		f.Fatal(err)
	}
	<-p1.res
	<-p2.res
	frame := make([]byte, l.j.pos-journalHeaderSize)
	if _, err := l.j.f.ReadAt(frame, journalHeaderSize); err != nil {
		f.Fatal(err)
	}
	l.Close()
	payload := frame[frameHeaderSize:]
	f.Add(payload, uint64(1), uint32(2))
	f.Add(payload, uint64(1), uint32(1))
	f.Add(payload, uint64(2), uint32(2))
	f.Add(payload[:len(payload)/2], uint64(1), uint32(2))
	// One file, rewritten by each input: a file per input would cost more
	// than the read.
	file, err := os.OpenFile(filepath.Join(f.TempDir(), "journal"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	f.Fuzz(func(t *testing.T, payload []byte, first uint64, count uint32) {
		payload = payload[:min(len(payload), MinJournalSize-journalHeaderSize-frameHeaderSize)]
		img := make([]byte, MinJournalSize)
		copy(img, journalMagic)
		binary.BigEndian.PutUint64(img[8:16], 1)
		binary.BigEndian.PutUint32(img[16:20], crc32.Checksum(img[:16], castagnoli))
		fr := img[journalHeaderSize:]
		binary.BigEndian.PutUint32(fr[0:4], frameMagic)
		binary.BigEndian.PutUint32(fr[4:8], uint32(len(payload)))
		binary.BigEndian.PutUint64(fr[8:16], first)
		binary.BigEndian.PutUint32(fr[16:20], count)
		copy(fr[frameHeaderSize:], payload)
		binary.BigEndian.PutUint32(fr[20:24], crc32.Update(crc32.Checksum(fr[:20], castagnoli), castagnoli, payload))
		if _, err := file.WriteAt(img, 0); err != nil {
			t.Fatal(err)
		}
		j := &journal{f: file, size: int64(len(img))}
		frames, err := j.read()
		if err != nil {
			t.Fatal(err)
		}
		todo, h, err := replayPlan(frames, Head{Hash: ZeroHash}, func(uint64) []byte { return nil }, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("replay plan: %v, want ErrCorrupt", err)
			}
			return
		}
		prev := Head{Hash: ZeroHash}
		for _, r := range todo {
			if r.seq != prev.Seq+1 {
				t.Fatalf("record %d after %d", r.seq, prev.Seq)
			}
			if sum, err := hashStored(r.raw, prev.Hash); err != nil || sum != r.hash {
				t.Fatalf("record %d: hash %s, computed %s (%v)", r.seq, r.hash, sum, err)
			}
			prev = Head{Seq: r.seq, Hash: r.hash, Time: r.time}
		}
		if h != prev {
			t.Fatalf("plan head %+v, last record %+v", h, prev)
		}
	})
}
