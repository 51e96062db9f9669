// Package codehost is a small in-memory code host with a GitHub-like REST
// API, used by the AI-coding walkthrough (docs/ai-coding.md) and its
// end-to-end test: uapk-proxy stands between a coding agent and this host.
//
// # Routes
//
// JSON in, JSON out. A repository exists as soon as a request names it, with
// one branch, main, at a fixed initial commit.
//
//	POST  /repos/{owner}/{repo}/git/refs                 create a branch: {"ref":"refs/heads/NAME","sha":"..."} (sha optional: main's head); 201, or 422 when it exists
//	GET   /repos/{owner}/{repo}/git/refs/heads/{branch}  200 {"ref","object":{"sha"}}, or 404
//	PATCH /repos/{owner}/{repo}/git/refs/heads/{branch}  push: move the branch to {"sha":"..."}; 200, or 404 for a branch that does not exist
//	POST  /repos/{owner}/{repo}/pulls                    open a pull request: {"title","head","base","author"}; 201 {"number":1,"state":"open","user":{"login":AUTHOR},...}
//	GET   /repos/{owner}/{repo}/pulls/{number}           200, or 404
//	PUT   /repos/{owner}/{repo}/pulls/{number}/merge     merge: base moves to a new merge commit; 200 {"merged":true,"sha":...}, 405 when already merged, 404 when there is no such pull request
//
// The author of a pull request is the body's "author", or "coding-agent"
// without one: uapk-proxy removes every X-UAPK-* header, the caller's
// X-UAPK-On-Behalf-Of included, before a request reaches the host.
//
// # Protected branches
//
// main, master and release/* are protected. The host itself accepts a push
// to them, as a host whose agent token has admin rights would; each one that
// arrives is counted in Stats.ProtectedPushes and logged with a PROTECTED
// marker, so that a test can assert the proxy's denylist held.
//
// # Introspection
//
// Outside /repos, and never counted:
//
//	GET  /_mock/stats     Stats as JSON
//	GET  /_mock/requests  the last 1000 requests (Hits) as a JSON array, oldest first
//	POST /_mock/reset     forget every request, counter and repository
//
// A request leaks a UAPK header when it carries any X-UAPK-* header other
// than X-UAPK-Capability.
package codehost
