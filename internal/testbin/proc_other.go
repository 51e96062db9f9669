//go:build !linux

package testbin

import (
	"os"
	"os/exec"
)

var sigterm = os.Interrupt

func setPdeathsig(*exec.Cmd) {}
