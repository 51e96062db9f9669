package ledger

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync flushes f's data, and its metadata only where reading the data
// back needs it (a size change): on the journal, whose blocks all exist,
// that is the data alone.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}
