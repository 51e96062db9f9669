package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// Fdatasync flushes f's data, and its metadata only where reading the data
// back needs it (a size change): on a file whose blocks were all written
// beforehand, that is the data alone.
func Fdatasync(f *os.File) error {
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
