//go:build unix

package main

import "syscall"

// raiseNofile lifts this process's soft RLIMIT_NOFILE to its hard limit and
// returns the new limit. Setting it explicitly (rather than relying on the Go
// runtime's own raise at start) makes child processes inherit it: os/exec
// restores the original soft limit in children only while the program has
// never called syscall.Setrlimit for RLIMIT_NOFILE.
func raiseNofile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return uint64(lim.Cur), nil
}
