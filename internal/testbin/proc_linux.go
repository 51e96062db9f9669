package testbin

import (
	"os/exec"
	"syscall"
)

var sigterm = syscall.SIGTERM

func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
