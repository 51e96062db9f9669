// Package gcfloor keeps Go's garbage collector from running every few
// megabytes of allocation while a server's live heap is small.
//
// With GOGC=100 the heap goal is twice the live heap, and at least 4 MiB.
// A busy proxy door keeps 3-4 MiB live and allocates about 8 KiB per
// request, so it collected every few hundred requests, and the collector
// (marking, sweeping, assists) was about a tenth of a request's CPU. Start
// lets the heap grow at least a fixed number of bytes above the live heap
// before the next collection, and never less than GOGC=100 would: above
// that live size the collector runs exactly as it did, so a heap that is
// large anyway (thousands of held requests) costs no more memory than
// before.
//
// The goal is set again after every collection, from the live heap that
// collection measured. GOGC or GOMEMLIMIT in the environment are the
// operator's own choice: Start then changes nothing.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// Default is the head room serve asks for: the most garbage that may wait
// for a collection while the live heap is small.
const Default = 32 << 20

const livePercent = 100 // GOGC's default: the least head room, as a share of the live heap

// Percent is the GOGC value that gives about floor bytes of head room, and
// at least livePercent, to a heap whose goal grows with base bytes: the
// live heap plus the goroutine stacks and globals the collector scans (the
// runtime's goal is live + base*GOGC/100). The runtime's least goal, 4 MiB
// at GOGC=100, grows with GOGC too, so GOGC never goes past the value that
// makes that least goal the floor: a tiny heap gets floor bytes, not more.
func Percent(base, floor uint64) int {
	if base == 0 {
		base = 1
	}
	p := min(floor*100/base, floor*100/minHeap)
	if p < livePercent {
		return livePercent
	}
	return int(p)
}

// minHeap is the runtime's least heap goal at GOGC=100 (defaultHeapMinimum),
// which it scales by GOGC/100.
const minHeap = 4 << 20

// Configured reports whether the environment sets the collector up
// itself (GOGC or GOMEMLIMIT), in which case Start does nothing.
func Configured() bool {
	return os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != ""
}

var (
	mu      sync.Mutex
	running *tuner
)

type tuner struct {
	floor   uint64
	prev    int // GOGC before Start, put back by stop
	stopped atomic.Bool
	set     atomic.Int64 // the GOGC value last set
	sample  []metrics.Sample
}

// Start keeps floor bytes of head room above the live heap until stop is
// called, which puts GOGC back as it was. It reports false, and changes
// nothing, when Configured, when floor is 0, or when it is running already.
func Start(floor uint64) (stop func(), ok bool) {
	mu.Lock()
	defer mu.Unlock()
	if floor == 0 || Configured() || running != nil {
		return func() {}, false
	}
	t := &tuner{floor: floor, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
	}}
	running = t
	p := t.want()
	t.prev = debug.SetGCPercent(p)
	t.set.Store(int64(p))
	t.arm()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if running != t {
			return
		}
		running = nil
		t.stopped.Store(true)
		debug.SetGCPercent(t.prev)
	}, true
}

// current is the GOGC value the running tuner last set; 0 when none runs.
func current() int {
	mu.Lock()
	defer mu.Unlock()
	if running == nil {
		return 0
	}
	return int(running.set.Load())
}

// sentinel is garbage from the moment arm makes it: its cleanup runs after
// the next collection, and arms the next one.
type sentinel struct{ _ [16]byte }

func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *tuner) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	}, t)
}

// want is the GOGC value for the live heap the last collection measured.
// Only one goroutine at a time calls it: Start, then the cleanups, which
// run one after another.
func (t *tuner) want() int {
	metrics.Read(t.sample)
	var base uint64
	for _, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return livePercent // an unknown runtime: as if never started
		}
		base += s.Value.Uint64()
	}
	return Percent(base, t.floor)
}

// tune sets GOGC from the live heap the last collection measured.
func (t *tuner) tune() {
	p := t.want()
	if !moves(t.set.Load(), p) {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	if t.stopped.Load() {
		return
	}
	debug.SetGCPercent(p)
	t.set.Store(int64(p))
}

// moves reports whether GOGC should go from old to p: not for a change of
// 10% or less (the live heap wobbles), but always to livePercent, so that
// a large heap collects exactly as at GOGC=100.
func moves(old int64, p int) bool {
	if int64(p) == old {
		return false
	}
	return p == livePercent || !within(int64(p), old, 10)
}

// within reports whether a is within pct percent of b.
func within(a, b, pct int64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d*100 <= b*pct
}
