package durablefloor

import "github.com/valyala/fasthttp"

// Proxy is the benchmarks' plain proxy: the textbook fasthttp reverse
// proxy to upstream (host:port), with nothing decided and nothing
// recorded. With a before, each request goes through it first, and is
// answered 503, not forwarded, if it fails: Proxy(upstream, w.Request) is
// the durable floor.
func Proxy(upstream string, before func(*fasthttp.Request) error) fasthttp.RequestHandler {
	client := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024}
	return func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		if before != nil {
			if err := before(req); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
				return
			}
		}
		req.Header.Del("Connection")
		req.SetHost(upstream)
		if err := client.Do(req, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}
}

// Request makes req's line, headers and body durable (Write): Proxy's
// before for the floor.
func (w *Writer) Request(req *fasthttp.Request) error {
	b := append([]byte(nil), req.Header.Header()...)
	return w.Write(append(b, req.Body()...))
}
