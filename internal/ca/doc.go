// Package ca is this install's own certificate authority for HTTPS
// interception on the forward door (docs/reference.md#ca-init, `--ca-dir`).
//
// # Files
//
// Init writes DIR/ca.pem (the certificate, 0644: clients are given it to
// trust) and DIR/ca.key (PKCS#8 PEM, 0600) and never overwrites either: a CA
// that clients already trust is not replaced behind their back. Load reads
// them back and refuses a key that others can read, a key that does not
// match the certificate, or a certificate that is not a CA or has expired.
//
// # Keys
//
// The CA and every leaf use ECDSA P-256: every TLS client in use (curl,
// Python, Node, Go, browsers) accepts it, and signing is cheap, which
// matters because a leaf is minted for each new host a client tunnels to.
//
// # Leaves
//
// Authority.Leaf mints a certificate for one host name or IP address (the
// target of a CONNECT), valid for LeafValidity, and keeps it in a bounded
// LRU cache. Concurrent first requests for one host share one signing.
//
// goproxy's built-in CA is never used: its private key is public.
package ca
