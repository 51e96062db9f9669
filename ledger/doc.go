// Package ledger is uapk-proxy's audit trail: an append-only, SHA-256
// hash-chained list of records in a bbolt file (DATA/ledger.db), one record
// for every decision the proxy makes, durable before anything is forwarded.
// It is the writer; checking a chain is package verifier's work, and
// copying it to WORM storage package archive's.
//
// # Record format
//
// A record is the JSON object of docs/reference.md#records (see Record): v,
// seq, time, kind, app, action, decision, reason, approval_id, digest,
// policy, data, prev and hash, every field always present. Kinds, decision
// words and reason codes are package record's. time is UTC with nine
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
// encoder: package verifier re-derives everything with
// github.com/gowebpki/jcs, an independent implementation, and
// FuzzCanonicalMatchesJCS holds the two to the same bytes.
//
// # Durability and group commit
//
// Append returns only after the record is durable. One writer goroutine
// owns all writes: when an Append is queued it takes every entry queued at
// that moment (never waiting for more) and makes them durable together.
// Under load, requests arriving during one sync share the next. Only
// AppendAsync entries with no Append behind them wait, up to lazyDelay.
//
// A group becomes durable in the journal (journal.go, DATA/ledger.db-journal):
// one frame written into a file whose blocks all exist, then one fdatasync.
// An applier goroutine copies journaled records into bbolt every
// applyDelay, hundreds to a commit; a reader that needs a record not yet
// there applies it first, so every reader sees bbolt only and sees a record
// as soon as its Append returned. Open applies whatever the journal holds
// beyond bbolt's head before anything else, refusing records that do not
// continue the chain. AppendAsync entries (forward records) may wait
// lazyDelay for the next group, so that a lone agent's request costs one
// sync; a crash loses at most those, and Recover answers for them.
//
// An entry with a Tx hook runs in a bbolt transaction instead, with every
// journaled record before it, so state kept beside the chain (approvals,
// spent tokens, the archive's position) commits or vanishes with its
// record; if a hook fails, that entry alone fails and the others are
// written again without it, so no seq is consumed and the chain keeps no
// gap. Hooks may therefore run more than once and must have no effect
// outside the transaction. Outcome records, which read BucketForwardPending,
// go the same way. A failed write (or apply) makes Healthy report an error
// until a later one succeeds; callers must then refuse to forward (fail
// closed).
//
// # Reading
//
// Get, Range and Scan copy records out of short read transactions (at most
// 10,000 records or 8 MiB each), so a reader never holds up the writer's
// remap of a growing file. Scan hands over the raw keys and the stored head
// as well; ScanBatches does the same a transaction at a time, in one buffer,
// and is what verifier.Verify reads the file through, for `uapk-proxy
// verify --data-dir` and GET /v1/ledger/verify. RangeBorrow lends the
// file's own bytes to a callback inside the transaction (the archiver's
// one copy). Open with Options.ReadOnly for offline tools; it fails fast
// (ErrLocked) while a proxy holds the file, and serves the records a killed
// proxy left only in the journal after ledger.db's, checked as a start
// checks them, without writing either file (Behind counts them).
package ledger
