// Package testbin finds the real servers the tests run (MinIO, mailpit),
// installed by the Makefile into bin/ at the module root.
package testbin

import (
	"errors"
	"os"
	"path/filepath"
)

// Path returns $env when set, else bin/name at the root of the module the
// working directory is in.
func Path(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin", name), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
