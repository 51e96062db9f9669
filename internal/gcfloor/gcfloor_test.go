package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{6 * mib, 32 * mib, 533},   // a busy door: 4 MiB live, 2 MiB of stacks and globals
		{32 * mib, 32 * mib, 100},  // from here on, GOGC=100's doubling is more room
		{300 * mib, 32 * mib, 100}, // thousands of held requests: as before
		{1 * mib, 32 * mib, 800},   // the least goal, 4 MiB at 100, is then 32 MiB
		{0, 32 * mib, 800},
		{3 * mib, 0, 100},
	} {
		if got := Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.floor, got, c.want)
		}
	}
}

func TestMoves(t *testing.T) {
	for _, c := range []struct {
		old  int64
		p    int
		want bool
	}{
		{0, 800, true},    // the first
		{800, 780, false}, // a wobble
		{800, 600, true},
		{105, 100, true}, // just under the floor, then far past it: exactly 100
		{100, 100, false},
		{100, 104, false},
		{100, 200, true},
	} {
		if got := moves(c.old, c.p); got != c.want {
			t.Errorf("moves(%d, %d) = %v, want %v", c.old, c.p, got, c.want)
		}
	}
}

// gcPercent reads GOGC's current value without changing it.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

var sink []byte

// churn allocates n bytes of garbage in 8 KiB pieces, as requests do, and
// returns how many collections ran meanwhile.
func churn(n int) uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.NumGC
	for range n / 8192 {
		sink = make([]byte, 8192)
	}
	runtime.ReadMemStats(&ms)
	return ms.NumGC - before
}

// waitFor polls cond for up to 10 s: the tuner runs after a collection, on
// the cleanup goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (GOGC %d, tuner %d)", what, gcPercent(), current())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFewerCollections: with a small live heap the tuner raises GOGC, the
// same garbage then costs a fraction of the collections, a large live heap
// brings GOGC=100 back (no more memory than before), and stop restores
// what was set before Start.
func TestFewerCollections(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	runtime.GC()
	plain := churn(128 << 20)

	stop, ok := Start(32 << 20)
	if !ok {
		t.Fatal("Start refused with GOGC and GOMEMLIMIT unset")
	}
	defer stop()
	if _, again := Start(32 << 20); again {
		t.Fatal("a second Start while one runs")
	}
	if p := gcPercent(); p <= 100 || p != current() {
		t.Fatalf("GOGC %d after Start (tuner %d), want above 100", p, current())
	}
	// The room the runtime now gives: about the floor, not more.
	runtime.GC()
	time.Sleep(20 * time.Millisecond) // the tuner's cleanup after that collection
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if room := int64(s[0].Value.Uint64()) - int64(s[1].Value.Uint64()); room < 28<<20 || room > 40<<20 {
		t.Errorf("heap goal %d, live %d: %d bytes of room, want about 32 MiB", s[0].Value.Uint64(), s[1].Value.Uint64(), room)
	}
	tuned := churn(128 << 20)
	t.Logf("collections for 128 MiB of 8 KiB garbage: %d plain, %d with a 32 MiB floor", plain, tuned)
	if tuned*3 > plain {
		t.Errorf("%d collections with the floor, %d without: want at most a third", tuned, plain)
	}

	// A live heap past the floor: GOGC=100 again.
	big := make([][]byte, 96)
	for i := range big {
		big[i] = make([]byte, 1<<20)
	}
	waitFor(t, "GOGC 100 with 96 MiB live", func() bool { return gcPercent() == 100 })
	runtime.KeepAlive(big)
	big = nil
	waitFor(t, "GOGC raised again once the heap is small", func() bool { return gcPercent() > 100 })

	stop()
	if p := gcPercent(); p != 100 {
		t.Fatalf("GOGC %d after stop, want 100 back", p)
	}
	if current() != 0 {
		t.Fatalf("Current %d after stop", current())
	}
	// Collections after stop leave GOGC alone.
	runtime.GC()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if p := gcPercent(); p != 100 {
		t.Fatalf("GOGC %d after stop and two collections", p)
	}
}

// TestOperatorSettingWins: GOGC or GOMEMLIMIT in the environment and
// Start changes nothing.
func TestOperatorSettingWins(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(env, map[string]string{"GOGC": "150", "GOMEMLIMIT": "1GiB"}[env])
			before := gcPercent()
			stop, ok := Start(32 << 20)
			defer stop()
			if ok || !Configured() {
				t.Fatalf("Start = %v with %s set", ok, env)
			}
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
			if p := gcPercent(); p != before {
				t.Fatalf("GOGC %d, was %d", p, before)
			}
		})
	}
	if _, ok := Start(0); ok {
		t.Fatal("Start(0) ran")
	}
}
