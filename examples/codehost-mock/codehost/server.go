package codehost

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/internal/mockhttp"
)

const (
	maxHits = 1000
	maxBody = 1 << 20
	// InitialCommit is the head of main in every new repository.
	InitialCommit = "0000000000000000000000000000000000000001"
	unmatched     = "unmatched"
)

// Stats counts the requests the host has served since it started or was
// last reset. Introspection requests (/_mock/*) are never counted.
type Stats struct {
	Total   int            `json:"total"`
	ByRoute map[string]int `json:"by_route"` // key: route pattern, e.g. "PUT /repos/{owner}/{repo}/pulls/{number}/merge"
	// BranchesCreated, PullsOpened and Merges count the requests that did
	// what they asked; Pushes counts branch moves, ProtectedPushes those of
	// them that arrived for main, master or release/*.
	BranchesCreated int `json:"branches_created"`
	PullsOpened     int `json:"pulls_opened"`
	Merges          int `json:"merges"`
	Pushes          int `json:"pushes"`
	ProtectedPushes int `json:"protected_pushes"`
	// MergesByRepo counts merges per "owner/repo".
	MergesByRepo map[string]int `json:"merges_by_repo"`
	// LeakedUAPKHeaders counts requests carrying an X-UAPK-* header other
	// than X-UAPK-Capability.
	LeakedUAPKHeaders int `json:"leaked_uapk_headers"`
}

// Hit is one request as the host received it.
type Hit struct {
	Time       time.Time `json:"time"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Route      string    `json:"route"`
	BodySHA256 string    `json:"body_sha256"`
	Capability string    `json:"capability,omitempty"`
	LeakedUAPK []string  `json:"leaked_uapk,omitempty"`
}

// Pull is a pull request.
type Pull struct {
	Number      int       `json:"number"`
	Title       string    `json:"title"`
	State       string    `json:"state"` // open, closed
	Head        string    `json:"head"`
	Base        string    `json:"base"`
	User        User      `json:"user"`
	Merged      bool      `json:"merged"`
	MergeCommit string    `json:"merge_commit_sha,omitempty"`
	Repo        string    `json:"repository"` // owner/repo
	CreatedAt   time.Time `json:"created_at"`
}

// User names a pull request's author.
type User struct {
	Login string `json:"login"`
}

type repo struct {
	branches map[string]string // name -> head sha
	pulls    map[int]*Pull
	next     int
}

// Server is the mock code host. The zero value is not usable; call New.
type Server struct {
	// Logger, if set before the server starts serving, receives one line
	// per request.
	Logger *log.Logger

	mux *http.ServeMux

	mu      sync.Mutex
	stats   Stats
	hits    []Hit
	repos   map[string]*repo
	commits int
}

// New returns an empty code host.
func New() *Server {
	s := &Server{mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /repos/{owner}/{repo}/git/refs", s.createRef)
	s.mux.HandleFunc("GET /repos/{owner}/{repo}/git/refs/heads/{branch...}", s.getRef)
	s.mux.HandleFunc("PATCH /repos/{owner}/{repo}/git/refs/heads/{branch...}", s.pushRef)
	s.mux.HandleFunc("POST /repos/{owner}/{repo}/pulls", s.openPull)
	s.mux.HandleFunc("GET /repos/{owner}/{repo}/pulls/{number}", s.getPull)
	s.mux.HandleFunc("PUT /repos/{owner}/{repo}/pulls/{number}/merge", s.merge)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	s.resetLocked()
	return s
}

// Protected reports whether branch is one the host protects: main, master
// or release/*.
func Protected(branch string) bool {
	return branch == "main" || branch == "master" || strings.HasPrefix(branch, "release/")
}

// ServeHTTP records the request, then answers it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_mock" || strings.HasPrefix(r.URL.Path, "/_mock/") {
		s.introspect(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	_, route := s.mux.Handler(r)
	if route == "" || route == "/" {
		route = unmatched
	}
	sum := sha256.Sum256(body)
	h := Hit{Time: time.Now().UTC(), Method: r.Method, Path: r.URL.Path, Route: route,
		BodySHA256: hex.EncodeToString(sum[:]), Capability: r.Header.Get("X-UAPK-Capability")}
	for name := range r.Header {
		if strings.HasPrefix(name, "X-Uapk-") && name != "X-Uapk-Capability" {
			h.LeakedUAPK = append(h.LeakedUAPK, name)
		}
	}
	slices.Sort(h.LeakedUAPK)
	s.mu.Lock()
	s.stats.Total++
	s.stats.ByRoute[route]++
	if len(h.LeakedUAPK) > 0 {
		s.stats.LeakedUAPKHeaders++
	}
	if len(s.hits) == maxHits {
		s.hits = s.hits[1:]
	}
	s.hits = append(s.hits, h)
	s.mu.Unlock()

	sw := &mockhttp.StatusWriter{ResponseWriter: w, Status: http.StatusOK}
	switch {
	case err != nil:
		writeError(sw, http.StatusBadRequest, "bad_body", "reading request body: "+err.Error())
	case len(body) > maxBody:
		writeError(sw, http.StatusRequestEntityTooLarge, "too_large", "request body over 1 MiB")
	default:
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.mux.ServeHTTP(sw, r)
	}
	if s.Logger != nil {
		warn := ""
		if len(h.LeakedUAPK) > 0 {
			warn = " !! LEAKED X-UAPK HEADERS: " + strings.Join(h.LeakedUAPK, ",")
		}
		if _, branch, ok := strings.Cut(r.URL.Path, "/git/refs/heads/"); ok && r.Method == http.MethodPatch && Protected(branch) {
			warn += " !! PROTECTED BRANCH PUSH REACHED THE HOST"
		}
		s.Logger.Printf("%s %s -> %d route=%q capability=%t%s", r.Method, r.URL.Path, sw.Status, route, h.Capability != "", warn)
	}
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByRoute = make(map[string]int, len(s.stats.ByRoute))
	for k, v := range s.stats.ByRoute {
		st.ByRoute[k] = v
	}
	st.MergesByRepo = make(map[string]int, len(s.stats.MergesByRepo))
	for k, v := range s.stats.MergesByRepo {
		st.MergesByRepo[k] = v
	}
	return st
}

// Hits returns the last 1000 requests received, oldest first.
func (s *Server) Hits() []Hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

// Pull returns a copy of a pull request, if it exists.
func (s *Server) Pull(owner, name string, number int) (Pull, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repos[owner+"/"+name]
	if rp == nil || rp.pulls[number] == nil {
		return Pull{}, false
	}
	return *rp.pulls[number], true
}

// Branch returns the head of a branch, if it exists.
func (s *Server) Branch(owner, name, branch string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repos[owner+"/"+name]
	if rp == nil {
		return "", false
	}
	sha, ok := rp.branches[branch]
	return sha, ok
}

// Reset forgets every request, counter and repository.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Server) resetLocked() {
	s.stats = Stats{ByRoute: map[string]int{}, MergesByRepo: map[string]int{}}
	s.hits = nil
	s.repos = map[string]*repo{}
	s.commits = 1
}

// repoLocked returns the repository, creating it with main on first use.
func (s *Server) repoLocked(r *http.Request) (string, *repo) {
	key := r.PathValue("owner") + "/" + r.PathValue("repo")
	rp := s.repos[key]
	if rp == nil {
		rp = &repo{branches: map[string]string{"main": InitialCommit}, pulls: map[int]*Pull{}, next: 1}
		s.repos[key] = rp
	}
	return key, rp
}

func (s *Server) newCommitLocked() string {
	s.commits++
	return fmt.Sprintf("%040x", s.commits)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_json", err.Error())
		return false
	}
	return true
}

func (s *Server) createRef(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Ref string `json:"ref"`
		SHA string `json:"sha"`
	}
	if !decode(w, r, &in) {
		return
	}
	name, ok := strings.CutPrefix(in.Ref, "refs/heads/")
	if !ok || name == "" {
		writeError(w, http.StatusUnprocessableEntity, "invalid_ref", `ref must be "refs/heads/NAME"`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, rp := s.repoLocked(r)
	if _, exists := rp.branches[name]; exists {
		writeError(w, http.StatusUnprocessableEntity, "ref_exists", "reference already exists")
		return
	}
	if in.SHA == "" {
		in.SHA = rp.branches["main"]
	}
	rp.branches[name] = in.SHA
	s.stats.BranchesCreated++
	writeJSON(w, http.StatusCreated, refJSON(name, in.SHA))
}

func refJSON(name, sha string) map[string]any {
	return map[string]any{"ref": "refs/heads/" + name, "object": map[string]string{"type": "commit", "sha": sha}}
}

func (s *Server) getRef(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, rp := s.repoLocked(r)
	name := r.PathValue("branch")
	sha, ok := rp.branches[name]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such branch")
		return
	}
	writeJSON(w, http.StatusOK, refJSON(name, sha))
}

func (s *Server) pushRef(w http.ResponseWriter, r *http.Request) {
	var in struct {
		SHA   string `json:"sha"`
		Force bool   `json:"force"`
	}
	if !decode(w, r, &in) {
		return
	}
	if in.SHA == "" {
		writeError(w, http.StatusUnprocessableEntity, "invalid_sha", "sha is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, rp := s.repoLocked(r)
	name := r.PathValue("branch")
	if _, ok := rp.branches[name]; !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such branch")
		return
	}
	rp.branches[name] = in.SHA
	s.stats.Pushes++
	if Protected(name) {
		s.stats.ProtectedPushes++
	}
	writeJSON(w, http.StatusOK, refJSON(name, in.SHA))
}

func (s *Server) openPull(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Title  string `json:"title"`
		Head   string `json:"head"`
		Base   string `json:"base"`
		Body   string `json:"body"`
		Author string `json:"author"`
	}
	if !decode(w, r, &in) {
		return
	}
	if in.Base == "" {
		in.Base = "main"
	}
	if in.Author == "" {
		in.Author = "coding-agent"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key, rp := s.repoLocked(r)
	if _, ok := rp.branches[in.Head]; !ok || in.Head == "" {
		writeError(w, http.StatusUnprocessableEntity, "invalid_head", "head must be an existing branch")
		return
	}
	if _, ok := rp.branches[in.Base]; !ok || in.Base == in.Head {
		writeError(w, http.StatusUnprocessableEntity, "invalid_base", "base must be another existing branch")
		return
	}
	p := &Pull{Number: rp.next, Title: in.Title, State: "open", Head: in.Head, Base: in.Base,
		User: User{Login: in.Author}, Repo: key, CreatedAt: time.Now().UTC()}
	rp.pulls[p.Number] = p
	rp.next++
	s.stats.PullsOpened++
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) pull(w http.ResponseWriter, r *http.Request) (string, *repo, *Pull) {
	n, err := strconv.Atoi(r.PathValue("number"))
	key, rp := s.repoLocked(r)
	if err != nil || rp.pulls[n] == nil {
		writeError(w, http.StatusNotFound, "not_found", "no such pull request")
		return key, rp, nil
	}
	return key, rp, rp.pulls[n]
}

func (s *Server) getPull(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, p := s.pull(w, r); p != nil {
		writeJSON(w, http.StatusOK, p)
	}
}

func (s *Server) merge(w http.ResponseWriter, r *http.Request) {
	var in struct {
		CommitTitle string `json:"commit_title"`
		MergeMethod string `json:"merge_method"`
		SHA         string `json:"sha"`
	}
	if r.ContentLength != 0 && !decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key, rp, p := s.pull(w, r)
	if p == nil {
		return
	}
	if p.Merged || p.State != "open" {
		writeError(w, http.StatusMethodNotAllowed, "not_mergeable", "pull request is not open")
		return
	}
	if in.SHA != "" && in.SHA != rp.branches[p.Head] {
		writeError(w, http.StatusConflict, "head_moved", "head branch was modified; review and try the merge again")
		return
	}
	sha := s.newCommitLocked()
	rp.branches[p.Base] = sha
	p.Merged, p.State, p.MergeCommit = true, "closed", sha
	s.stats.Merges++
	s.stats.MergesByRepo[key]++
	writeJSON(w, http.StatusOK, map[string]any{"merged": true, "sha": sha, "message": "Pull Request successfully merged"})
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	mockhttp.Introspect(w, r, func() any { return s.Stats() }, func() any { return s.Hits() }, s.Reset)
}

func writeJSON(w http.ResponseWriter, status int, v any) { mockhttp.WriteJSON(w, status, v) }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	mockhttp.WriteError(w, status, code, msg)
}
