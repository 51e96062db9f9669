package ledger

import "errors"

// Sentinel errors. Match them with errors.Is: they are usually wrapped with
// the path, sequence number or offending field.
var (
	// ErrClosed is returned by Append, AppendAsync and Healthy once Close has
	// been called.
	ErrClosed = errors.New("ledger closed")

	// ErrLocked is returned by Open when another process (normally a running
	// proxy) holds the file lock longer than Options.LockTimeout. Offline
	// tools should tell the user to stop the proxy or use the admin API.
	ErrLocked = errors.New("ledger file is locked by another process (is the proxy running?)")

	// ErrReadOnly is returned by Append, AppendAsync and Healthy on a ledger
	// opened with Options.ReadOnly.
	ErrReadOnly = errors.New("ledger opened read-only")

	// ErrFloat is returned by Append when Entry.Data holds a float32 or
	// float64 anywhere: records carry only integers and decimal strings
	// (docs/reference.md#records), and floats do not survive
	// canonicalization byte for byte.
	ErrFloat = errors.New("floating-point value in ledger data")

	// ErrInvalidEntry is returned by Append for an entry that can never be
	// recorded: an unknown kind, a value of a type JSON cannot carry exactly,
	// an integer outside ±(2^53-1), invalid UTF-8, or nesting too deep. It is
	// the caller's fault, not the ledger's: doors should answer 4xx or fix the
	// caller, not report the ledger unavailable.
	ErrInvalidEntry = errors.New("invalid ledger entry")

	// ErrNotFound is returned by Get for a sequence number with no record.
	ErrNotFound = errors.New("ledger record not found")

	// ErrCorrupt is returned when the stored head and the stored records
	// disagree (for example a truncated tail). The writer refuses to extend
	// such a chain; run Verify to find the first bad record.
	ErrCorrupt = errors.New("ledger is corrupt")

	// ErrCommitInFlight is returned by Append of a request or override
	// record when its context ended while the commit of its entry was in
	// flight: the caller was not told the
	// record is durable and must act as if it was not written. The record
	// may still be committed; an allow record then gets its outcome
	// record (not_forwarded).
	ErrCommitInFlight = errors.New("ledger commit still in flight at the caller's deadline")

	// ErrStuck is returned by Healthy while a write transaction has been
	// in flight longer than Options.StuckAfter.
	ErrStuck = errors.New("ledger stuck")

	// ErrNoSpace is matched (errors.Is) by a write that failed because the
	// ledger's volume is full (ENOSPC, EDQUOT); the error is a
	// *NoSpaceError naming the file and the free bytes.
	ErrNoSpace = errors.New("no space left on device")

	// errNotOpen fails an outcome record whose request has its forward or
	// outcome record already: it is never written.
	errNotOpen = errors.New("request has its forward or outcome record already")
)
