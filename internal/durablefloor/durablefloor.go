// Package durablefloor is the least a proxy can do to make each request
// durable before forwarding it, used by the benchmarks as a second
// baseline beside a plain proxy: one writer appends whatever queued while
// its last fdatasync ran to a file whose blocks were all written
// beforehand, then fdatasyncs it once for the whole group, as the ledger's
// journal does. It decides nothing, hashes nothing, writes no second
// record and never reads its file back, so what it costs on a machine
// (against a plain proxy, in the same run) is the limit any audited proxy
// there is held to.
package durablefloor

import (
	"errors"
	"os"
	"sync"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
)

// FileSize bounds the file; a group that would run past its end starts
// again at the beginning.
const FileSize = 64 << 20

// ErrClosed is Write's error after Close.
var ErrClosed = errors.New("durablefloor: closed")

// Writer group-commits writes to one file.
type Writer struct {
	f    *os.File
	pos  int64 // the writer goroutine's
	wake chan struct{}
	done chan struct{}

	mu     sync.Mutex
	queue  []item
	closed bool
}

type item struct {
	b    []byte
	done chan error
}

// New makes path (FileSize bytes, written and synced) and starts its
// writer.
func New(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(make([]byte, FileSize), 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	w := &Writer{f: f, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w, nil
}

// Write returns once b is on the disk, or why it is not.
func (w *Writer) Write(b []byte) error {
	it := item{b: b, done: make(chan error, 1)}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return <-it.done
}

// Close writes what is queued, stops the writer and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	return w.f.Close()
}

func (w *Writer) run() {
	defer close(w.done)
	var buf []byte
	for range w.wake {
		w.mu.Lock()
		group, closed := w.queue, w.closed
		w.queue = nil
		w.mu.Unlock()
		if len(group) > 0 {
			buf = buf[:0]
			for _, it := range group {
				buf = append(buf, it.b...)
			}
			if w.pos+int64(len(buf)) > FileSize {
				w.pos = 0
			}
			_, err := w.f.WriteAt(buf, w.pos)
			if err == nil {
				err = fsutil.Fdatasync(w.f)
			}
			w.pos += int64(len(buf))
			for _, it := range group {
				it.done <- err
			}
		}
		if closed {
			return
		}
	}
}
