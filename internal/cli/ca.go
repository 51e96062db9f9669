package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/internal/ca"
)

// newCA is `uapk-proxy ca`: this install's own CA for HTTPS interception.
func newCA() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage this install's CA for HTTPS interception on the forward door",
		Args:  cobra.NoArgs,
	}
	var out string
	initCmd := &cobra.Command{
		Use:   "init --out DIR",
		Short: "Create DIR/ca.pem (certificate, 0644) and DIR/ca.key (ECDSA P-256, PKCS#8, 0600); never overwrites",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return exitf(2, "--out DIR is required")
			}
			a, err := ca.Init(out, ca.Options{})
			if errors.Is(err, ca.ErrExists) {
				return exitf(1, "%v", err)
			}
			if err != nil {
				return exitf(1, "ca init: %v", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (give it to clients to trust) and %s (private, 0600: keep it secret)\n",
				filepath.Join(out, ca.CertFile), filepath.Join(out, ca.KeyFile))
			fmt.Fprintf(w, "subject: %s\nsha256 fingerprint: %s\nvalid until: %s\n",
				a.Certificate().Subject.CommonName, a.Fingerprint(), a.Certificate().NotAfter.UTC().Format("2006-01-02"))
			fmt.Fprintf(w, "start the proxy with: uapk-proxy serve --ca-dir %s ...\n", out)
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "directory for ca.pem and ca.key (created if missing)")
	cmd.AddCommand(initCmd)
	return cmd
}
