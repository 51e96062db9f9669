//go:build !linux

package durablefloor

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
