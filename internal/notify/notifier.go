package notify

import (
	"container/heap"
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// attemptTimeout bounds one delivery attempt whatever the HTTP client or
// the SMTP server does.
const attemptTimeout = time.Minute

// Notifier delivers events on its own goroutines, one per channel (the
// mail server, each webhook), so that a slow or dead channel delays only
// itself.
type Notifier struct {
	cfg   Config
	mail  *mailer
	lanes []*lane // the mail lane first, if any, then one per webhook

	email *lane
	hooks []*lane

	recMu   sync.Mutex // Record is never called twice at once
	notes   noteQueue  // outcomes decided without an attempt
	ownHTTP bool       // HTTPClient is the default one, made here

	ctx    context.Context // cancelled when Close gives up flushing
	cancel context.CancelFunc
	closed atomic.Bool
	wg     sync.WaitGroup
}

// New checks cfg and starts the notifier's goroutines; Close stops them.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	ownHTTP := cfg.HTTPClient == nil
	cfg = cfg.withDefaults()
	cfg.Webhooks = append([]Webhook(nil), cfg.Webhooks...)
	n := &Notifier{cfg: cfg, ownHTTP: ownHTTP}
	n.notes.wake = make(chan struct{}, 1)
	if cfg.SMTP != "" {
		m, err := newMailer(cfg)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
		n.mail = m
		n.email = n.newLane(n.sendMail)
	}
	for range cfg.Webhooks {
		n.hooks = append(n.hooks, n.newLane(n.sendHook))
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, l := range n.lanes {
		n.wg.Add(1)
		go l.run()
	}
	n.wg.Add(1)
	go n.reportNotes()
	return n, nil
}

// Notify queues the event's deliveries and returns: it never waits for
// the network, for Record or for a lane. One mail goes to each distinct
// address among the recipients (those without one are skipped), one post
// to each webhook. A channel that already holds Config.QueueSize
// deliveries drops the new one and reports it failed (ReasonQueueFull).
// After Close the event is only logged.
func (n *Notifier) Notify(e Event) {
	at := n.cfg.Now()
	ce := clean(e)
	ev := &ce
	var invalid string
	if !validType(ce.Type) || ce.ApprovalID == "" {
		invalid = ReasonInvalidEvent
	}
	if n.email != nil {
		seen := map[string]bool{}
		for _, r := range ce.Recipients {
			if r.Email == "" {
				continue
			}
			addr := plainAddress(r.Email)
			if addr == "" {
				n.note(Delivery{Event: ce, Channel: "email:" + line(r.Email, maxShort), Error: ReasonInvalidAddress, Final: true})
				continue
			}
			key := strings.ToLower(addr)
			if seen[key] {
				continue
			}
			seen[key] = true
			it := &item{ev: ev, at: at, channel: "email:" + addr, to: addr}
			n.email.enqueue(it, invalid)
		}
	}
	for i, l := range n.hooks {
		h := &n.cfg.Webhooks[i]
		it := &item{ev: ev, at: at, channel: "webhook:" + webhookHost(h.URL), hook: h}
		l.enqueue(it, invalid)
	}
}

// Close stops taking events and flushes: deliveries queued for their
// first attempt are tried (a failure now is final), deliveries waiting for
// a retry are reported failed and Final (ReasonClosed) at once. When ctx ends first, attempts under way are cut
// and whatever is left is reported ReasonClosed; Close waits for those
// reports (Record calls, no network) and returns ctx's error. A second
// Close returns ErrClosed.
func (n *Notifier) Close(ctx context.Context) error {
	if !n.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	for _, l := range n.lanes {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		l.signal()
	}
	n.notes.mu.Lock()
	n.notes.closing = true
	n.notes.mu.Unlock()
	n.notes.signal()
	if n.ownHTTP {
		defer n.cfg.HTTPClient.CloseIdleConnections()
	}
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		n.cancel()
		return nil
	case <-ctx.Done():
		n.cancel()
		<-done
		return fmt.Errorf("notify: close: %w", ctx.Err())
	}
}

func (n *Notifier) link(id string) string {
	return n.cfg.UIURL + "/ui/approvals/" + url.PathEscape(id)
}

// report logs one outcome and hands it to Record.
func (n *Notifier) report(d Delivery) {
	ev := n.cfg.Logger.Info()
	switch {
	case !d.OK && d.Final:
		ev = n.cfg.Logger.Error()
	case !d.OK:
		ev = n.cfg.Logger.Warn()
	}
	ev.Str("event", d.Event.Type).
		Str("approval_id", d.Event.ApprovalID).
		Str("channel", d.Channel).
		Int("attempt", d.Attempt).
		Bool("ok", d.OK).
		Bool("final", d.Final).
		Str("error", d.Error).
		Msg("notification")
	if n.cfg.Record == nil {
		return
	}
	n.recMu.Lock()
	defer n.recMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			n.cfg.Logger.Error().Str("approval_id", d.Event.ApprovalID).Str("channel", d.Channel).
				Interface("panic", r).Msg("notification record hook panicked")
		}
	}()
	n.cfg.Record(d)
}

// item is one delivery: an event on one channel, over its attempts.
type item struct {
	ev      *Event
	at      time.Time // when Notify was called: the mail's Date, the CloudEvent's time
	channel string
	to      string   // mail
	hook    *Webhook // webhook

	// Built at the first attempt and kept, so that every attempt sends the
	// same Message-ID or CloudEvents id and a receiver can drop duplicates.
	body  []byte
	ctype string

	attempts int
	due      time.Time
}

func (n *Notifier) sendMail(ctx context.Context, it *item) error {
	if it.body == nil {
		id := "<" + rand.Text() + "@" + domainOf(n.mail.from.Address) + ">"
		b, err := n.buildMail(it.ev, it.to, id, it.at)
		if err != nil {
			return permanentError{fmt.Errorf("build mail: %w", err)}
		}
		it.body = b
	}
	return n.mail.send(ctx, it.to, it.body)
}

func (n *Notifier) sendHook(ctx context.Context, it *item) error {
	if it.body == nil {
		var b []byte
		var err error
		switch it.hook.Format {
		case FormatSlack:
			b, err = n.slackBody(it.ev)
			it.ctype = "application/json"
		case FormatCloudEvents:
			b, err = n.cloudEventBody(it.ev, rand.Text(), it.at)
			it.ctype = CloudEventsContentType
		default:
			err = fmt.Errorf("format %q", it.hook.Format)
		}
		if err != nil {
			return permanentError{fmt.Errorf("build webhook body: %w", err)}
		}
		it.body = b
	}
	return n.post(ctx, it.hook.URL, it.ctype, it.body)
}

// permanentError marks a failure no retry can mend.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// lane is one channel's queue and its goroutine: first attempts in order,
// retries when due.
type lane struct {
	n    *Notifier
	send func(context.Context, *item) error
	wake chan struct{}

	mu      sync.Mutex
	ready   []*item   // first attempts and due retries, oldest first
	waiting retryHeap // retries not yet due
	held    int       // ready + waiting + the one in flight
	closing bool
}

func (n *Notifier) newLane(send func(context.Context, *item) error) *lane {
	l := &lane{n: n, send: send, wake: make(chan struct{}, 1)}
	n.lanes = append(n.lanes, l)
	return l
}

func (l *lane) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// enqueue adds a delivery, or notes why it is given up.
func (l *lane) enqueue(it *item, invalid string) {
	if invalid != "" {
		l.n.note(Delivery{Event: *it.ev, Channel: it.channel, Error: invalid, Final: true})
		return
	}
	l.mu.Lock()
	switch {
	case l.closing:
		l.mu.Unlock()
		l.n.cfg.Logger.Error().Str("approval_id", it.ev.ApprovalID).Str("channel", it.channel).
			Msg("notification after close: dropped")
		return
	case l.held >= l.n.cfg.QueueSize:
		l.mu.Unlock()
		l.n.note(Delivery{Event: *it.ev, Channel: it.channel, Error: ReasonQueueFull, Final: true})
		return
	}
	l.ready = append(l.ready, it)
	l.held++
	l.mu.Unlock()
	l.signal()
}

// noteQueue holds outcomes decided without an attempt (queue full,
// invalid event or address) for the notifier's reporting goroutine:
// Notify must not wait for Record, and a lane may be busy with a slow
// server. It is bounded like a lane; past that only a count is logged.
type noteQueue struct {
	wake    chan struct{}
	mu      sync.Mutex
	ds      []Delivery
	lost    int
	closing bool
}

func (q *noteQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (n *Notifier) note(d Delivery) {
	q := &n.notes
	q.mu.Lock()
	switch {
	case q.closing:
		q.mu.Unlock()
		n.cfg.Logger.Error().Str("approval_id", d.Event.ApprovalID).Str("channel", d.Channel).
			Str("error", d.Error).Msg("notification after close: dropped")
		return
	case len(q.ds) >= n.cfg.QueueSize:
		q.lost++
	default:
		q.ds = append(q.ds, d)
	}
	q.mu.Unlock()
	q.signal()
}

func (n *Notifier) reportNotes() {
	defer n.wg.Done()
	q := &n.notes
	for {
		q.mu.Lock()
		ds, lost, closing := q.ds, q.lost, q.closing
		q.ds, q.lost = nil, 0
		q.mu.Unlock()
		for _, d := range ds {
			n.report(d)
		}
		if lost > 0 {
			n.cfg.Logger.Error().Int("lost", lost).Msg("notification outcomes lost: too many given up at once")
		}
		switch {
		case len(ds) > 0 || lost > 0:
			continue // more may have come meanwhile
		case closing:
			return
		}
		<-q.wake
	}
}

func (l *lane) run() {
	defer l.n.wg.Done()
	for {
		l.mu.Lock()
		aborted := l.n.ctx.Err() != nil
		var gaveUp []*item
		if l.closing {
			// Waiting retries are not waited for; with ctx gone, nothing
			// more is tried.
			gaveUp = append(gaveUp, l.waiting...)
			l.waiting = nil
			if aborted {
				gaveUp = append(gaveUp, l.ready...)
				l.ready = nil
			}
			l.held -= len(gaveUp)
		}
		now := time.Now()
		for len(l.waiting) > 0 && !l.waiting[0].due.After(now) {
			l.ready = append(l.ready, heap.Pop(&l.waiting).(*item))
		}
		var it *item
		if len(l.ready) > 0 {
			it = l.ready[0]
			l.ready[0] = nil
			l.ready = l.ready[1:]
		}
		var next time.Time
		if len(l.waiting) > 0 {
			next = l.waiting[0].due
		}
		exit := l.closing && l.held == 0
		l.mu.Unlock()

		for _, g := range gaveUp {
			l.n.report(Delivery{Event: *g.ev, Channel: g.channel, Error: ReasonClosed, Attempt: g.attempts, Final: true})
		}
		switch {
		case it != nil:
			l.attempt(it)
			continue
		case len(gaveUp) > 0:
			continue
		case exit:
			return
		}
		if next.IsZero() {
			<-l.wake
			continue
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-l.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// attempt tries a delivery once, reports the outcome and schedules the
// retry, if one is due: not after a permanent refusal, the last attempt,
// or Close.
func (l *lane) attempt(it *item) {
	it.attempts++
	ctx, cancel := context.WithTimeout(l.n.ctx, attemptTimeout)
	err := l.send(ctx, it)
	cancel()
	d := Delivery{Event: *it.ev, Channel: it.channel, OK: err == nil, Attempt: it.attempts}
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	retry := err != nil && !permanent(err) && it.attempts < l.n.cfg.MaxAttempts && !closing
	if err != nil {
		d.Error = line(err.Error(), maxError)
		if l.n.ctx.Err() != nil {
			d.Error = ReasonClosed + ": " + d.Error // cut short by Close
		}
	}
	d.Final = !retry
	l.n.report(d)

	l.mu.Lock()
	if retry {
		// Timed from the report, so that a slow Record never shortens
		// the wait the server gets.
		it.due = time.Now().Add(backoff(l.n.cfg.Backoff, it.attempts))
		heap.Push(&l.waiting, it)
	} else {
		l.held--
		it.body = nil
	}
	l.mu.Unlock()
}

// maxError bounds Delivery.Error: one line, as a record shows it.
const maxError = 500

// retryHeap orders waiting retries by due time.
type retryHeap []*item

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
