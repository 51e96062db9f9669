// Package evidence makes and checks the evidence bundle
// (docs/reference.md#evidence-bundle): the ZIP an auditor takes away, years
// later, to see what the AI agent asked, who approved it, and that the trail
// is whole.
//
// # Layout
//
// Entries in byte order, each Deflate-compressed, mode 0644, all with the
// same time (the range's last record time, to the second):
//
//	SHA256SUMS            "<sha256>  <path>\n" for every other file, sorted: sha256sum -c works
//	SHA256SUMS.sig        base64 Ed25519 by the gateway key over SHA256SUMS
//	anchor.json           the prev of the first record, first/last seq, hash and time, and the signed head that covers the range
//	approvals.json        every approval the range's records name, with each signed statement and its exact text (a passkey's: its WebAuthn assertion whole, with the relying party required)
//	control-mapping.json  SOX 302/404/802, SOX ITGC change management and ISO 27001 A.9/A.12: mechanism, settings in force, evidence (seqs, counts, jq selectors)
//	control-mapping.md    the same for people
//	keys/gateway.pub      PKIX PEM
//	keys/principals.json  ids, roles, PEM public keys and passkeys in force, each with the config records it was in force between
//	manifest.json         each manifest in force, byte for byte, with the policy hash records name it by
//	records.jsonl         the range's records exactly as stored, one per line
//	report.html           one self-contained page: period, totals, overrides, rejections, chain status, a table per control
//
// # Anchor
//
// The range is joined to the chain by the prev of its first record, and
// covered by a signed head: the archive's latest checkpoint (a C2SP signed
// note by the gateway key, as checkpoint.Sign writes and the archiver
// records in checkpoint records) when its seq is at least the
// range's last, else the chain's head signed by the gateway key at export
// (anchor.json says "archive" or "live_head"). The latest covering
// checkpoint, as the bundle's definition asks, rather than the first: it is the one an
// auditor can fetch from the WORM store today. When it signs a later record
// than the range's last, the archived segments between link the two.
//
// # Determinism
//
// The same range of the same ledger gives the same bytes: sorted entries,
// fixed times and modes, JSON with fixed member order, no wall-clock time
// anywhere, Ed25519 and flate being deterministic. What can change a later
// export of the same range is outside the range: a newer covering
// checkpoint, a live head that moved (a live export), or other export
// options.
//
// # Bounded reading
//
// Prepare reads the range once through Source.Range (and the records
// before it for their config records, see Principals), which reads in short
// bounded transactions (ledger.Range: at most 10,000 records, 8 MiB each),
// so that a proxy appending meanwhile never waits behind the export; it
// hashes records.jsonl on the way and keeps only counts, seq runs and
// detail rows up to fixed limits. It also compresses records.jsonl as it
// reads it, on a goroutine of its own, into a spool (a temporary file past
// 8 MiB) that Write copies into the ZIP: the entry is byte for byte the one
// compressing it in Write would give, from the very bytes hashed. Only a
// records.jsonl of 4 GiB or more (whose ZIP64 headers archive/zip decides
// as it writes) is read again by Write, which refuses (ErrChanged) if the
// bytes hash differently. Memory does not grow with the range, only with
// the number of approvals it names (their ids; approvals.json itself is
// spooled to a temporary file past 8 MiB).
//
// Prepare re-hashes each record from its prev and its bytes (linkCheck);
// Verify runs the full chain verifier (package verifier), which also
// re-derives the canonical form and checks every field, in parallel chunks.
// Verify reads records.jsonl once, hashing, prescanning and checking it in
// the same pass (the small files are hashed and read first), and reports
// the same first problem as the checks run one after another would.
//
// # Verification
//
// Verify trusts nothing in a bundle but keys/gateway.pub, whose fingerprint
// it reports for comparison with GET /v1/keys/gateway. It names the first
// problem with a stable code (the Problem* constants), in this order: the
// ZIP, SHA256SUMS.sig, every file against SHA256SUMS, the anchor, the
// manifests, the principals, each approval (digest and signatures), the
// records (chain, policies, decisions against approvals.json, every
// approved release complete), the principals the range's config records
// name, the anchor's signed head, and last the derived files, rebuilt from
// the records and compared byte for byte.
//
// # Principals
//
// The chain carries who could sign: every config record (one at each
// start) names the principals in force from it on, with their keys. An
// export reads every config record up to the range's end, so that a
// statement signed under a key replaced since is still checked against
// that key; keys/principals.json gives each principal's entries with the
// config records they were in force between (none when one set was in
// force throughout, which is the file's form from before the chain carried
// principals). A principals file given with the export stands in only for
// records whose config record names no one, and is refused where it is not
// what the chain says.
package evidence
