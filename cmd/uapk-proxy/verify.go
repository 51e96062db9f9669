package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

func newVerify() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "verify --data-dir DIR",
		Short: "Check a stopped proxy's ledger offline (exit 0 intact, 1 broken)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return exitf(2, "--data-dir is required")
			}
			path := filepath.Join(dataDir, "ledger.db")
			l, err := ledger.Open(path, ledger.Options{ReadOnly: true})
			if errors.Is(err, ledger.ErrLocked) {
				return exitf(1, "%s is in use by a running proxy; stop it, or ask it: GET /v1/ledger/verify on its admin address", path)
			}
			if err != nil {
				return exitf(1, "open %s: %v", path, err)
			}
			defer l.Close()
			rep, err := l.Verify(context.Background())
			if err != nil {
				return exitf(1, "verify %s: %v", path, err)
			}
			if !rep.OK {
				p := rep.Problem
				return exitf(1, "broken at seq %d: %s: %s", p.Seq, p.Reason, p.Detail)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d records, head seq %d hash %s\n", rep.Records, rep.Head.Seq, rep.Head.Hash)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the proxy's data directory")
	return cmd
}
