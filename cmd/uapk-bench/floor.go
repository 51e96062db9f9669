package main

import (
	"fmt"
	"os"

	"github.com/uapk-gateway/uapk-proxy/internal/durablefloor"
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
	plainProxy(listen, upstream, w.Request)
}
