// Package deploy holds the tests of the Kubernetes manifests under sidecar/
// and fleet/.
//
// It is a Go module of its own, so that the Kubernetes API types and
// kustomize stay out of the proxy's dependencies. The tests build every
// kustomization with the kustomize library (the same code as kubectl -k),
// decode each resulting object strictly into the Kubernetes API types
// (an unknown or misspelt field is an error), and check the properties the
// deployment relies on: the native sidecar, its probes and security
// context, the NetworkPolicy's selection, the policy manifest equal to
// examples/manifests/sox-financial.json, and who in the pod can read what:
// the ERP credential (upstream_auth, the proxy container only), the admin
// tokens (hashes for the proxy, no token for the agent), the data volume,
// and probes that need no token. For fleet/ (fleet_test.go) it checks the
// hubs (uapk-proxy hub, no doors, the proxies' admin tokens, their probes,
// Service and NetworkPolicy), and that the PostgreSQL password comes from
// the Secret uapk-proxy-postgres only, as the PostgreSQL driver reads it.
//
//	cd deploy && go test ./...
package deploy
