// Command uapk-proxy puts an AI agent's calls to an ERP/GL API under policy,
// approval and a hash-chained audit ledger. See README.md and docs/reference.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/approvals"
)

// version is set at build time with -ldflags "-X main.version=...".
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
		newPending(), newShow(), newDecide(approvals.Approve), newDecide(approvals.Reject), newOverride(), newExport(), newCA())
	return root
}

func main() {
	err := newRoot().Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "uapk-proxy:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(2) // usage errors: bad flags, missing arguments
}
