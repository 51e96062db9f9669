package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/rules"
)

func newCheck() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a manifest; print every problem with its JSON path (exit 0 valid, 1 invalid)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			m, err := rules.LoadManifest(args[0])
			var ve *rules.ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					fmt.Fprintf(out, "%s: %s\n", args[0], p)
				}
				for _, w := range ve.Warnings {
					fmt.Fprintf(out, "%s: warning: %s\n", args[0], w)
				}
				return exitf(1, "%s: %d problem(s)", args[0], len(ve.Problems))
			}
			if err != nil {
				return exitf(1, "%s: %v", args[0], err)
			}
			for _, w := range m.Warnings() {
				fmt.Fprintf(out, "%s: warning: %s\n", args[0], w)
			}
			fmt.Fprintf(out, "%s: ok: app %s, %d actions, policy %s\n", args[0], m.AppID, len(m.Actions), m.Hash)
			return nil
		},
	}
}
