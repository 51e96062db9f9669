package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/uapk-gateway/uapk-proxy/gate"
)

// A held request waits minutes for its approvers. Kept on the fasthttp
// worker that read it, it would keep that goroutine's stack (grown by the
// gate's call chain), its RequestCtx and its read buffer: some 30 KiB a
// request, 10,000 of them at quarter end. park instead copies what the
// release needs (the request's line and headers as written, and its body,
// at their size), hijacks the connection from
// fasthttp with no response, and leaves the wait to gate.Park: an entry in
// the approvals' table of waiters and a timer. When the hold ends, the
// answer is made on a new RequestCtx for the same connection by the same
// code as any other (then), written, and the connection closed.

// park holds c (verdict v) off fasthttp's worker, unless v does not hold;
// it reports whether it did. Then nothing is written on ctx.
func (s *Sidecar) park(ctx *fasthttp.RequestCtx, c *gate.Call, v *gate.Verdict, then answerFunc) bool {
	if !gate.Holdable(v) {
		return false
	}
	p := &parkedConn{s: s, c: c, v: v, then: then}
	// The request as read, its own copy: ctx and its buffers go back to
	// fasthttp when the hijack handler returns. The body is copied once,
	// at its size, and is the call's body too (the digest bound it). The
	// line and headers are kept as fasthttp writes them (heldHead), a few
	// hundred bytes where a copy of the parsed request is two KiB, and are
	// read again when the hold ends; a request whose head does not read
	// back the same is kept parsed.
	body := bytes.Clone(ctx.Request.Body())
	if body == nil {
		body = []byte{}
	}
	if pr := c.AppProof; pr != nil && aliases(pr.Body, ctx.Request.Body()) {
		proof := *pr
		proof.Body = body
		c.AppProof = &proof
	}
	c.Req.Body = body
	ctx.Request.ResetBody() // not copied twice
	if head, ok := heldHead(&ctx.Request.Header); ok {
		p.head, p.body = head, body
	} else {
		p.req = new(fasthttp.Request)
		ctx.Request.CopyTo(p.req)
		p.req.SetBodyRaw(body)
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(p.hijacked)
	return true
}

// heldHead returns h's line and headers as fasthttp writes them, when
// reading them back (readHead) gives a header that writes them the same:
// the request released is the one read. Not for a request with trailers
// (their values are not written with the header). A request sent without
// a Content-Type is written without one: h is changed so (the door's
// forward does the same before sending).
func heldHead(h *fasthttp.RequestHeader) ([]byte, bool) {
	if h.Peek(fasthttp.HeaderTrailer) != nil {
		return nil, false
	}
	h.SetNoDefaultContentType(true)
	head := bytes.Clone(h.Header())
	var back fasthttp.RequestHeader
	back.SetNoDefaultContentType(true)
	if readHead(&back, head) != nil || !bytes.Equal(back.Header(), head) {
		return nil, false
	}
	return head, true
}

// readHead reads head (from heldHead) into h.
func readHead(h *fasthttp.RequestHeader, head []byte) error {
	return h.Read(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
}

// aliases reports whether a and b are the same bytes in memory.
func aliases(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// parkedConn is one held request with its agent's connection.
type parkedConn struct {
	s    *Sidecar
	c    *gate.Call
	v    *gate.Verdict
	then answerFunc
	head []byte            // the request's line and headers (heldHead), until restored
	body []byte            // its body, with head
	req  *fasthttp.Request // the request as read, or restored from head; nil once answered
	conn net.Conn

	mu      sync.Mutex
	hold    *gate.Hold
	stopped bool // shutdown: the hold ends as soon as it is known
}

// hijacked runs on a goroutine of fasthttp's once the handler has returned:
// it hands the wait to the gate and returns, so that nothing of fasthttp's
// is kept for the hold.
func (p *parkedConn) hijacked(hc net.Conn) {
	// The connection itself, not fasthttp's wrapper with its read buffer:
	// anything the agent pipelined behind a held request is not answered
	// (the answer closes the connection).
	p.conn = hc
	if u, ok := hc.(interface{ UnsafeConn() net.Conn }); ok {
		p.conn = u.UnsafeConn()
	}
	if !p.s.parked.add(p) {
		p.answer(p.v) // shutdown has begun: the 202
		return
	}
	// A request that could not be restored is not released: the agent
	// gets the 202 and the approval stays usable by a retry.
	h := p.s.gate.Park(p.c, p.v, func() bool { return connGone(p.conn) || !p.restore() }, p.release)
	if h == nil {
		p.release(p.v) // never: park checked Holdable
		return
	}
	p.mu.Lock()
	p.hold = h
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		h.Stop()
	}
}

// stop ends the hold with the 202 (shutdown).
func (p *parkedConn) stop() {
	p.mu.Lock()
	p.stopped = true
	h := p.hold
	p.mu.Unlock()
	if h != nil {
		h.Stop()
	}
}

// release answers the held request with v, what the gate made of the end
// of its hold, and takes it off the table.
func (p *parkedConn) release(v *gate.Verdict) {
	defer p.s.parked.remove(p)
	p.answer(v)
}

// answer makes the answer to v exactly as an unheld request's (then, on a
// context for the same connection and request), writes it, and closes the
// connection.
func (p *parkedConn) answer(v *gate.Verdict) {
	s := p.s
	ctx := new(fasthttp.RequestCtx)
	ctx.Init2(p.conn, zlogger{s.log}, true)
	if p.restore() {
		p.req.CopyTo(&ctx.Request)
	} else if v.Forward() {
		_ = p.conn.Close() // never: a release restores first (gone)
		return
	}
	p.req = nil
	p.then(s, ctx, p.c, v)
	if ctx.Request.Header.IsHead() {
		ctx.Response.SkipBody = true
	}
	ctx.Response.SetConnectionClose()
	_ = p.conn.SetWriteDeadline(time.Now().Add(s.server.WriteTimeout))
	bw := bufio.NewWriter(p.conn)
	if err := ctx.Response.Write(bw); err == nil {
		_ = bw.Flush()
	}
	_ = p.conn.Close()
}

// restore makes p.req of head and body, once; it reports whether p.req
// is the request as read.
func (p *parkedConn) restore() bool {
	if p.req != nil {
		return true
	}
	if p.head == nil {
		return false // answered
	}
	req := new(fasthttp.Request)
	if err := readHead(&req.Header, p.head); err != nil {
		p.s.log.Error().Err(err).Str("approval_id", p.v.ApprovalID).Msg("a held request's head does not read back; not released")
		return false
	}
	req.SetBodyRaw(p.body)
	p.req, p.head, p.body = req, nil, nil
	return true
}

// parkedTable is the requests held by park and not answered yet:
// Shutdown ends their holds and waits for their answers (fasthttp no
// longer knows of them).
type parkedTable struct {
	mu       sync.Mutex
	m        map[*parkedConn]struct{}
	stopping bool
	zero     chan struct{} // closed when the table is empty after stopping

	burst    int           // parked since memory was last given back
	giveBack *time.Timer   // armed by a burst, fires once it is over
	tailTill time.Time     // a burst paused and gave back: what it parks next, till then, gives back once more
	free     func()        // gives the memory back (giveBack)
	garbage  func() uint64 // heap bytes allocated since the last collection found what is live
	settle   settleState
}

// settleState follows the heap for a while after a give-back.
type settleState struct {
	checks, gives int // left
}

// A burst of held requests (thousands of agents at quarter end) leaves
// behind it the memory that read and decided them while they queued for
// the ledger: free heap the runtime keeps for reuse, counted as the
// process's own until its scavenger or its two-minute collection returns
// it; the stacks of fasthttp's workers, one a request that was in the
// gate at once, idle once their requests are parked; and the pools of
// request contexts and page buffers, which a collection only empties the
// second time. The workers go after idleWorker idle (the server's
// MaxIdleWorkerDuration). Once burstParks have been parked and none for
// burstQuiet (by then the burst's workers have gone), that memory is
// given back at once, at most once per burst: a collection (the dead
// workers' stacks, the pools' first round), then debug.FreeOSMemory (the
// pools' second round, then the free pages returned). A burst that
// pauses for burstQuiet (the ledger slowed by a busy disk) gives back then,
// and once more when what it parks after the pause, within burstTail, is
// over: else the memory of its rest would be kept. Work a burst sets off
// goes on after its last park (the archive seals a segment of the records
// it wrote, megabytes read and encoded): for settleChecks x burstQuiet after
// a give-back, with nothing parked, the heap is looked at again, and given
// back once more (at most settleGives times) when settleGrowth were
// allocated since the last collection.
const (
	burstParks = 1000
	burstQuiet = 500 * time.Millisecond
	burstTail  = 10 * time.Second
	idleWorker = 200 * time.Millisecond

	settleChecks = 6
	settleGives  = 2
	settleGrowth = 8 << 20
)

func (t *parkedTable) init() {
	t.m = map[*parkedConn]struct{}{}
	t.zero = make(chan struct{})
	t.free = giveBack
	t.garbage = heapGarbage
}

// heapGarbage returns the bytes of the heap's objects beyond those the
// last collection found live: allocated since, garbage or not yet.
func heapGarbage() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 || m[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return m[0].Value.Uint64() - min(m[0].Value.Uint64(), m[1].Value.Uint64())
}

// giveBack returns to the OS the memory a burst left behind.
func giveBack() {
	runtime.GC()
	debug.FreeOSMemory()
}

// add puts p in the table, unless shutdown has begun.
func (t *parkedTable) add(p *parkedConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping {
		return false
	}
	t.m[p] = struct{}{}
	t.burst++
	switch {
	case t.burst < burstParks && !time.Now().Before(t.tailTill):
	case t.giveBack == nil:
		t.giveBack = time.AfterFunc(burstQuiet, t.burstOver)
	default:
		t.giveBack.Reset(burstQuiet)
	}
	return true
}

// burstOver gives back the memory a burst of parks left behind.
func (t *parkedTable) burstOver() {
	t.mu.Lock()
	if t.burst >= burstParks {
		t.tailTill = time.Now().Add(burstTail)
	} else {
		t.tailTill = time.Time{} // this was the tail's
	}
	t.burst = 0
	t.mu.Unlock()
	t.free()
	t.mu.Lock()
	t.settle = settleState{checks: settleChecks, gives: settleGives}
	t.mu.Unlock()
	time.AfterFunc(burstQuiet, t.settleCheck)
}

// settleCheck gives back once more what the burst's aftermath left, if
// settleGrowth were allocated since the last collection and nothing was
// parked since the give-back (a new burst has its own).
func (t *parkedTable) settleCheck() {
	t.mu.Lock()
	if t.burst > 0 || t.settle.checks <= 0 || t.settle.gives <= 0 {
		t.settle = settleState{}
		t.mu.Unlock()
		return
	}
	t.settle.checks--
	give := t.garbage() > settleGrowth
	if give {
		t.settle.gives--
	}
	t.mu.Unlock()
	if give {
		t.free()
	}
	time.AfterFunc(burstQuiet, t.settleCheck)
}

func (t *parkedTable) remove(p *parkedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, p)
	if len(t.m) == 0 && t.stopping {
		close(t.zero)
	}
}

// stop refuses new holds and ends every hold with the 202.
func (t *parkedTable) stop() {
	t.mu.Lock()
	if t.stopping {
		t.mu.Unlock()
		return
	}
	t.stopping = true
	list := make([]*parkedConn, 0, len(t.m))
	for p := range t.m {
		list = append(list, p)
	}
	if len(t.m) == 0 {
		close(t.zero)
	}
	t.mu.Unlock()
	for _, p := range list {
		p.stop()
	}
}

// wait waits, after stop, until every parked request is answered or ctx
// ends.
func (t *parkedTable) wait(ctx context.Context) error {
	t.stop()
	select {
	case <-t.zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
