package evidence

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"time"
)

// compressLevel trades export time for size; flate's output is a pure
// function of its input and level, so any fixed level keeps bundles
// deterministic.
const compressLevel = 5

// zipWriter writes entries with fixed metadata: Deflate at compressLevel,
// mode 0644, the same modification time on every entry. Together with the
// sorted order and deterministic contents that makes the same range give
// the same bytes.
type zipWriter struct {
	zw  *zip.Writer
	mod time.Time
}

func newZipWriter(w io.Writer, mod time.Time) *zipWriter {
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, compressLevel)
	})
	return &zipWriter{zw: zw, mod: mod}
}

func (z *zipWriter) create(name string) (io.Writer, error) {
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: z.mod}
	h.SetMode(0o644)
	return z.zw.CreateHeader(h)
}

func (z *zipWriter) close() error { return z.zw.Close() }

// zipTime is the fixed time of every entry: the range's last record time to
// the second (ZIP keeps no finer), never before 1980 (DOS time starts there).
func zipTime(recordTime string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, recordTime)
	floor := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	if err != nil || t.Before(floor) {
		return floor
	}
	return t.UTC().Truncate(time.Second)
}

// spool holds a file that may be large (approvals.json of a long range):
// in memory up to spoolMem, then in an unlinked temporary file, written
// through a buffer (the bundle verify spools one 32-byte hash a record: a
// write(2) each cost its sequential walk 0.7 s of CPU in a million).
type spool struct {
	buf bytes.Buffer
	f   *os.File
	w   *bufio.Writer // over f
	n   int64
	err error
}

const (
	spoolMem    = 8 << 20
	spoolBuffer = 256 << 10
)

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && s.buf.Len()+len(p) > spoolMem {
		f, err := os.CreateTemp("", "uapk-evidence-*.json")
		if err != nil {
			s.err = err
			return 0, err
		}
		_ = os.Remove(f.Name()) // Unix: the open file lives on, and vanishes with us
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			f.Close()
			s.err = err
			return 0, err
		}
		s.buf = bytes.Buffer{}
		s.f, s.w = f, bufio.NewWriterSize(f, spoolBuffer)
	}
	var n int
	var err error
	if s.w != nil {
		n, err = s.w.Write(p)
	} else {
		n, err = s.buf.Write(p)
	}
	s.n += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// flush puts what the buffer holds into the file, so that it can be read.
func (s *spool) flush() error {
	if s.err == nil && s.w != nil {
		s.err = s.w.Flush()
	}
	return s.err
}

// reader reads back everything written; a failed write or flush is its
// error.
func (s *spool) reader() io.Reader {
	if err := s.flush(); err != nil {
		return failedReader{err}
	}
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.n)
	}
	return bytes.NewReader(s.buf.Bytes())
}

// failedReader is a reader whose every Read fails with err.
type failedReader struct{ err error }

func (r failedReader) Read([]byte) (int, error) { return 0, r.err }

// readAt reads len(p) bytes at off of what was written.
func (s *spool) readAt(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > s.n {
		return io.ErrUnexpectedEOF
	}
	if err := s.flush(); err != nil {
		return err
	}
	if s.f != nil {
		_, err := s.f.ReadAt(p, off)
		return err
	}
	copy(p, s.buf.Bytes()[off:])
	return nil
}

func (s *spool) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f, s.w = nil, nil
	return err
}

// deflated is a ZIP entry's data compressed ahead of time, while Prepare
// reads it, on a goroutine of its own: the same compressor at the same
// level over the same bytes as zipWriter.create would use, so the entry
// comes out byte for byte the same (TestDeflatedEntryIsCreatesEntry), and
// Write need not read the range a second time. The compressed bytes go to
// a spool; their SHA-256 is taken on the way in and checked on the way out.
type deflated struct {
	data  spool
	crc   hash.Hash32
	size  int64 // uncompressed
	sum   []byte
	in    chan []byte
	free  chan []byte
	done  chan error
	buf   []byte
	ended bool
}

const deflateChunk = 256 << 10

func newDeflated() *deflated {
	d := &deflated{crc: crc32.NewIEEE(), in: make(chan []byte, 4), free: make(chan []byte, 6), done: make(chan error, 1)}
	for range 6 {
		d.free <- make([]byte, 0, deflateChunk)
	}
	d.buf = <-d.free
	go d.run()
	return d
}

func (d *deflated) run() {
	h := sha256.New()
	fw, err := flate.NewWriter(io.MultiWriter(&d.data, h), compressLevel)
	for b := range d.in {
		if err == nil {
			d.crc.Write(b)
			_, err = fw.Write(b)
		}
		d.free <- b[:0]
	}
	if err == nil {
		err = fw.Close()
	}
	d.sum = h.Sum(nil)
	d.done <- err
}

// Write queues p; errors come from end.
func (d *deflated) Write(p []byte) {
	d.size += int64(len(p))
	for len(p) > 0 {
		n := copy(d.buf[len(d.buf):cap(d.buf)], p)
		d.buf, p = d.buf[:len(d.buf)+n], p[n:]
		if len(d.buf) == cap(d.buf) {
			d.in <- d.buf
			d.buf = <-d.free
		}
	}
}

// end compresses what is left and waits for it. It is safe to call twice;
// call it (or Close) on every path, so the goroutine ends.
func (d *deflated) end() error {
	if d.ended {
		return nil
	}
	d.ended = true
	if len(d.buf) > 0 {
		d.in <- d.buf
	}
	close(d.in)
	return <-d.done
}

// Close ends the compression and releases the spool.
func (d *deflated) Close() error {
	d.end()
	return d.data.Close()
}

// fits reports whether the entry needs no ZIP64 sizes: archive/zip decides
// those while it writes an entry it compresses itself, so only entries
// below 4 GiB are copied in precompressed (see raw).
func (d *deflated) fits() bool {
	return d.size < math.MaxUint32-1 && d.data.n < math.MaxUint32-1
}

// raw writes d as entry name, with the headers create would give it.
func (z *zipWriter) raw(name string, d *deflated) error {
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: z.mod}
	h.SetMode(0o644)
	// What CreateHeader sets, and its fileWriter once the data is in.
	h.Flags |= 0x8 // sizes in a data descriptor after the data
	h.CreatorVersion = h.CreatorVersion&0xff00 | 20
	h.ReaderVersion = 20
	h.ModifiedDate, h.ModifiedTime = msDosTime(z.mod)
	var ext [9]byte // extended timestamp: ID 0x5455, size 5, flags 1, mtime
	binary.LittleEndian.PutUint16(ext[0:], 0x5455)
	binary.LittleEndian.PutUint16(ext[2:], 5)
	ext[4] = 1
	binary.LittleEndian.PutUint32(ext[5:], uint32(z.mod.Unix()))
	h.Extra = ext[:]
	h.CRC32 = d.crc.Sum32()
	h.CompressedSize64, h.UncompressedSize64 = uint64(d.data.n), uint64(d.size)
	w, err := z.zw.CreateRaw(h)
	if err != nil {
		return err
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, sum), d.data.reader()); err != nil {
		return err
	}
	if !bytes.Equal(sum.Sum(nil), d.sum) {
		return fmt.Errorf("%w: the compressed %s changed in its temporary file", ErrChanged, name)
	}
	return nil
}

// msDosTime is archive/zip's timeToMsDosTime: the date and time fields of
// a ZIP header.
func msDosTime(t time.Time) (fDate, fTime uint16) {
	fDate = uint16(t.Day() + int(t.Month())<<5 + (t.Year()-1980)<<9)
	fTime = uint16(t.Second()/2 + t.Minute()<<5 + t.Hour()<<11)
	return
}
