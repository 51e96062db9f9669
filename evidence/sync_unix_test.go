//go:build unix

package evidence

import "syscall"

// syncDisks flushes every dirty page, so that a benchmark does not time
// the kernel's writeback of what it just built.
func syncDisks() { syscall.Sync() }
