package pgstore

import "errors"

// Sentinel errors. Match them with errors.Is: they are wrapped with the
// approval id and the record's seq. The approvals package's own (ErrNotFound,
// ErrConsumed, ErrNotApproved, ErrOverrideExhausted, ErrPasskeyReplayed) are
// returned as every store returns them.
var (
	// ErrNotTaken: the ledger record of a change is durable but PostgreSQL
	// did not take the change (its commit failed after the record). The
	// record tells of a change that did not happen; the approval is as it
	// was, which for a Release means still consumed: fail closed.
	ErrNotTaken = errors.New("ledger record written but the change did not commit in PostgreSQL")

	// ErrOutcomeUnknown: the ledger record is durable and PostgreSQL's
	// answer to the commit was lost, and reading the row back failed too,
	// so whether the change took effect is not known.
	ErrOutcomeUnknown = errors.New("ledger record written; whether PostgreSQL took the change is unknown")

	// ErrStranded: Consume claimed the approval in PostgreSQL, its record
	// could not be written, and giving the claim back failed as well. The
	// approval stays unusable (nothing was let through) until an operator
	// releases it; the row names the claim (consumed_claim, no
	// consumed_record).
	ErrStranded = errors.New("approval claimed without a ledger record, and the claim could not be given back")

	// ErrStoreOwned: an Update change function altered what only Consume,
	// UseOverride and Release change (the approval's id, Consumed, Uses).
	ErrStoreOwned = errors.New("an approval change may not alter its id, consumed record or uses")

	// ErrSchemaNewer: the database was migrated by a newer proxy than this
	// one; it refuses to run on a schema it does not know.
	ErrSchemaNewer = errors.New("database schema is newer than this proxy")

	// ErrMigrationChanged: a migration applied to the database differs
	// from the one of the same version this proxy carries.
	ErrMigrationChanged = errors.New("an applied schema migration differs from this proxy's")
)
