//go:build !linux

package fsutil

import "os"

// Fdatasync is a full fsync where the system has no fdatasync.
func Fdatasync(f *os.File) error { return f.Sync() }
