// Package record names what the ledger's records say: the kinds of record,
// the decision words, every reason code, and the typed data each kind
// carries. It is a leaf: it imports only the standard library, so the
// writers (gate, approvals, archive, server), the offline verifier and the
// evidence bundle all speak of records in the same words, and a reason code
// is written out in exactly one place.
//
// # Writing
//
// A writer fills the typed data of its kind and stores Data.Map() in the
// ledger entry. Map omits the members a record of that shape never had, so
// records stay exactly as docs/reference.md ("Records") lays them out.
//
// # Reading
//
// The same types decode a record's data member with encoding/json. A
// member of an unexpected JSON type is an error for the caller to judge:
// the chain check has already vouched for the bytes.
package record
