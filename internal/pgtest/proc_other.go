//go:build !linux

package pgtest

import "os/exec"

type owner struct{ uid, gid int }

func setProc(*exec.Cmd, *owner) {}

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
