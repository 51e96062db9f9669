//go:build linux || darwin || freebsd || netbsd || openbsd

package ledger

import (
	"os"
	"path/filepath"
	"syscall"
)

// freeBytes is what statfs says unprivileged writers may still use in
// dir's file system; -1 if it cannot tell.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize) //nolint:unconvert // field types differ between systems
}

// mountPoint is the highest directory above dir on the same device.
func mountPoint(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	dev := func(p string) (uint64, bool) {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return 0, false
		}
		return uint64(st.Dev), true //nolint:unconvert // int32 on some systems
	}
	d, ok := dev(abs)
	if !ok {
		return abs
	}
	for {
		up := filepath.Dir(abs)
		if up == abs {
			return abs
		}
		if ud, ok := dev(up); !ok || ud != d {
			return abs
		}
		abs = up
	}
}
