// Command erp-mock serves the mock ERP / general-ledger API of package
// erpmock, logging one line per request. See erpmock's package documentation
// for the routes.
//
//	go run ./examples/erp-mock -addr 127.0.0.1:9090
package main

import (
	"log"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/examples/internal/mockhttp"
)

func main() {
	mock := erpmock.New()
	mockhttp.Serve("erp-mock", "127.0.0.1:9090", mock, func(l *log.Logger) { mock.Logger = l })
}
