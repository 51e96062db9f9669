// Package pgstore is the shared approvals store: approvals.Store on
// PostgreSQL, for a fleet of proxies over one approval queue, each proxy
// keeping its own local hash-chain ledger.
//
// # No shared transaction
//
// The embedded store commits each change and its ledger record in one
// bbolt transaction. Here the record goes to the local ledger and the
// change to PostgreSQL, and no transaction spans both. Each operation is
// therefore ordered so that whatever fails, and at whatever moment, the
// fleet ends on the closed side: nothing is let through, or becomes
// usable, without its record; single use is decided by PostgreSQL's row
// locks and conditional updates, never by a proxy's memory.
//
// # Record first, under the row lock: Create, Update, Release
//
//  1. BEGIN; lock the row (Create inserts it, unseen until commit; Update
//     and Release SELECT ... FOR UPDATE it). Update runs change on a copy
//     with a provisional record (seq 0) to learn which passkeys the new
//     decision shows and locks their counter rows too, in credential order.
//  2. Append the record to the local ledger. Update's hook, inside the
//     ledger's transaction, runs change again on a fresh copy with the real
//     record and applies the passkey counter rule against the locked rows:
//     a refusal (change's error, ErrPasskeyReplayed) writes no record.
//  3. Write the approval (and raised counters), NOTIFY, COMMIT, on the
//     store's own deadline, never the caller's.
//
// Failures: before 2 nothing is written anywhere. A failed append rolls
// back: nothing. A commit that fails after the record (PostgreSQL gone at
// that moment) leaves a record of a change that did not happen: Update and
// Create return ErrNotTaken with the record's seq, and the approval is as
// it was, which is the closed side (no approval without its request
// record, no decision counted, a Release's approval still consumed). A
// commit whose answer is lost is told apart by reading the row's
// last_change nonce back; if that read fails too the error is
// ErrOutcomeUnknown. A crash between 2 and 3 is the same as a failed
// commit: PostgreSQL rolls the open transaction back. The ledger then
// holds a record with no effect; no compensating record kind exists yet
// (it belongs to the record package), so the store logs it at error level
// with the seq and returns the error.
//
// # Claim first: Consume, UseOverride
//
// A use lets a request through, so a record of a use must never exist
// twice for one approval across the fleet's ledgers, which the record-
// first order cannot promise (a commit lost after the record would leave
// the approval usable by another proxy). Instead:
//
//  1. Claim in PostgreSQL, committed: Consume locks the row, applies
//     approvals.CheckConsume, inserts the token into tokens_used and marks
//     the row consumed by (instance, token, claim nonce) with no record
//     yet; UseOverride raises uses by one conditional update (status
//     approved, this token, uses < max_uses), so the last use goes to one.
//  2. Append the record (any hook the entry has, such as a cumulative cap
//     charge, runs in the ledger's transaction and can still refuse).
//  3. Consume writes the record's seq back to the row and tokens_used.
//
// Failures: a refused claim writes nothing. A failed append gives the
// claim back (compensation), so the approval is usable again; if that
// fails too the approval stays claimed without a record (ErrStranded,
// logged): unusable, never used twice, released by an operator. A crash
// between 1 and 2 leaves the same stranded claim. A claim whose commit
// answer is lost is read back by its nonce. A failed write-back (3) leaves
// the use in effect with its record: the approval reads as consumed by
// Unrecorded, and its proxy can still Release it. Between 1 and 3 other
// proxies see the approval consumed; a racer refused while a failed use
// gives its claim back was refused conservatively. A lost override use
// (crash between 1 and 2) costs one of max_uses.
//
// # Where the records are
//
// Every record is in the ledger of the proxy that made the change: the
// request record at the proxy that held it (request_instance), a decision
// at the proxy whose desk took it, a use at the proxy that let the request
// through (consumed_instance). Approval.Consumed and Decision.Record are
// seqs in those ledgers; the fleet's audit is the union of its ledgers.
//
// # Watching
//
// Every committed change is announced with NOTIFY on Channel, payload the
// approval id. Watch LISTENs on a connection of its own, reconnects with
// backoff, and polls Changed (changed_at, the database's clock, with an
// overlap) so that a missed notification is caught within a poll
// interval.
//
// # Schema
//
// The migrations in migrations/ are embedded, applied at Open in one
// transaction under an advisory lock, and recorded with their SHA-256 in
// uapk_schema_migrations. A database migrated by a newer proxy, or whose
// applied migration differs from this proxy's, is refused.
package pgstore
