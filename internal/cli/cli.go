// Package cli is the uapk-proxy command line: serve, check, keygen, the
// approver commands, verify, export and ca. cmd/uapk-proxy is only its
// main; the server that serve runs is assembled by internal/server.
package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// version is the binary's version, set by Main.
var version = "dev"

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "uapk-proxy",
		Short:         "Policy, approval and audit ledger for an AI agent's ERP calls",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServe(), newCheck(), newKeygen(), newVerify(),
		newPending(), newShow(), newDecide(approvals.Approve), newDecide(approvals.Reject), newOverride(), newExport(), newCA(), newHub())
	return root
}

// Main runs the command line args as the uapk-proxy binary v and returns
// its exit code.
func Main(v string, args []string) int {
	version = v
	root := newRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "uapk-proxy:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2 // usage errors: bad flags, missing arguments
}
