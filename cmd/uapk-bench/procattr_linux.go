package main

import (
	"os/exec"
	"syscall"
)

// setChildProc has the kernel stop a child (proxy, hub) with SIGTERM if the
// bench dies without its cleanups, so that none outlives it.
func setChildProc(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
