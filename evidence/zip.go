package evidence

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"io"
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
// in memory up to spoolMem, then in an unlinked temporary file.
type spool struct {
	buf bytes.Buffer
	f   *os.File
	n   int64
	err error
}

const spoolMem = 8 << 20

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
		s.f = f
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.buf.Write(p)
	}
	s.n += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

func (s *spool) reader() io.Reader {
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.n)
	}
	return bytes.NewReader(s.buf.Bytes())
}

func (s *spool) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
