package logbuf

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// sink records each write it gets, as a file would take it.
type sink struct {
	mu     sync.Mutex
	writes []string
	fail   error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(p))
	if s.fail != nil {
		return 0, s.fail
	}
	return len(p), nil
}

func (s *sink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

// hour is a flush period no test waits for: what they see comes from
// Flush, Close, the size bound or an error line.
const hour = time.Hour

func TestLinesWaitUntilFlush(t *testing.T) {
	out := &sink{}
	w := New(out, hour, 0)
	defer w.Close()
	log := zerolog.New(w)
	log.Info().Int("n", 1).Msg("decision")
	log.Warn().Int("n", 2).Msg("decision")
	if n := out.count(); n != 0 {
		t.Fatalf("%d writes before Flush, want none: %q", n, out.text())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := `{"level":"info","n":1,"message":"decision"}` + "\n" + `{"level":"warn","n":2,"message":"decision"}` + "\n"
	if out.count() != 1 || out.text() != want {
		t.Fatalf("after Flush: %d writes %q, want one %q", out.count(), out.text(), want)
	}
}

// An error line goes out at once, after every line buffered before it.
func TestErrorLineWritesOutAtOnce(t *testing.T) {
	for _, lvl := range []zerolog.Level{zerolog.ErrorLevel, zerolog.FatalLevel, zerolog.PanicLevel} {
		t.Run(lvl.String(), func(t *testing.T) {
			out := &sink{}
			w := New(out, hour, 0)
			defer w.Close()
			log := zerolog.New(w)
			log.Info().Msg("first")
			log.WithLevel(lvl).Msg("bad")
			want := `{"level":"info","message":"first"}` + "\n" + `{"level":"` + lvl.String() + `","message":"bad"}` + "\n"
			if got := out.text(); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

func TestNoLevelAndBelowErrorAreBuffered(t *testing.T) {
	out := &sink{}
	w := New(out, hour, 0)
	defer w.Close()
	log := zerolog.New(w)
	log.Log().Msg("plain")
	log.Debug().Msg("d")
	log.Warn().Msg("w")
	if _, err := w.Write([]byte("raw\n")); err != nil {
		t.Fatal(err)
	}
	if n := out.count(); n != 0 {
		t.Fatalf("%d writes, want none: %q", n, out.text())
	}
}

func TestSizeBoundWritesOut(t *testing.T) {
	out := &sink{}
	w := New(out, hour, 100)
	defer w.Close()
	line := []byte(strings.Repeat("x", 39) + "\n")
	for range 2 {
		w.Write(line)
	}
	if out.count() != 0 {
		t.Fatalf("80 bytes written out under a 100-byte bound")
	}
	w.Write(line)
	if got := out.text(); got != strings.Repeat(string(line), 3) {
		t.Fatalf("after 120 bytes: %q", got)
	}
}

func TestCloseWritesOutAndPassesThrough(t *testing.T) {
	out := &sink{}
	w := New(out, hour, 0)
	w.Write([]byte("a\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.text(); got != "a\n" {
		t.Fatalf("after Close: %q", got)
	}
	w.Write([]byte("late\n"))
	if got := out.text(); got != "a\nlate\n" {
		t.Fatalf("a line after Close: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// The period writes out a line nobody flushes.
func TestPeriodWritesOut(t *testing.T) {
	out := &sink{}
	w := New(out, 5*time.Millisecond, 0)
	defer w.Close()
	for round := range 3 {
		w.Write([]byte("line\n"))
		deadline := time.Now().Add(30 * time.Second)
		for out.count() <= round {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the period never wrote the line out", round)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A failing out drops what it could not take (the buffer stays bounded)
// and says so to the line that asked for the write.
func TestWriteErrorIsReturnedAndBufferBounded(t *testing.T) {
	out := &sink{fail: errors.New("disk full")}
	w := New(out, hour, 10)
	defer w.Close()
	if _, err := w.Write([]byte("0123456789ab\n")); err == nil {
		t.Fatal("no error from a failing out")
	}
	out.mu.Lock()
	out.fail = nil
	out.mu.Unlock()
	w.Write([]byte("next\n"))
	w.Flush()
	if got := out.text(); got != "0123456789ab\nnext\n" {
		t.Fatalf("got %q", got)
	}
}

// Lines written from many goroutines reach out whole.
func TestConcurrentLinesStayWhole(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	w := New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) }), time.Millisecond, 512)
	log := zerolog.New(w)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				log.Info().Int("g", g).Int("i", i).Str("pad", strings.Repeat("p", i%50)).Msg("decision")
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"level":"info","g":`) || !strings.HasSuffix(l, `"message":"decision"}`) {
			t.Fatalf("torn line %q", l)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// shortWriter takes only the first n bytes of its first write, then fails
// it, as a file does when the disk fills mid-write; later writes go whole.
type shortWriter struct {
	bytes.Buffer
	n     int
	short bool
}

func (s *shortWriter) Write(p []byte) (int, error) {
	if !s.short {
		s.short = true
		s.Buffer.Write(p[:s.n])
		return s.n, errors.New("no space left on device")
	}
	return s.Buffer.Write(p)
}

// TestShortWriteEndsItsLine: after a write that got out half a line, the
// next line starts on a line of its own, so a reader of the log sees one
// broken line, not two lines run together.
func TestShortWriteEndsItsLine(t *testing.T) {
	out := &shortWriter{n: 5}
	w := New(out, hour, 1<<10)
	defer w.Close()
	w.Write([]byte(`{"a":1}` + "\n" + `{"b":2}` + "\n"))
	if err := w.Flush(); err == nil {
		t.Fatal("no error from a short write")
	}
	w.Write([]byte(`{"c":3}` + "\n"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), `{"a":`+"\n"+`{"c":3}`+"\n"; got != want {
		t.Fatalf("log %q, want %q", got, want)
	}
}
