package gate

import (
	"context"
	"testing"
	"time"
)

// Every append's context ends between its timeout and its timeout plus one
// slot after it began, and appends of one slot share one context.
func TestDeadlinesBoundsAndSharing(t *testing.T) {
	d := &deadlines{timeout: 5 * time.Second}
	seen := map[context.Context]bool{}
	start := time.Now()
	const n = 2000
	for range n {
		before := time.Now()
		ctx := d.get()
		after := time.Now()
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("no deadline")
		}
		if dl.Before(before.Add(d.timeout)) || dl.After(after.Add(d.timeout+deadlineSlot)) {
			t.Fatalf("deadline %s after the start, want %s to %s", dl.Sub(before), d.timeout, d.timeout+deadlineSlot)
		}
		if ctx.Err() != nil {
			t.Fatalf("a fresh append's context is done: %v", ctx.Err())
		}
		seen[ctx] = true
	}
	if slots := int(time.Since(start)/deadlineSlot) + 2; len(seen) > slots { // the first and last slots may be partial
		t.Errorf("%d contexts for %d appends over %d slots: not shared", len(seen), n, slots)
	}
}

// A context ends at its deadline with DeadlineExceeded, as a timeout of
// its own would.
func TestDeadlinesEnd(t *testing.T) {
	d := &deadlines{timeout: time.Millisecond}
	ctx := d.get()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context never ended")
	}
	if ctx.Err() != context.DeadlineExceeded {
		t.Fatalf("err %v, want DeadlineExceeded", ctx.Err())
	}
	if next := d.get(); next.Err() != nil {
		t.Fatalf("an append after that one gets an ended context: %v", next.Err())
	}
}
