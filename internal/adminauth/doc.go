// Package adminauth decides who may call the admin API: bearer tokens, each
// with scopes, checked against their SHA-256 so that the proxy holds no
// token it could leak.
//
// # Where tokens come from
//
// An operator lists tokens in a YAML file (--admin-tokens):
//
//	tokens:
//	  - name: approver-tooling
//	    sha256: 9f86d0...   # hex SHA-256 of the token's bytes
//	    scopes: [read, decide]
//
// Without such a file, the first start writes a random token holding every
// scope to DATA/admin.token (mode 0600) and later starts read it back, so a
// fresh install is locked from its first second and the CLI, run as the
// same user, finds the token beside the ledger.
//
// # Scopes
//
// read: approvals, overrides (without their tokens) and the ledger;
// decide: post approvers' signed decisions; override: ask for overrides and
// read an approved override's token; evidence: export bundles.
//
// # Comparison
//
// A presented token is hashed and compared with every configured hash in
// constant time, all of them, so that neither which token matched nor how
// much of it did shows in the answer's timing.
package adminauth
