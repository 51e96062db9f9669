//go:build !linux

package miniotest

import (
	"os"
	"os/exec"
)

var sigterm = os.Interrupt

func setPdeathsig(*exec.Cmd) {}
