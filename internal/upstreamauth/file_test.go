package upstreamauth

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newHeaderSource(t *testing.T, header, path string, clock *fakeClock, logs *logBuffer) *Source {
	t.Helper()
	s, err := New(t.Context(), Config{Header: header, ValueFile: path, Now: clock.Now, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestHeaderValueFile(t *testing.T) {
	canonical := map[string]string{"x-api-key": "X-Api-Key", "authorization": "Authorization", "X-Api-Key": "X-Api-Key", "Authorization": "Authorization"}
	tests := []struct {
		name    string
		header  string
		content string
		want    string // "" means New must refuse the file
	}{
		{"api key with newline", "x-api-key", "k3y-0123456789abcdef\n", "k3y-0123456789abcdef"},
		{"authorization with CRLF", "authorization", "Basic dWFwazpzM2NyM3Q=\r\n", "Basic dWFwazpzM2NyM3Q="},
		{"surrounding blanks", "X-Api-Key", " \t k3y-with-blanks \n\n", "k3y-with-blanks"},
		{"inner space kept", "Authorization", "Token k3y inner\n", "Token k3y inner"},
		{"obs-text kept", "X-Api-Key", "k3y-\xc3\xa9\n", "k3y-\xc3\xa9"},
		{"empty", "X-Api-Key", "", ""},
		{"blank", "X-Api-Key", " \r\n\t\n", ""},
		{"LF inside", "X-Api-Key", "k3y-first\nk3y-second\n", ""},
		{"CR inside", "X-Api-Key", "k3y-first\rk3y-second", ""},
		{"NUL inside", "X-Api-Key", "k3y-first\x00k3y-second", ""},
		{"tab inside", "X-Api-Key", "k3y-first\tk3y-second", ""},
		{"DEL inside", "X-Api-Key", "k3y-first\x7fk3y-second", ""},
		{"too large", "X-Api-Key", strings.Repeat("k", maxFileBytes+1), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "value")
			writeFile(t, path, tc.content)
			logs := &logBuffer{}
			s, err := New(t.Context(), Config{Header: tc.header, ValueFile: path, Logger: logs.logger()})
			if tc.want == "" {
				if !errors.Is(err, ErrInvalidValue) {
					t.Fatalf("New = %v, want ErrInvalidValue", err)
				}
				for _, part := range strings.FieldsFunc(tc.content, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
					if len(part) > 3 {
						assertNoSecret(t, "New's error", err.Error(), part)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			v, err := s.Value(t.Context())
			if err != nil || v != tc.want {
				t.Fatalf("Value = %q, %v; want %q", v, err, tc.want)
			}
			if s.Kind() != KindHeader {
				t.Errorf("Kind = %q", s.Kind())
			}
			if want := canonical[tc.header]; s.Header() != want {
				t.Errorf("Header = %q, want %q", s.Header(), want)
			}
			if err := s.Ready(); err != nil {
				t.Errorf("Ready = %v", err)
			}
			assertNoSecret(t, "the log", logs.String(), tc.want)
		})
	}
}

func TestValueFileMissingAtNew(t *testing.T) {
	_, err := New(t.Context(), Config{Header: "X-Api-Key", ValueFile: filepath.Join(t.TempDir(), "nope")})
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("New = %v", err)
	}
}

// TestValueFileStatCache: a rotation is seen only once the last stat is a
// second old, and then at once.
func TestValueFileStatCache(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "value")
	writeFile(t, path, "k3y-one\n")
	s := newHeaderSource(t, "X-Api-Key", path, clock, &logBuffer{})
	replaceFile(t, path, "k3y-two\n")
	clock.Add(statEvery - time.Millisecond)
	if v, _ := s.Value(t.Context()); v != "k3y-one" {
		t.Fatalf("Value within the stat interval = %q, want the cached k3y-one", v)
	}
	clock.Add(time.Millisecond)
	if v, _ := s.Value(t.Context()); v != "k3y-two" {
		t.Fatalf("Value after the stat interval = %q, want k3y-two", v)
	}
}

// rotation is one way a value file is replaced.
type rotation struct {
	name string
	// setup writes the first value and returns the path to configure and a
	// function that replaces the value.
	setup func(t *testing.T, first string) (path string, rotate func(string))
}

var rotations = []rotation{
	{"temp file and rename", func(t *testing.T, first string) (string, func(string)) {
		path := filepath.Join(t.TempDir(), "value")
		writeFile(t, path, first)
		return path, func(v string) { replaceFile(t, path, v) }
	}},
	{"kubernetes ..data symlink swap", func(t *testing.T, first string) (string, func(string)) {
		k := newK8sSecret(t, "api-key", first)
		return k.path(), func(v string) { k.update(t, v) }
	}},
}

// TestValueFileRotationUnderLoad: while goroutines call Value without
// pause, the file is rotated again and again; each new value is picked up,
// and no call ever sees anything but one of the whole values written.
func TestValueFileRotationUnderLoad(t *testing.T) {
	for _, rot := range rotations {
		t.Run(rot.name, func(t *testing.T) {
			// Values of different lengths, long enough that a torn read
			// would show.
			values := make([]string, 12)
			written := map[string]bool{}
			for i := range values {
				values[i] = "k3y-" + strings.Repeat(randHex(t, 8), 10+i*7)
				written[values[i]] = true
			}
			clock := newFakeClock()
			logs := &logBuffer{}
			path, rotate := rot.setup(t, values[0]+"\n")
			s := newHeaderSource(t, "X-Api-Key", path, clock, logs)

			var stop atomic.Bool
			var calls atomic.Int64
			var wg sync.WaitGroup
			t.Cleanup(func() { stop.Store(true); wg.Wait() })
			bad := make(chan string, 1)
			for range 16 {
				wg.Go(func() {
					for !stop.Load() {
						v, err := s.Value(t.Context())
						calls.Add(1)
						if err != nil || !written[v] {
							select {
							case bad <- v:
							default:
							}
							return
						}
					}
				})
			}
			// The deadline only stops a hang; no outcome depends on timing.
			deadline := time.Now().Add(30 * time.Second)
			for calls.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the concurrent callers never ran")
				}
				runtime.Gosched()
			}
			for _, want := range values[1:] {
				before := calls.Load()
				rotate(want + "\n")
				// The fake clock moves on until the new value shows: a
				// caller may hold the check (descheduled mid-stat) or have
				// stat'ed just before the rename and cached that.
				for {
					clock.Add(statEvery)
					if v, _ := s.Value(t.Context()); v == want {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("rotated value never picked up")
					}
					runtime.Gosched()
				}
				// Let the callers see every value for a while.
				for calls.Load() < before+100 && !time.Now().After(deadline) {
					runtime.Gosched()
				}
			}
			stop.Store(true)
			wg.Wait()
			select {
			case v := <-bad:
				t.Fatalf("Value returned %d bytes that were never a whole value", len(v))
			default:
			}
			if calls.Load() == 0 {
				t.Fatal("no concurrent calls ran")
			}
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready = %v", err)
			}
			assertNoSecret(t, "the log", logs.String(), values...)
			if n := strings.Count(logs.String(), "new value in use"); n != len(values)-1 {
				t.Errorf("%d rotations logged, want %d", n, len(values)-1)
			}
		})
	}
}

// TestValueFileBadRotation: a rotation to content that cannot be sent, or
// a file that disappears, keeps the last good value in use and makes Ready
// say why, once logged; a good rotation after it is taken up and Ready is
// nil again.
func TestValueFileBadRotation(t *testing.T) {
	bad := []struct {
		name    string
		content string // written as the new value
		remove  bool   // or the file is removed
		want    string // in Ready's error
	}{
		{"empty", "", false, "empty"},
		{"blank", "\n", false, "empty"},
		{"newline inside", "l3ak-first\nl3ak-second\n", false, "control byte"},
		{"NUL inside", "l3ak-first\x00", false, "control byte"},
		{"removed", "", true, "no such file"},
	}
	for _, rot := range rotations {
		for _, tc := range bad {
			t.Run(rot.name+"/"+tc.name, func(t *testing.T) {
				clock := newFakeClock()
				logs := &logBuffer{}
				path, rotate := rot.setup(t, "k3y-good-one\n")
				s := newHeaderSource(t, "X-Api-Key", path, clock, logs)
				if tc.remove {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				} else {
					rotate(tc.content)
				}
				for range 5 { // checked five times, logged once
					clock.Add(statEvery)
					if v, err := s.Value(t.Context()); v != "k3y-good-one" || err != nil {
						t.Fatalf("Value after a bad rotation = %q, %v; want the previous value", v, err)
					}
				}
				err := s.Ready()
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "previous value kept") {
					t.Fatalf("Ready = %v, want it to say %q and that the previous value is kept", err, tc.want)
				}
				if n := strings.Count(logs.String(), "previous value kept"); n != 1 {
					t.Errorf("refusal logged %d times, want once:\n%s", n, logs.String())
				}
				for _, secret := range []string{"k3y-good-one", "l3ak-first", "l3ak-second"} {
					assertNoSecret(t, "Ready's error", err.Error(), secret)
					assertNoSecret(t, "the log", logs.String(), secret)
				}

				if tc.remove {
					writeFile(t, path, "k3y-good-two\n")
				} else {
					rotate("k3y-good-two\n")
				}
				clock.Add(statEvery)
				if v, _ := s.Value(t.Context()); v != "k3y-good-two" {
					t.Fatalf("Value after a good rotation = %q", v)
				}
				if err := s.Ready(); err != nil {
					t.Fatalf("Ready after a good rotation = %v", err)
				}
			})
		}
	}
}

// TestReadyChecksTheFile: with no traffic, Ready alone notices a broken and
// then a repaired file.
func TestReadyChecksTheFile(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "value")
	writeFile(t, path, "k3y-one")
	s := newHeaderSource(t, "X-Api-Key", path, clock, &logBuffer{})
	replaceFile(t, path, "bad\nvalue")
	clock.Add(statEvery)
	if err := s.Ready(); !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("Ready = %v, want ErrInvalidValue", err)
	}
	replaceFile(t, path, "k3y-two")
	clock.Add(statEvery)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	if v, _ := s.Value(t.Context()); v != "k3y-two" {
		t.Fatalf("Value = %q", v)
	}
}

// TestSymlinkRestoredToSameFile: a symlink that breaks and comes back to the
// very file in use makes the file usable again without a new value.
func TestSymlinkRestoredToSameFile(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	writeFile(t, target, "k3y-one")
	link := filepath.Join(dir, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	s := newHeaderSource(t, "X-Api-Key", link, clock, &logBuffer{})
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	clock.Add(statEvery)
	if err := s.Ready(); err == nil {
		t.Fatal("Ready = nil with the link gone")
	}
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	clock.Add(statEvery)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready = %v after the link is back", err)
	}
}
