// Package archive copies the ledger's chain, in sealed segments, to a WORM
// store, and checks such an archive against the local chain
// (docs/reference.md#archive).
//
// # Layout
//
// The store is an S3 bucket with Object Lock (s3.go), or DATA/archive
// without S3 (local.go). A segment is records FIRST..LAST, one stored record
// a line, "\n" after each, under PREFIX/APP/segments/FIRST-LAST.jsonl
// (20-digit seqs); its signed checkpoint (package checkpoint, a C2SP signed
// note by the gateway key) is under PREFIX/APP/checkpoints/LAST.
//
// # Writing once
//
// In S3 every object is written with If-None-Match "*", an explicit SHA-256
// checksum and its own Object Lock retention; an object already there with
// the same bytes is success, with other bytes an alarm (ErrConflict), never
// an overwrite. Each segment is then recorded in the chain by a checkpoint
// record and an archive record (record.Checkpoint, record.Archive), whose
// Tx hook moves the archived position (bucket Bucket of the ledger's file)
// in the same transaction. The segment to seal is fixed in bbolt before its
// upload, so a seal cut short anywhere is redone with the same key and
// bytes: no gap, no duplicate.
//
// # Never in the way
//
// The archiver only reads committed records and appends like any caller, so
// an outage never blocks requests: records wait in the ledger and go up
// when the store returns. Status reports the backlog; a store without Object
// Lock is refused (ErrRefused) and nothing is written to it.
//
// # Verification
//
// Verify checks an archive against the local chain for
// `uapk-proxy verify --archive`: segments contiguous from record 1, byte for
// byte the local records, a valid chain (package verifier), each with a
// checkpoint signed by one of the gateway keys, and in S3 every object
// under Object Lock long enough. The checkpoints it returns are anchors for
// verifier.Verify of the local chain.
package archive
