package pgtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// owner is the OS user the cluster belongs to when we are root.
type owner struct{ uid, gid int }

// setProc runs cmd as o (if set), in a process group of its own, and kills
// it if the test binary dies without its cleanups: no postmaster outlives
// its test (its backends notice and exit).
func setProc(cmd *exec.Cmd, o *owner) {
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if o != nil {
		attr.Credential = &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.gid)}
	}
	cmd.SysProcAttr = attr
}

// killGroup SIGKILLs the postmaster and every process it started, at once,
// as a crash would, and waits until none of its children is running:
// each backend is a session of its own (setsid), so the postmaster's
// process group does not reach them, and a restart refuses to start while
// one is still attached to the old shared memory.
func killGroup(cmd *exec.Cmd) {
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP) // no new child while we look
	kids := children(pid)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for _, k := range kids {
		for running(k) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(string(f[1])); ppid == pid {
			if k, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				out = append(out, k)
			}
		}
	}
	return out
}

// running: pid exists and is not a zombie (a zombie holds no memory).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := bytes.Fields(b[i+1:])
	return len(f) > 0 && string(f[0]) != "Z"
}
