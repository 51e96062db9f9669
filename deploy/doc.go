// Package deploy holds the tests of the Kubernetes manifests under sidecar/.
//
// It is a Go module of its own, so that the Kubernetes API types and
// kustomize stay out of the proxy's dependencies. The tests build every
// kustomization with the kustomize library (the same code as kubectl -k),
// decode each resulting object strictly into the Kubernetes API types
// (an unknown or misspelt field is an error), and check the properties the
// deployment relies on: the native sidecar, its probes and security
// context, the NetworkPolicy's selection, and the policy manifest equal to
// examples/manifests/sox-financial.json.
//
//	cd deploy && go test ./...
package deploy
