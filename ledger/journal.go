package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
)

// The journal (DATA/ledger.db-journal) is where a group of records becomes
// durable: one write into a file whose every block was written and synced
// when it was made, then one fdatasync, which on such a file flushes the data
// and no metadata. bbolt's own commit costs two syncs (pages, then meta) and
// more when the file grows, so the writer appends hook-free records here and
// a second goroutine applies them to bbolt in large batches (applyLoop).
// bbolt stays the store: every reader sees a record only once it is in
// bbolt, and Open applies whatever the journal holds beyond bbolt's head
// before anything else runs.
//
// Layout: a 4096-byte header, then frames back to back.
//
//	header: "UAPKJNL1" | base seq u64 | crc32c of the 16 bytes before it
//	frame:  magic u32 | payload length u32 | first seq u64 | count u32 |
//	        crc32c u32 of the 20 header bytes before it and the payload
//	payload, per record: length u32 | stored record | opens u8 | closes u64
//
// All integers are big-endian. A frame is valid only if its magic, length
// and CRC hold, its first seq is at least the seq expected next (base for
// the first frame), and its count records fill its payload exactly;
// reading stops at the first frame that is not. A frame may start above the
// seq expected: the records between went into bbolt in a commit of their
// own (they had Tx hooks), synced before the frame was written, and Open
// refuses a journal whose gap bbolt does not cover. When the journal is full, the writer waits
// until bbolt holds every record in it (synced), then writes a new header
// whose base is the next seq, syncs it, and starts again after the header:
// frames left from the last round start below base and so end the read.

const (
	journalMagic      = "UAPKJNL1"
	journalHeaderSize = 4096
	frameMagic        = 0x4a46524d // "JFRM"
	frameHeaderSize   = 24
	recordTrailer     = 1 + 8 // opens, closes

	// DefaultJournalSize is the journal's size when Options.JournalSize is
	// not set: about 8,000 records of 1 KiB between two rounds.
	DefaultJournalSize = 8 << 20
	// MinJournalSize is the smallest journal Open makes.
	MinJournalSize = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// jrec is a record durable in the journal: what applying it to bbolt
// needs.
type jrec struct {
	seq    uint64
	raw    []byte // the stored record
	hash   string
	time   string
	opens  bool
	closes uint64
}

type journal struct {
	f    *os.File
	path string
	size int64
	base uint64 // the seq the first frame must start at
	pos  int64  // where the next frame goes
	buf  []byte // the frame being built, reused
	// dirty: the last append failed, and its frame may be on the disk
	// whole. Until scrub has zeroed its header, nothing else may be
	// written: a later bbolt commit of the same seqs would make that
	// stale frame look like a fork at the next Open.
	dirty bool
}

// journalPath is where the journal of the ledger file path lives.
func journalPath(path string) string { return path + "-journal" }

// openJournal opens the journal at path, making it (size bytes, every block
// written and synced) if it does not exist. It reads nothing: see recover.
func openJournal(path string, size int64) (*journal, error) {
	size = max(size, MinJournalSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return createJournal(path, size)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if st.Size() < MinJournalSize {
		// Cut short while being made: nothing in it was ever acknowledged.
		_ = f.Close()
		return createJournal(path, size)
	}
	return &journal{f: f, path: path, size: st.Size(), pos: journalHeaderSize}, nil
}

// createJournal writes a journal of size zero bytes under a temporary name,
// syncs it and renames it into place, so that a journal that exists is
// always whole: overwriting its blocks later never allocates.
func createJournal(path string, size int64) (*journal, error) {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*journal, error) {
		_ = f.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zero)) {
		n := min(int64(len(zero)), size-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return fail(fmt.Errorf("make journal: %w", err))
		}
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("make journal: %w", err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("make journal: %w", err))
	}
	if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
		return fail(fmt.Errorf("make journal: %w", err))
	}
	return &journal{f: f, path: path, size: size, pos: journalHeaderSize}, nil
}

// read returns the records of every valid frame, frame by frame, in order,
// and leaves pos after the last one. An all-zero header is a journal made
// and never used. A damaged header does not hide what follows it: the
// frames are read with no base, and Open's checks against bbolt decide.
func (j *journal) read() ([][]jrec, error) {
	j.pos = journalHeaderSize
	hdr := make([]byte, 20)
	if _, err := j.f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("read journal header: %w", err)
	}
	switch {
	case string(hdr[:8]) == journalMagic && crc32.Checksum(hdr[:16], castagnoli) == binary.BigEndian.Uint32(hdr[16:20]):
		j.base = binary.BigEndian.Uint64(hdr[8:16])
	case bytes.Equal(hdr, make([]byte, len(hdr))):
		return nil, nil
	default:
		j.base = 0
	}
	var out [][]jrec
	next := j.base
	fh := make([]byte, frameHeaderSize)
	for j.pos+frameHeaderSize <= j.size {
		if _, err := j.f.ReadAt(fh, j.pos); err != nil {
			return nil, fmt.Errorf("read journal at %d: %w", j.pos, err)
		}
		n := int64(binary.BigEndian.Uint32(fh[4:8]))
		first := binary.BigEndian.Uint64(fh[8:16])
		count := binary.BigEndian.Uint32(fh[16:20])
		if binary.BigEndian.Uint32(fh[0:4]) != frameMagic || first < next || count == 0 ||
			n > j.size-j.pos-frameHeaderSize || int64(count)*(4+recordTrailer) > n {
			break
		}
		payload := make([]byte, n)
		if _, err := j.f.ReadAt(payload, j.pos+frameHeaderSize); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read journal at %d: %w", j.pos, err)
		}
		crc := crc32.Update(crc32.Checksum(fh[:20], castagnoli), castagnoli, payload)
		if crc != binary.BigEndian.Uint32(fh[20:24]) {
			break
		}
		recs, ok := parseFrame(payload, first, count)
		if !ok {
			break
		}
		out = append(out, recs)
		next = first + uint64(count)
		j.pos += frameHeaderSize + n
	}
	return out, nil
}

// parseFrame splits a frame's payload into its count records; ok is false
// unless they fill it exactly.
func parseFrame(p []byte, first uint64, count uint32) ([]jrec, bool) {
	out := make([]jrec, 0, count)
	for i := range uint64(count) {
		if len(p) < 4 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint32(p))
		p = p[4:]
		if n > len(p) || len(p)-n < recordTrailer {
			return nil, false
		}
		r := jrec{seq: first + i, raw: p[:n:n], opens: p[n] == 1, closes: binary.BigEndian.Uint64(p[n+1:])}
		if p[n] > 1 {
			return nil, false
		}
		out = append(out, r)
		p = p[n+recordTrailer:]
	}
	return out, len(p) == 0
}

// frameSize is what a frame of records of these stored sizes takes.
func frameSize(raws int, records int) int64 {
	return int64(frameHeaderSize + raws + records*(4+recordTrailer))
}

// fits reports whether a frame of n bytes fits after pos.
func (j *journal) fits(n int64) bool { return j.pos+n <= j.size }

// capacity is the largest frame a fresh round can take.
func (j *journal) capacity() int64 { return j.size - journalHeaderSize }

// append writes one frame of recs and syncs it. On error pos stays where it
// was, so the next frame overwrites whatever reached the disk.
func (j *journal) append(recs []jrec) error {
	b := j.buf[:0]
	b = append(b, make([]byte, frameHeaderSize)...)
	for _, r := range recs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.raw)))
		b = append(b, r.raw...)
		if r.opens {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.BigEndian.AppendUint64(b, r.closes)
	}
	binary.BigEndian.PutUint32(b[0:4], frameMagic)
	binary.BigEndian.PutUint32(b[4:8], uint32(len(b)-frameHeaderSize))
	binary.BigEndian.PutUint64(b[8:16], recs[0].seq)
	binary.BigEndian.PutUint32(b[16:20], uint32(len(recs)))
	crc := crc32.Update(crc32.Checksum(b[:20], castagnoli), castagnoli, b[frameHeaderSize:])
	binary.BigEndian.PutUint32(b[20:24], crc)
	if cap(b) <= 4<<20 {
		j.buf = b
	}
	if !j.fits(int64(len(b))) {
		return fmt.Errorf("journal frame of %d bytes does not fit", len(b))
	}
	if err := j.scrub(); err != nil {
		return err
	}
	j.dirty = true
	if _, err := j.f.WriteAt(b, j.pos); err != nil {
		return err
	}
	if err := fsutil.Fdatasync(j.f); err != nil {
		return err
	}
	j.pos += int64(len(b))
	j.dirty = false
	return nil
}

// scrub, after a failed append, zeroes the header of the frame it may have
// left at pos and syncs that, so that the frame can never be read back.
func (j *journal) scrub() error {
	if !j.dirty {
		return nil
	}
	if _, err := j.f.WriteAt(make([]byte, frameHeaderSize), j.pos); err != nil {
		return fmt.Errorf("scrub failed journal frame: %w", err)
	}
	if err := fsutil.Fdatasync(j.f); err != nil {
		return fmt.Errorf("scrub failed journal frame: %w", err)
	}
	j.dirty = false
	return nil
}

// reset starts a new round whose first frame holds seq base. The caller
// must have made every record of the last round durable in bbolt.
func (j *journal) reset(base uint64) error {
	if err := j.scrub(); err != nil {
		return err
	}
	hdr := make([]byte, 20)
	copy(hdr, journalMagic)
	binary.BigEndian.PutUint64(hdr[8:16], base)
	binary.BigEndian.PutUint32(hdr[16:20], crc32.Checksum(hdr[:16], castagnoli))
	if _, err := j.f.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := fsutil.Fdatasync(j.f); err != nil {
		return err
	}
	j.base, j.pos = base, journalHeaderSize
	return nil
}

func (j *journal) close() error { return j.f.Close() }
