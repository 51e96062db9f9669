//go:build !unix

package main

import "errors"

func raiseNofile() (uint64, error) {
	return 0, errors.New("held mode needs a unix RLIMIT_NOFILE and /proc")
}
