// Package ledger is uapk-proxy's audit trail: an append-only, SHA-256
// hash-chained list of records in a bbolt file (DATA/ledger.db), one record
// for every decision the proxy makes, durable before anything is forwarded.
//
// # Record format
//
// A record is the JSON object of CONTRACT §5 (see Record): v, seq, time,
// kind, app, action, decision, reason, approval_id, digest, policy, data,
// prev and hash, every field always present. time is UTC with nine
// fractional digits (TimeLayout) and never goes backwards; numbers are
// integers within ±(2^53-1), never floats (amounts are decimal strings).
//
//	hash = hex(SHA-256( hexdecode(prev) || JCS(record without "hash") ))
//
// where JCS is RFC 8785 canonical JSON and prev of record 1 is ZeroHash.
// The file stores each record as the JCS form of the whole record, hash
// included, under its 8-byte big-endian seq in bucket BucketRecords; the
// head (seq, hash, time of the last record) is in bucket BucketMeta under
// "head". testdata/kat.jsonl holds known-answer records that any other
// implementation can check itself against.
//
// # Canonical form
//
// The writer produces RFC 8785 itself (canonical.go) instead of marshalling
// and re-parsing: a record's members are fixed, so their order is too, and
// Entry.Data admits only values whose canonical form is plain (strings,
// integers within ±(2^53-1), bools, null, arrays, objects with keys in
// UTF-16 order). The entry is encoded on the caller's goroutine before
// queuing; inside the write transaction the writer only splices in seq,
// time and prev, hashes, and inserts hash. Verification does not use this
// encoder: it re-derives everything with github.com/gowebpki/jcs, an
// independent implementation, and FuzzCanonicalMatchesJCS holds the two to
// the same bytes.
//
// # Durability and group commit
//
// Append returns only after the record's bbolt transaction has committed and
// been fsynced. One writer goroutine owns all writes: it takes every entry
// queued at that moment (never waiting for more) and writes them in one
// transaction with one fsync, reading the head inside that transaction.
// Under load, requests arriving during one fsync share the next. An entry's
// Tx hook runs in the same transaction, so state kept beside the chain
// (approvals, spent tokens) commits or vanishes with its record; if a hook
// fails, that entry alone fails and the others are written again without it,
// so no seq is consumed and the chain keeps no gap. Hooks may therefore run
// more than once and must have no effect outside the transaction. A failed commit
// makes Healthy report an error until a later commit succeeds; callers must
// then refuse to forward (fail closed).
//
// # Verification
//
// Verify and Verifier re-derive everything from the stored bytes and trust
// nothing the writer recorded about them: each record must be canonical JSON
// with exactly the §5 fields and types, seq contiguous and equal to its key,
// prev equal to the previous hash, hash re-computed, time non-decreasing. For
// the bbolt file the stored head must be the last record, which catches a cut
// tail. The report names the first bad seq and a stable Reason* code. A
// chain cut short with its head rewritten to match is still a valid shorter
// chain: only a head known from outside (a signed checkpoint, an archived
// segment) passed as an anchor can expose it.
//
// # Archive
//
// An Archiver (archive.go) copies the chain, in sealed segments, to a WORM
// store: an S3 bucket with Object Lock, or DATA/archive without S3. A
// segment is records FIRST..LAST, one stored record a line, "\n" after
// each, under PREFIX/APP/segments/FIRST-LAST.jsonl (20-digit seqs); its
// signed checkpoint (checkpoint.go, a C2SP signed note) is under
// PREFIX/APP/checkpoints/LAST. In S3 every object is written with
// If-None-Match "*", an explicit SHA-256 checksum and its own Object Lock
// retention; an object already there with the same bytes is success, with
// other bytes an alarm (ErrArchiveConflict), never an overwrite. Each
// segment is then recorded in the chain by a checkpoint record and an
// archive record, whose Tx hook moves the archived position (bucket
// BucketArchive) in the same transaction. The segment to seal is fixed in
// bbolt before its upload, so a seal cut short anywhere is redone with the
// same key and bytes: no gap, no duplicate. The archiver only reads
// committed records and appends like any caller, so an outage never blocks
// requests; Status reports the backlog. VerifyArchive checks an archive
// against the local chain for `verify --archive`.
package ledger
