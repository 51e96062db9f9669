package main

import (
	"fmt"
	"os"

	"github.com/uapk-gateway/uapk-proxy/internal/durablefloor"
	"github.com/valyala/fasthttp"
)

// floorProxy serves the durable floor on listen: the plain fasthttp proxy
// (plainProxy) that first makes the request's line, headers and body
// durable through a durablefloor.Writer on path, and does nothing else.
func floorProxy(listen, upstream, path string) {
	w, err := durablefloor.New(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "durable floor:", err)
		os.Exit(1)
	}
	client := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		b := append([]byte(nil), req.Header.Header()...)
		b = append(b, req.Body()...)
		if err := w.Write(b); err != nil {
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
