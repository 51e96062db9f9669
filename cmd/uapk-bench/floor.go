package main

import (
	"fmt"
	"os"
	"sync"

	"github.com/valyala/fasthttp"
)

// The durable floor is the second baseline of the throughput mode: the
// plain fasthttp proxy that, before forwarding, makes the request's bytes
// durable and nothing else. One writer appends whatever queued while its
// last fdatasync ran to a file whose blocks were all written beforehand,
// then fdatasyncs it once for the whole group, as the ledger's journal
// does. It decides nothing, hashes nothing and writes no second record: no
// proxy that makes a request durable before forwarding it can do less, so
// what it costs on this machine (against the plain proxy, in the same run)
// is the physical limit the audited figures are held to.

// floorFileSize bounds the floor's file; a group that would run past its end
// starts again at the beginning (the bytes are never read back).
const floorFileSize = 64 << 20

type floorWriter struct {
	f    *os.File
	pos  int64
	wake chan struct{}

	mu    sync.Mutex
	queue []floorItem
	err   error
}

type floorItem struct {
	b    []byte
	done chan error
}

func newFloorWriter(path string) (*floorWriter, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(make([]byte, floorFileSize), 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	w := &floorWriter{f: f, wake: make(chan struct{}, 1)}
	go w.run()
	return w, nil
}

// write returns once b is on the disk.
func (w *floorWriter) write(b []byte) error {
	it := floorItem{b: b, done: make(chan error, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return <-it.done
}

func (w *floorWriter) run() {
	var buf []byte
	for range w.wake {
		w.mu.Lock()
		group := w.queue
		w.queue = nil
		w.mu.Unlock()
		if len(group) == 0 {
			continue
		}
		buf = buf[:0]
		for _, it := range group {
			buf = append(buf, it.b...)
		}
		if w.pos+int64(len(buf)) > floorFileSize {
			w.pos = 0
		}
		_, err := w.f.WriteAt(buf, w.pos)
		if err == nil {
			err = fdatasync(w.f)
		}
		w.pos += int64(len(buf))
		for _, it := range group {
			it.done <- err
		}
	}
}

// floorProxy serves the durable floor on listen, writing to path.
func floorProxy(listen, upstream, path string) {
	w, err := newFloorWriter(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "durable floor:", err)
		os.Exit(1)
	}
	client := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		b := append([]byte(nil), req.Header.Header()...)
		b = append(b, req.Body()...)
		if err := w.write(b); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
			return
		}
		req.Header.Del("Connection")
		req.SetHost(upstream)
		if err := client.Do(req, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}}
	if err := srv.ListenAndServe(listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
