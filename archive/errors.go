package archive

import "errors"

// Sentinel errors. Match them with errors.Is: they are wrapped with the key
// or bucket concerned.
var (
	// ErrConflict is the archive's alarm: an object already stored under
	// a segment's or checkpoint's key holds other bytes than the local
	// chain gives for it. The archiver never overwrites it; it stops at
	// that segment and keeps reporting the conflict until an operator looks
	// (a ledger reset over an old archive prefix, or tampering).
	ErrConflict = errors.New("archive conflict: a different object already exists under the key")

	// ErrRefused is returned while the archive store fails the start-up
	// check (an S3 bucket without versioning or Object Lock): the archiver
	// writes nothing there rather than unprotected objects.
	ErrRefused = errors.New("archive store refused")
)
