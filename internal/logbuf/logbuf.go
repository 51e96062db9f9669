// Package logbuf buffers a server's log lines so that a busy proxy writes
// them a few times a second in large writes, not with one write(2) per
// decision line.
//
// # What is never lost
//
// A line of level error or above is written out at once, with every line
// before it. Close writes out what is buffered; the serve command closes
// the writer when it stops, SIGTERM included, so a clean stop loses no
// line. Lines wait at most the flush period otherwise; only a process
// killed outright (SIGKILL, a crash) loses that last period's lines, and
// the ledger, written before any request is let through, still holds
// every decision.
package logbuf

import (
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of New.
const (
	// DefaultEvery is how long a line may wait in the buffer.
	DefaultEvery = 100 * time.Millisecond
	// DefaultSize is how many bytes are buffered before they are written
	// out, whatever the time.
	DefaultSize = 64 << 10
)

// Writer is a zerolog.LevelWriter that buffers lines in front of out.
// Safe for concurrent use; lines reach out whole and in order.
type Writer struct {
	mu     sync.Mutex
	out    io.Writer
	buf    []byte
	size   int
	closed bool

	every time.Duration
	kick  chan struct{} // a line went into an empty buffer
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// New starts a Writer that writes out its buffer every period (0:
// DefaultEvery) and whenever it holds size bytes (0: DefaultSize). Close
// it to stop its one goroutine.
func New(out io.Writer, every time.Duration, size int) *Writer {
	if every <= 0 {
		every = DefaultEvery
	}
	if size <= 0 {
		size = DefaultSize
	}
	w := &Writer{out: out, size: size, every: every, buf: make([]byte, 0, size),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// Write buffers p, a line without a level.
func (w *Writer) Write(p []byte) (int, error) { return w.WriteLevel(zerolog.NoLevel, p) }

// WriteLevel buffers p, or writes it out at once with all that waits
// before it when its level is error or above, or when the Writer is
// closed.
func (w *Writer) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.out.Write(p)
	}
	empty := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	if l >= zerolog.ErrorLevel && l < zerolog.NoLevel || len(w.buf) >= w.size {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if empty {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Flush writes out what is buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.out.Write(w.buf)
	if err != nil && n > 0 && n < len(w.buf) && w.buf[n-1] != '\n' {
		// Half a line went out: end it, so the next line starts on a
		// line of its own instead of joining it.
		_, _ = w.out.Write([]byte{'\n'})
	}
	// Written or not, the lines are gone: a log that cannot be written
	// must not grow without bound.
	if cap(w.buf) > 4*w.size {
		w.buf = make([]byte, 0, w.size)
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

// Close writes out what is buffered and stops the flushing goroutine;
// lines written after Close go straight to out. Idempotent.
func (w *Writer) Close() error {
	w.once.Do(func() { close(w.quit) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return w.flushLocked()
}

// run writes out the buffer one period after a line went into it empty:
// an idle server wakes for nothing.
func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTimer(w.every)
	t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-w.kick:
		}
		t.Reset(w.every)
		select {
		case <-w.quit:
			t.Stop()
			return
		case <-t.C:
		}
		_ = w.Flush()
	}
}
