package verifier

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// pipeline checks records on every core without changing what a single
// Verifier would say. Checking a record on its own (its canonical form,
// its fields, the hash of its prev and content: nearly all the cost) needs
// no other record, so batches of records go to GOMAXPROCS workers; the
// chain itself (seq, key, prev against the previous hash, time order,
// anchors: a few comparisons) is then linked in order by one goroutine with
// the Verifier's own link step, which joins each batch to the one before.
// The first problem is the one the Verifier finds in order, so it is the
// same record and the same words. Memory stays bounded: at most
// 2*GOMAXPROCS+2 batches are in flight.
type pipeline struct {
	v     *Verifier
	keyed bool
	copy  bool // copy raw: the caller reuses it
	cur   *batch
	work  chan *batch
	order chan *batch
	wg    sync.WaitGroup // workers
	done  chan struct{}  // the linker has seen every batch
	stop  atomic.Bool
	free  sync.Pool
}

type batch struct {
	keys  [][]byte
	raws  [][]byte
	buf   []byte // the copies of raws, when copied
	lens  []int  // their lengths
	out   []checked
	size  int
	ready chan struct{}
}

// A batch ends at whichever comes first (variables for the tests, which
// cross batch joins with small chains).
var (
	batchRecords = 256
	batchBytes   = 256 << 10
)

// newPipeline feeds v. Keyed records go through AddKeyed's checks; raws
// are copied unless keyed (the Store's Scan hands out copies).
func newPipeline(v *Verifier, keyed bool) *pipeline {
	workers := runtime.GOMAXPROCS(0)
	p := &pipeline{v: v, keyed: keyed, copy: !keyed,
		work: make(chan *batch, workers), order: make(chan *batch, 2*workers+1), done: make(chan struct{})}
	p.free.New = func() any { return &batch{} }
	for range workers {
		p.wg.Add(1)
		go p.worker()
	}
	go p.linker()
	return p
}

// stopped reports that a problem has been found: nothing more is needed.
func (p *pipeline) stopped() bool { return p.stop.Load() }

func (p *pipeline) add(key, raw []byte) {
	b := p.cur
	if b == nil {
		b = p.free.Get().(*batch)
		b.keys, b.raws, b.buf, b.lens, b.size = b.keys[:0], b.raws[:0], b.buf[:0], b.lens[:0], 0
		b.ready = make(chan struct{})
		p.cur = b
	}
	if p.copy {
		// Slices into buf are fixed up by the worker, once buf is final.
		b.buf = append(b.buf, raw...)
		b.raws = append(b.raws, nil)
		b.keys = append(b.keys, nil)
		b.lens = append(b.lens, len(raw))
		b.size += len(raw)
	} else {
		b.raws = append(b.raws, raw)
		b.keys = append(b.keys, key)
		b.size += len(raw)
	}
	if len(b.raws) == batchRecords || b.size >= batchBytes {
		p.flush()
	}
}

func (p *pipeline) flush() {
	if b := p.cur; b != nil {
		p.cur = nil
		p.order <- b
		p.work <- b
	}
}

func (p *pipeline) worker() {
	defer p.wg.Done()
	s := newScratch()
	for b := range p.work {
		if p.copy {
			off := 0
			for i, n := range b.lens {
				b.raws[i] = b.buf[off : off+n : off+n]
				off += n
			}
		}
		if cap(b.out) < len(b.raws) {
			b.out = make([]checked, len(b.raws))
		}
		b.out = b.out[:len(b.raws)]
		for i, raw := range b.raws {
			if p.stop.Load() {
				b.out[i] = checked{} // never linked: the chain has a problem before it
				continue
			}
			b.out[i] = checkRecord(raw, s)
		}
		close(b.ready)
	}
}

func (p *pipeline) linker() {
	defer close(p.done)
	v := p.v
	for b := range p.order {
		<-b.ready
		for i := range b.raws {
			if v.problem != nil {
				break
			}
			var key uint64
			if p.keyed {
				k, ok := v.checkKey(b.keys[i])
				if !ok {
					break
				}
				key = k
			}
			v.link(&b.out[i], key, p.keyed)
		}
		if v.problem != nil {
			p.stop.Store(true)
		}
		clear(b.raws)
		clear(b.keys)
		p.free.Put(b)
	}
}

// finish waits until every record added has been linked.
func (p *pipeline) finish() {
	p.flush()
	close(p.order)
	close(p.work)
	p.wg.Wait()
	<-p.done
}
