package testbin

import (
	"os"
	"os/exec"
	"time"
)

// Stop ends a test server: the stop signal (SIGTERM on Linux), then a
// kill after 10 s; it returns once exit, closed when the process has been
// waited for, is closed.
func Stop(p *os.Process, exit <-chan struct{}) {
	_ = p.Signal(sigterm)
	select {
	case <-exit:
	case <-time.After(10 * time.Second):
		_ = p.Kill()
		<-exit
	}
}

// DieWithParent makes cmd's process die when the test binary does (on
// Linux), even without its cleanups (a timeout panic, a kill): no server
// outlives its test.
func DieWithParent(cmd *exec.Cmd) { setPdeathsig(cmd) }
