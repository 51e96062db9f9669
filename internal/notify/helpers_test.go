package notify_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/uapk-gateway/uapk-proxy/internal/notify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait for something asynchronous; the waits poll,
// so a fast machine does not wait for it and a slow one has room.
const waitLimit = 30 * time.Second

const (
	testUI   = "https://desk.corp.example"
	testFrom = "UAPK Gateway <uapk@corp.example>"
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// recorder is a Config.Record that keeps every outcome with the time it
// came, and checks that Record is never entered twice at once.
type recorder struct {
	mu  sync.Mutex
	ds  []notify.Delivery
	at  []time.Time
	in  bool
	bad string
}

func (r *recorder) record(d notify.Delivery) {
	r.mu.Lock()
	if r.in {
		r.bad = "Record entered twice at once"
	}
	r.in = true
	r.ds = append(r.ds, d)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
	time.Sleep(time.Millisecond) // a ledger write: long enough for overlap to show
	r.mu.Lock()
	r.in = false
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]notify.Delivery, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ds), slices.Clone(r.at)
}

// waitFor polls until pred holds for the outcomes so far, and returns them.
func (r *recorder) waitFor(t *testing.T, what string, pred func([]notify.Delivery) bool) []notify.Delivery {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ds, _ := r.snapshot()
		if pred(ds) {
			r.check(t)
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s; outcomes:\n%s", what, waitLimit, show(ds))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != "" {
		t.Error(r.bad)
	}
}

// finals counts outcomes with Final set.
func finals(n int) func([]notify.Delivery) bool {
	return func(ds []notify.Delivery) bool {
		c := 0
		for _, d := range ds {
			if d.Final {
				c++
			}
		}
		return c >= n
	}
}

func show(ds []notify.Delivery) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "  %s %s attempt=%d ok=%v final=%v error=%q\n", d.Event.ApprovalID, d.Channel, d.Attempt, d.OK, d.Final, d.Error)
	}
	return b.String()
}

// config is a notifier configuration for the tests: fast retries, the
// clock fixed, logs to the test.
func config(t *testing.T, rec *recorder) notify.Config {
	return notify.Config{
		From:        testFrom,
		UIURL:       testUI,
		Logger:      zerolog.New(zerolog.NewTestWriter(t)),
		Now:         func() time.Time { return testNow },
		Record:      rec.record,
		MaxAttempts: 3,
		Backoff:     20 * time.Millisecond,
	}
}

// start makes a notifier closed at the end of the test.
func start(t *testing.T, cfg notify.Config) *notify.Notifier {
	t.Helper()
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := n.Close(ctx); err != nil && !errors.Is(err, notify.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func pending(id string, recipients ...notify.Recipient) notify.Event {
	return notify.Event{
		Type:          notify.TypePending,
		ApprovalID:    id,
		Action:        "journal_entry",
		App:           "finance-agent",
		Amount:        "1200000",
		Justification: "Quarter-end accrual for the Berlin office lease.",
		RequiredRoles: []string{"cfo", "controller"},
		ExpiresAt:     testNow.Add(24 * time.Hour),
		Recipients:    recipients,
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// blackHole accepts connections and never says a word: an SMTP server or
// webhook that hangs.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
