// Package verifier checks a hash chain of ledger records
// (docs/reference.md#records) from its bytes alone. It is the chain's fsck:
// code of its own that trusts nothing the writer says and borrows nothing
// from it (package ledger is never imported). It parses times, decodes
// hashes and canonicalises records itself, with github.com/gowebpki/jcs, an
// RFC 8785 implementation independent of the writer's encoder, and knows
// record kinds from the leaf package record.
//
// # Fast path
//
// Re-deriving every record's canonical form with jcs is most of what a check
// would cost. So a scanner of the verifier's own (canonical.go, not the
// writer's encoder) first tries to prove in one pass that a record's bytes
// already are their RFC 8785 form with every field as the checks want it;
// the bytes hashed are then the stored ones less the "hash" member. Anything
// it is not sure of goes to jcs, which alone words a refusal, and a
// differential fuzz test (FuzzFastMatchesSlow) holds the two paths to the
// same verdict and the same bytes. Verify and VerifyRecords check records
// in batches on every core and link the chain in order, so the report is
// the one a single Verifier fed record by record gives.
//
// # What it checks
//
// Each record must be RFC 8785 canonical JSON with exactly the record's
// members and types, v 1, a known kind, a time in UTC with nine fractional
// digits, data whose numbers are integers within ±(2^53-1), prev and hash
// of 64 lower-case hex digits. Across records: seq contiguous from the
// start, prev equal to the previous record's hash, hash re-computed as
//
//	hash = hex(SHA-256( hexdecode(prev) || JCS(record without "hash") ))
//
// and time never going back. A stored chain (Verify) also has each record
// under its 8-byte big-endian seq and a stored head that must be its last
// record, which catches a cut tail. The report names the first bad seq and
// a stable Reason* code.
//
// # Anchors
//
// A chain cut short with its head rewritten to match is still a valid
// shorter chain: only a head known from outside (a signed checkpoint, an
// archived segment) passed as an anchor can expose it. The record at an
// anchor's seq must carry the anchor's hash, and the chain must reach it.
//
// # Where records come from
//
// A Verifier takes one record at a time (Add, or AddKeyed for a key-value
// store), so it checks an evidence bundle's records.jsonl, an admin API
// page or an archived segment as well as the bbolt file. Verify reads a
// Store, which ledger.Ledger is: `uapk-proxy verify --data-dir` opens the
// file read-only through package ledger and hands it here.
package verifier
