package durablefloor

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync flushes f's data: its blocks all exist, so no metadata.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
