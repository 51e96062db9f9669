// Command erp-mock serves the mock ERP / general-ledger API of package
// erpmock, logging one line per request. See erpmock's package documentation
// for the routes.
//
//	go run ./examples/erp-mock -addr 127.0.0.1:9090
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()

	logger := log.New(os.Stderr, "erp-mock: ", log.LstdFlags|log.Lmicroseconds)
	mock := erpmock.New()
	mock.Logger = logger
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mock,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Printf("listening on http://%s (introspection: /_mock/stats, /_mock/requests, POST /_mock/reset)", *addr)

	select {
	case err := <-errc:
		logger.Fatal(err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Printf("shutdown: %v", err)
	}
	logger.Print("stopped")
}
