package upstreamauth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// maxFileBytes bounds a credential file: far more than any header value an
// ERP accepts, small enough that a wrong path (a log file) is refused.
const maxFileBytes = 64 << 10

// statEvery is how stale the file's stat may be: the hot path stats at most
// once per interval, whatever the request rate.
const statEvery = time.Second

// cleanValue turns a file's bytes into the value to send: surrounding ASCII
// whitespace (the trailing newline editors and `kubectl create secret
// --from-file` leave) trimmed, then refused if empty or if any control byte
// remains, since CR or LF would split the header and others are refused by
// servers. Bytes of 0x80 and above pass (obs-text).
func cleanValue(b []byte) (string, error) {
	start, end := 0, len(b)
	for start < end && isSpace(b[start]) {
		start++
	}
	for end > start && isSpace(b[end-1]) {
		end--
	}
	b = b[start:end]
	if len(b) == 0 {
		return "", fmt.Errorf("%w: empty", ErrInvalidValue)
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			// No offset or byte: even that much of a secret is too much.
			return "", fmt.Errorf("%w: contains a CR, LF or other control byte", ErrInvalidValue)
		}
	}
	return string(b), nil
}

func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}

// readValueFile reads and cleans path. info is the stat of the file that was
// read (through the open descriptor, so it matches the bytes even if the
// path is swapped meanwhile).
func readValueFile(path string) (string, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	if !before.Mode().IsRegular() {
		return "", nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return "", nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return "", before, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrInvalidValue, maxFileBytes)
	}
	after, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	if !sameVersion(before, after) {
		// Written in place while we read: the bytes may be torn. The next
		// check reads it again once it has settled.
		return "", nil, errChanging
	}
	v, err := cleanValue(data)
	if err != nil {
		return "", before, fmt.Errorf("%s: %w", path, err)
	}
	return v, before, nil
}

// errChanging is internal: a file that changed while it was read is neither
// accepted nor refused.
var errChanging = errors.New("file changed while being read")

// sameVersion reports whether a and b are the same file with the same
// content as far as stat can tell: same device and inode (os.SameFile), size
// and modification time. A Kubernetes Secret update swaps ..data to a new
// directory, so the resolved file is a new inode.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// fileValue is one watched credential file. The hot path is an atomic load
// and a clock read; at most one goroutine at a time stats the file, and the
// others go on with the value they have rather than wait for it.
type fileValue struct {
	path string
	what string // "value file" or "client secret file", for logs
	now  func() time.Time
	log  zerolog.Logger

	cur atomic.Pointer[fileState]

	mu      sync.Mutex  // held while checking the file; guards the fields below
	seen    os.FileInfo // the version last read, accepted or refused
	seenOK  bool        // seen is the version whose value is in use
	lastErr string      // the last failure logged, so a steady one is logged once
}

// fileState is published whole, so a reader never sees a value of one
// version with the error or check time of another.
type fileState struct {
	value   string
	checked time.Time
	err     error // why the file's current content is not in use; nil when it is
}

// newFileValue reads path once; a file that cannot be read or holds an
// invalid value is an error.
func newFileValue(path, what string, now func() time.Time, log zerolog.Logger) (*fileValue, error) {
	v, info, err := readValueFile(path)
	if errors.Is(err, errChanging) {
		v, info, err = readValueFile(path) // settled by now in all but a pathological case
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	fv := &fileValue{path: path, what: what, now: now, log: log, seen: info, seenOK: true}
	fv.cur.Store(&fileState{value: v, checked: now()})
	return fv, nil
}

// get returns the last good value, first checking the file if the last
// check is older than statEvery and nobody else is checking it.
func (f *fileValue) get() *fileState {
	st := f.cur.Load()
	now := f.now()
	if now.Sub(st.checked) < statEvery && !now.Before(st.checked) {
		return st
	}
	if !f.mu.TryLock() {
		return st
	}
	defer f.mu.Unlock()
	// Read again under the lock: a goroutine that was descheduled between
	// its first reading and here would otherwise record an old check time.
	st, now = f.cur.Load(), f.now()
	if now.Sub(st.checked) < statEvery && !now.Before(st.checked) {
		return st
	}
	st = f.check(st, now)
	f.cur.Store(st)
	return st
}

// check stats the file and re-reads it if it changed. Called with f.mu held.
func (f *fileValue) check(old *fileState, now time.Time) *fileState {
	next := &fileState{value: old.value, checked: now, err: old.err}
	info, err := os.Stat(f.path)
	if err != nil {
		next.err = f.refuse(err)
		return next
	}
	if sameVersion(f.seen, info) {
		if f.seenOK {
			// Back after a failure to stat (a broken symlink restored).
			f.lastErr, next.err = "", nil
		}
		return next
	}
	v, info, err := readValueFile(f.path)
	switch {
	case errors.Is(err, errChanging):
		return next // not settled; look again at the next check
	case err != nil:
		if info != nil {
			// Refused content: not re-read (nor logged again) until it changes.
			f.seen, f.seenOK = info, false
		}
		next.err = f.refuse(err)
		return next
	}
	f.seen, f.seenOK = info, true
	f.lastErr = ""
	next.err = nil
	if v != old.value {
		next.value = v
		f.log.Info().Str("file", f.path).Str("what", f.what).Msg("upstream credential file changed; new value in use")
	}
	return next
}

// refuse logs err once per distinct failure and returns the error Ready
// reports. The previous value stays in use.
func (f *fileValue) refuse(err error) error {
	if msg := err.Error(); msg != f.lastErr {
		f.lastErr = msg
		f.log.Warn().Str("file", f.path).Str("what", f.what).Str("error", msg).
			Msg("upstream credential file refused; previous value kept")
	}
	return fmt.Errorf("%s: %w (previous value kept)", f.what, err)
}
