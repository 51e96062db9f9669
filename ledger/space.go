package ledger

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// NoSpaceError is a write to the ledger's file that failed because its
// volume is full. Its message says what the operator must do.
type NoSpaceError struct {
	Path   string // the ledger file
	Volume string // the mount point it is on, as far as it could be found
	Free   int64  // bytes free for unprivileged writers; -1 if unknown
	Err    error  // the error as it came (wraps ENOSPC or EDQUOT)
}

func (e *NoSpaceError) Error() string {
	free := "free space unknown"
	if e.Free >= 0 {
		free = fmt.Sprintf("%d bytes free", e.Free)
	}
	return fmt.Sprintf("no space left on device writing %s (%s on %s); free space on that volume and start again",
		e.Path, free, e.Volume)
}

func (e *NoSpaceError) Unwrap() []error { return []error{ErrNoSpace, e.Err} }

// SpaceError returns err as a *NoSpaceError for the ledger file path when
// it wraps ENOSPC or EDQUOT, and err unchanged otherwise (nil stays nil).
// Other stores writing the ledger's file through DB can use it too.
func SpaceError(path string, err error) error {
	if err == nil || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	var ne *NoSpaceError
	if errors.As(err, &ne) {
		return err
	}
	dir := filepath.Dir(path)
	return &NoSpaceError{Path: path, Volume: mountPoint(dir), Free: freeBytes(dir), Err: err}
}
