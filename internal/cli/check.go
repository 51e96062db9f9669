package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func newCheck() *cobra.Command {
	var principals, config, tokens string
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a manifest (and with --principals a principals file); print every problem with its JSON path (exit 0 valid, 1 invalid)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			bad := checkManifest(out, args[0])
			if principals != "" {
				if err := checkPrincipals(out, principals); err != nil && bad == nil {
					bad = err
				}
			}
			if config != "" {
				if err := checkConfig(out, config); err != nil && bad == nil {
					bad = err
				}
			}
			if tokens != "" {
				if _, err := adminauth.LoadFile(tokens); err != nil {
					fmt.Fprintln(out, err)
					if bad == nil {
						bad = exitf(1, "%s: invalid", tokens)
					}
				} else {
					fmt.Fprintf(out, "%s: ok\n", tokens)
				}
			}
			return bad
		},
	}
	cmd.Flags().StringVar(&principals, "principals", "", "also validate this principals file, as serve --principals reads it")
	cmd.Flags().StringVar(&config, "config", "", "also validate this configuration file, as serve --config reads it (keys and every section: archive, identity, upstream_auth, ui, notify)")
	cmd.Flags().StringVar(&tokens, "admin-tokens", "", "also validate this admin tokens file, as serve --admin-tokens reads it")
	return cmd
}

func checkManifest(out io.Writer, file string) error {
	m, err := rules.LoadManifest(file)
	var ve *rules.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Fprintf(out, "%s: %s\n", file, p)
		}
		for _, w := range ve.Warnings {
			fmt.Fprintf(out, "%s: warning: %s\n", file, w)
		}
		return exitf(1, "%s: %d problem(s)", file, len(ve.Problems))
	}
	if err != nil {
		return exitf(1, "%s: %v", file, err)
	}
	for _, w := range m.Warnings() {
		fmt.Fprintf(out, "%s: warning: %s\n", file, w)
	}
	fmt.Fprintf(out, "%s: ok: app %s, %d actions, policy %s\n", file, m.AppID, len(m.Actions), m.Hash)
	return nil
}

// checkPrincipals reports every problem of a principals file, each with
// its path, as serve would before exiting 2.
func checkPrincipals(out io.Writer, file string) error {
	ps, err := rules.LoadPrincipals(file)
	var ve *rules.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Fprintf(out, "%s: %s\n", file, p)
		}
		return exitf(1, "%s: %d problem(s)", file, len(ve.Problems))
	}
	if err != nil {
		return exitf(1, "%s: %v", file, err)
	}
	signers := 0
	for _, p := range ps.All() {
		if p.CanSign() {
			signers++
		}
	}
	fmt.Fprintf(out, "%s: ok: %d principals, %d with a public key\n", file, len(ps.All()), signers)
	return nil
}

// checkConfig reports every problem of a serve --config file, without
// network: unknown keys, values that are not single, and each section as
// serve checks it.
func checkConfig(out io.Writer, file string) error {
	fs := newServe().Flags()
	_ = fs.Set("config", file)
	var problems []string
	vals, err := configFileValues(fs, func(string) (string, bool) { return "", false })
	if err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	// The values as serve takes them: each flag's own parser, then the
	// checks serve makes of sizes, the log level and the tokens file.
	for key, v := range vals {
		if err := fs.Set(strings.ReplaceAll(key, "_", "-"), v); err != nil {
			problems = append(problems, fmt.Sprintf("config %s: %s: %v", file, key, err))
		}
	}
	for _, key := range []string{"max_body", "max_response"} {
		if v, ok := vals[key]; ok {
			if _, err := parseSize(v); err != nil {
				problems = append(problems, fmt.Sprintf("config %s: %s: %v", file, key, err))
			}
		}
	}
	if v, ok := vals["log_level"]; ok && !slices.Contains([]string{"debug", "info", "warn", "error"}, v) {
		problems = append(problems, fmt.Sprintf("config %s: log_level %q: want debug, info, warn or error", file, v))
	}
	if v, ok := vals["admin_tokens"]; ok {
		if _, err := adminauth.LoadFile(v); err != nil {
			problems = append(problems, fmt.Sprintf("config %s: admin_tokens: %v", file, err))
		}
	}
	sort.Strings(problems)
	_, _, more := readArchive(file)
	problems = append(problems, more...)
	_, _, more = readUpstreamAuth(file)
	problems = append(problems, more...)
	_, more = readIdentity(file)
	problems = append(problems, more...)
	_, more = readUI(file)
	problems = append(problems, more...)
	_, more = readNotify(file)
	problems = append(problems, more...)
	_, more = readApprovals(file)
	problems = append(problems, more...)
	for _, p := range problems {
		fmt.Fprintln(out, p)
	}
	if len(problems) > 0 {
		return exitf(1, "%s: %d problem(s)", file, len(problems))
	}
	fmt.Fprintf(out, "%s: ok\n", file)
	return nil
}
