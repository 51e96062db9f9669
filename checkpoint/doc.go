// Package checkpoint writes and reads the archive's signed checkpoints
// (docs/reference.md#archive): a statement by the gateway key that a chain's
// record Size has hash Hash, in the C2SP tlog-checkpoint layout
// (https://c2sp.org/tlog-checkpoint) wrapped in a C2SP signed note
// (https://c2sp.org/signed-note):
//
//	<origin>\n
//	<size: the last seq, decimal>\n
//	<base64 (std, padded) of the 32 bytes of that record's hash>\n
//	\n
//	— <origin> <base64 of key hash (4 bytes) || Ed25519 signature>\n
//
// The hash is base64 as tlog-checkpoint requires, not the hex used in
// records: base64.StdEncoding.DecodeString of line 3, hex-encoded, is the
// record's "hash". The chain is not a Merkle tree, so "root hash" here is
// simply the head hash, which commits to every record before it. There are
// no extension lines. The key name is the origin and the signer the
// gateway's Ed25519 key, so any signed-note tool can check a checkpoint
// with the verifier key from VerifierKey.
//
// The archiver signs one per sealed segment; the archive's verification
// opens them, and an evidence export signs the live head in the same
// format when no archived checkpoint covers its range. Signing and opening
// are golang.org/x/mod/sumdb/note's.
package checkpoint
