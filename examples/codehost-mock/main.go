// Command codehost-mock serves the mock code host (a GitHub-like REST API) of package
// codehost, logging one line per request. See codehost's package documentation
// for the routes.
//
//	go run ./examples/codehost-mock -addr 127.0.0.1:9091
package main

import (
	"log"

	"github.com/uapk-gateway/uapk-proxy/examples/codehost-mock/codehost"
	"github.com/uapk-gateway/uapk-proxy/examples/internal/mockhttp"
)

func main() {
	mock := codehost.New()
	mockhttp.Serve("codehost-mock", "127.0.0.1:9091", mock, func(l *log.Logger) { mock.Logger = l })
}
