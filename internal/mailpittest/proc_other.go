//go:build !linux

package mailpittest

import (
	"os"
	"os/exec"
)

var sigterm = os.Interrupt

func setPdeathsig(*exec.Cmd) {}
