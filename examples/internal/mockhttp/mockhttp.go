// Package mockhttp is what the example mock servers (the ERP, the code
// host) share: JSON answers, a status-recording writer, and the /_mock/
// introspection endpoints their tests and walkthroughs read.
package mockhttp

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// WriteJSON answers v as indented JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// WriteError answers {"error": code, "message": msg} with status.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, map[string]string{"error": code, "message": msg})
}

// StatusWriter remembers the status a handler answered with.
type StatusWriter struct {
	http.ResponseWriter
	Status int
}

func (w *StatusWriter) WriteHeader(code int) {
	w.Status = code
	w.ResponseWriter.WriteHeader(code)
}

// Introspect serves GET /_mock/stats, GET /_mock/requests and POST
// /_mock/reset from stats, hits and reset.
func Introspect(w http.ResponseWriter, r *http.Request, stats, hits func() any, reset func()) {
	var allowed string
	switch r.URL.Path {
	case "/_mock/stats":
		allowed = http.MethodGet
		if r.Method == allowed {
			WriteJSON(w, http.StatusOK, stats())
			return
		}
	case "/_mock/requests":
		allowed = http.MethodGet
		if r.Method == allowed {
			WriteJSON(w, http.StatusOK, hits())
			return
		}
	case "/_mock/reset":
		allowed = http.MethodPost
		if r.Method == allowed {
			reset()
			WriteJSON(w, http.StatusOK, map[string]string{"status": "reset"})
			return
		}
	default:
		WriteError(w, http.StatusNotFound, "not_found", "no such introspection endpoint")
		return
	}
	w.Header().Set("Allow", allowed)
	WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+allowed)
}

// Serve runs a mock server's command: it serves handler on the -addr flag
// (default addr), logging as name, until SIGINT or SIGTERM. setLogger
// gives the mock the logger.
func Serve(name, addr string, handler http.Handler, setLogger func(*log.Logger)) {
	listen := flag.String("addr", addr, "listen address")
	flag.Parse()

	logger := log.New(os.Stderr, name+": ", log.LstdFlags|log.Lmicroseconds)
	setLogger(logger)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Printf("listening on http://%s (introspection: /_mock/stats, /_mock/requests, POST /_mock/reset)", *listen)

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
