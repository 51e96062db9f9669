// Package deploy holds the tests of the Kubernetes manifests under sidecar/.
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
// and probes that need no token.
//
//	cd deploy && go test ./...
package deploy
