// Command codehost-mock serves the mock code host (a GitHub-like REST API) of package
// codehost, logging one line per request. See codehost's package documentation
// for the routes.
//
//	go run ./examples/codehost-mock -addr 127.0.0.1:9091
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

	"github.com/uapk-gateway/uapk-proxy/examples/codehost-mock/codehost"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9091", "listen address")
	flag.Parse()

	logger := log.New(os.Stderr, "codehost-mock: ", log.LstdFlags|log.Lmicroseconds)
	mock := codehost.New()
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
