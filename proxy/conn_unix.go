//go:build unix

package proxy

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// connGone reports whether the peer of c has closed its end, without
// consuming anything it may have sent: a MSG_PEEK read that returns 0 bytes
// is an orderly shutdown, a reset is an error, no data yet is EAGAIN.
func connGone(c net.Conn) bool {
	if tc, ok := c.(*trackedConn); ok {
		c = tc.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == nil && n == 0:
			gone = true
		case rerr != nil && !errors.Is(rerr, syscall.EAGAIN) && !errors.Is(rerr, syscall.EINTR):
			gone = true
		}
		return true // never park: this is a probe
	})
	// A deadline passed is not the peer going: the probe did not run.
	return gone || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded))
}
