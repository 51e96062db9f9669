package gate

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlineSlot is how long requests share one ledger-write deadline: the
// deadline of an append is its timeout after its start, or up to this much
// later.
const deadlineSlot = 10 * time.Millisecond

// deadlines hands out the contexts of ledger writes, one per deadlineSlot
// shared by all the appends that start in it: a context with a timeout of
// its own per request was a timer armed and stopped on every request. A
// shared context is never cancelled early; it ends at its deadline, which
// frees its timer.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[slotContext]
}

type slotContext struct {
	slot   int64 // time.Now's nanoseconds / deadlineSlot, of its appends' start
	ctx    context.Context
	cancel context.CancelFunc // never called before the deadline; kept for vet
}

// get returns the context of an append starting now: its deadline is
// between timeout and timeout+deadlineSlot away.
func (d *deadlines) get() context.Context {
	now := time.Now()
	slot := now.UnixNano() / int64(deadlineSlot)
	if c := d.cur.Load(); c != nil && c.slot == slot {
		return c.ctx
	}
	// From now, so that the deadline keeps now's monotonic clock: a step
	// of the wall clock then only changes which appends share a context.
	end := now.Add(time.Duration((slot+1)*int64(deadlineSlot)-now.UnixNano()) + d.timeout)
	ctx, cancel := context.WithDeadline(context.Background(), end)
	c := &slotContext{slot: slot, ctx: ctx, cancel: cancel}
	for {
		old := d.cur.Load()
		switch {
		case old != nil && old.slot == slot:
			// Another append made this slot's first: ours goes unused.
			cancel()
			return old.ctx
		case old != nil && old.slot > slot:
			// A later slot's is in place already: ours is right for this
			// append alone, and ends at its deadline.
			return ctx
		case d.cur.CompareAndSwap(old, c):
			return ctx
		}
	}
}
