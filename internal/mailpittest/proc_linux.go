package mailpittest

import (
	"os/exec"
	"syscall"
)

var sigterm = syscall.SIGTERM

// setPdeathsig kills mailpit if the test binary dies without its cleanups
// (a timeout panic, a kill): no server outlives its test.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
