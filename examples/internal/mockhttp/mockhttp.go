// Package mockhttp is what the example mock servers (the ERP, the code
// host) share: JSON answers, a status-recording writer, and the /_mock/
// introspection endpoints their tests and walkthroughs read.
package mockhttp

import (
	"encoding/json"
	"net/http"
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
