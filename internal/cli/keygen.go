package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

func newKeygen() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Make an Ed25519 key pair: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub (PKIX PEM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return exitf(2, "--out PREFIX is required")
			}
			pub, priv, err := keys.Generate()
			if err != nil {
				return exitf(1, "generate key: %v", err)
			}
			if err := keys.WritePair(out, pub, priv); err != nil {
				return exitf(1, "%v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s.key (private, keep it secret) and %s.pub (public, goes in the principals file)\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files")
	return cmd
}
