package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
)

// adminClient talks to a running proxy's admin API.
type adminClient struct {
	base    string
	token   string // --admin-token
	dataDir string // --data-dir: where DATA/admin.token is
	http    *http.Client
	// identityFile, when set, is a file holding the caller's identity
	// token, sent as X-UAPK-On-Behalf-Of (override requests).
	identityFile string
}

func adminFlag(cmd *cobra.Command, c *adminClient) {
	def := "http://127.0.0.1:8090"
	if v, ok := os.LookupEnv("UAPK_ADMIN"); ok {
		def = v
	}
	cmd.Flags().StringVar(&c.base, "admin", def, "admin API of the running proxy (env UAPK_ADMIN)")
	cmd.Flags().StringVar(&c.token, "admin-token", "", "admin API token (default env UAPK_ADMIN_TOKEN, else the file admin.token under --data-dir)")
	cmd.Flags().StringVar(&c.dataDir, "data-dir", "./data", "the proxy's data directory, where serve wrote admin.token (env UAPK_DATA_DIR)")
	c.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
}

// bearer finds the admin token: --admin-token, UAPK_ADMIN_TOKEN, or the
// token serve wrote under the data directory.
func (c *adminClient) bearer(cmd *cobra.Command) (string, error) {
	if c.token != "" {
		return c.token, nil
	}
	if v := os.Getenv("UAPK_ADMIN_TOKEN"); v != "" {
		return strings.TrimSpace(v), nil
	}
	dir := c.dataDir
	if !cmd.Flags().Changed("data-dir") {
		if v := os.Getenv("UAPK_DATA_DIR"); v != "" {
			dir = v
		}
	}
	path := filepath.Join(dir, adminauth.FileName)
	tok, err := adminauth.ReadTokenFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", exitf(2, "%v: give --admin-token or UAPK_ADMIN_TOKEN, or --data-dir of the proxy (no %s)", adminauth.ErrNoToken, path)
	}
	if err != nil {
		return "", exitf(2, "%v", err)
	}
	return tok, nil
}

// call sends a JSON request and decodes a JSON answer; a non-2xx answer is
// an error carrying the server's reason.
func (c *adminClient) call(cmd *cobra.Command, method, path string, in, out any) error {
	tok, err := c.bearer(cmd)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.base, "/")+path, body)
	if err != nil {
		return exitf(2, "--admin %q: %v", c.base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	if c.identityFile != "" {
		id, err := os.ReadFile(c.identityFile)
		if err != nil {
			return exitf(2, "--identity-token: %v", err)
		}
		req.Header.Set("X-UAPK-On-Behalf-Of", strings.TrimSpace(string(id)))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return exitf(1, "admin API %s: %v (is the proxy running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Reason, Message string }
		json.Unmarshal(raw, &e)
		what := e.Error
		if e.Reason != "" {
			what += " (" + e.Reason + ")"
		}
		if what == "" {
			what = strings.TrimSpace(string(raw))
		}
		return exitf(1, "%s %s: %d %s: %s", method, path, resp.StatusCode, what, e.Message)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return exitf(1, "%s %s: unexpected answer: %v", method, path, err)
		}
	}
	return nil
}

func newPending() *cobra.Command {
	c := &adminClient{}
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "List pending approvals (via the admin API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res struct{ Approvals []approvals.Approval }
			for cursor := ""; ; {
				var page struct {
					Approvals  []approvals.Approval
					NextCursor string `json:"next_cursor"`
				}
				if err := c.call(cmd, "GET", "/v1/approvals?status=pending&limit=1000&cursor="+url.QueryEscape(cursor), nil, &page); err != nil {
					return err
				}
				res.Approvals = append(res.Approvals, page.Approvals...)
				if cursor = page.NextCursor; cursor == "" {
					break
				}
			}
			out := cmd.OutOrStdout()
			if len(res.Approvals) == 0 {
				fmt.Fprintln(out, "no pending approvals")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tACTION\tAMOUNT\tNEEDS\tSIGNED BY\tEXPIRES\tJUSTIFICATION")
			for _, a := range res.Approvals {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Kind, a.Action, dash(a.Amount),
					strings.Join(a.RequiredRoles, "+"), signers(a), a.ExpiresAt.Format(time.RFC3339), shorten(a.Justification, 50))
			}
			return tw.Flush()
		},
	}
	adminFlag(cmd, c)
	return cmd
}

func newShow() *cobra.Command {
	c := &adminClient{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval: the request, its justification, digest, roles and decisions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a approvals.Approval
			if err := c.call(cmd, "GET", "/v1/approvals/"+url.PathEscape(args[0]), nil, &a); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(a)
			}
			describeApproval(cmd.OutOrStdout(), &a)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the approval as JSON")
	adminFlag(cmd, c)
	return cmd
}

func describeApproval(w io.Writer, a *approvals.Approval) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, safeText(v))
		}
	}
	row("approval", a.ID+" ("+a.Kind+")")
	row("status", a.Status)
	row("action", a.Action)
	row("app", a.App)
	if a.Kind == approvals.KindOverride {
		row("override", "skip the approval policy of "+a.Action+" for "+a.Duration)
		row("requested by", a.RequestedBy)
		row("max amount", overrideMaxAmount(a))
		row("max uses", overrideUses(a))
	} else {
		row("request", a.Method+" "+a.URL)
		row("on behalf of", a.OnBehalfOf)
		row("amount", a.Amount)
	}
	row("justification", a.Justification)
	row("needs", strings.Join(a.RequiredRoles, " + ")+" ("+string(a.Requirement.Policy)+")")
	row("signed by", signers(*a))
	row("digest", a.Digest)
	row("expires", a.ExpiresAt.Format(time.RFC3339))
	tw.Flush()
	if a.Body != "" {
		fmt.Fprintf(w, "body:\n%s\n", safeText(indentJSON(a.Body)))
	}
}

// overrideMaxAmount says what an override covers per request, as its
// approvers sign it.
func overrideMaxAmount(a *approvals.Approval) string {
	if a.MaxAmount == "" {
		return "none named: the action's amount_cap bounds each request (above it the escalation applies)"
	}
	return a.MaxAmount + " per request"
}

// overrideUses says how many requests an override may let through, and how
// many it has.
func overrideUses(a *approvals.Approval) string {
	if a.MaxUses == 0 {
		return fmt.Sprintf("no limit within its duration (%d used)", a.Uses)
	}
	return fmt.Sprintf("%d (%d used)", a.MaxUses, a.Uses)
}

// safeText shows what the agent wrote without letting it drive the
// approver's terminal: control bytes (escape sequences, carriage returns
// that overwrite a line) and bidirectional overrides (which reorder what is
// shown, U+202E) are written as \u escapes; newlines and tabs stay.
func safeText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError ||
			r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func signers(a approvals.Approval) string {
	var s []string
	for _, d := range a.Decisions {
		s = append(s, fmt.Sprintf("%s as %s (%s)", d.Approver, d.Role, d.Decision))
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func indentJSON(s string) string {
	var b bytes.Buffer
	if json.Indent(&b, []byte(s), "  ", "  ") != nil {
		return "  " + s
	}
	return "  " + b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shorten(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// newDecide builds approve and reject: the statement is signed here, with
// the approver's own key; only the signature leaves the machine.
func newDecide(decision string) *cobra.Command {
	c := &adminClient{}
	var as, keyFile, reason string
	use := decision + " ID --as APPROVER --key FILE"
	if decision == approvals.Reject {
		use += " --reason TEXT"
	} else {
		use += " [--reason TEXT]"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: "Sign the decision statement locally and post it (" + decision + ")",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var missing []string
			if as == "" {
				missing = append(missing, "--as APPROVER")
			}
			if keyFile == "" {
				missing = append(missing, "--key FILE")
			}
			if decision == approvals.Reject && strings.TrimSpace(reason) == "" {
				missing = append(missing, "--reason TEXT (a rejection must say why)")
			}
			if len(missing) > 0 {
				return exitf(2, "%s needs %s", decision, strings.Join(missing, ", "))
			}
			key, err := keys.LoadPrivateFile(keyFile)
			if err != nil {
				return exitf(2, "--key: %v", err)
			}
			id := args[0]
			var a approvals.Approval
			if err := c.call(cmd, "GET", "/v1/approvals/"+url.PathEscape(id), nil, &a); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			describeApproval(out, &a)
			if a.Status != approvals.StatusPending {
				return exitf(1, "approval %s is %s; nothing to sign", id, a.Status)
			}
			signedAt := time.Now().UTC().Format(time.RFC3339)
			sub := approvals.Submission{
				Approver: as, Decision: decision, Reason: reason, SignedAt: signedAt, Digest: a.Digest,
				Signature: approvals.Sign(key, a.ID, a.Digest, decision, as, signedAt),
			}
			var raw json.RawMessage
			if err := c.call(cmd, "POST", "/v1/approvals/"+url.PathEscape(id)+"/decisions", sub, &raw); err != nil {
				return err
			}
			var q struct{ Status, Message string }
			if json.Unmarshal(raw, &q) == nil && q.Status == "queued" {
				// A fleet's hub: no proxy has taken it yet.
				fmt.Fprintf(out, "\n%s: %s signed %q; queued: %s\n", id, as, decision, q.Message)
				return nil
			}
			var after approvals.Approval
			if err := json.Unmarshal(raw, &after); err != nil {
				return exitf(1, "POST decision: unexpected answer: %v", err)
			}
			fmt.Fprintf(out, "\n%s: %s signed %q; approval is now %s\n", id, as, decision, after.Status)
			if after.Status == approvals.StatusPending {
				fmt.Fprintf(out, "still needed: %s\n", strings.Join(after.StillNeeded(), " + "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "your principal id, as in the principals file")
	cmd.Flags().StringVar(&keyFile, "key", "", "your Ed25519 private key (PKCS#8 PEM, mode 0600)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	adminFlag(cmd, c)
	return cmd
}

func newOverride() *cobra.Command {
	root := &cobra.Command{Use: "override", Short: "Emergency overrides (time-limited, approved, recorded)"}
	c := &adminClient{}
	var r approvals.OverrideRequest
	var maxAmount string
	var maxUses int
	req := &cobra.Command{
		Use:   "request --action A --duration 4h --justification TEXT --requested-by ID [--max-amount N] [--max-uses N]",
		Short: "Ask for an override of one action's approval policy; it needs the manifest's override roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r.MaxAmount = approvals.Amount(maxAmount) // sent as a string: exact, whatever its digits
			if cmd.Flags().Changed("max-uses") {
				r.MaxUses = &maxUses
			}
			var a approvals.Approval
			if err := c.call(cmd, "POST", "/v1/overrides", r, &a); err != nil {
				return err
			}
			if a.ID == "" && a.Status == "queued" {
				// A fleet's hub: no proxy has taken it yet.
				fmt.Fprintf(cmd.OutOrStdout(), "override request queued: no proxy of the fleet has taken it yet; it is created when one does (see uapk-proxy pending)\n")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "override %s requested: %s for %s, needs %s\nmax amount: %s\nmax uses: %s\napprove with: uapk-proxy approve %s --as ID --key FILE\nthen fetch the token with: uapk-proxy override show %s\n",
				a.ID, a.Action, a.Duration, strings.Join(a.RequiredRoles, " + "), safeText(overrideMaxAmount(&a)), overrideUses(&a), a.ID, a.ID)
			return nil
		},
	}
	req.Flags().StringVar(&r.Action, "action", "", "the action whose approval policy the override skips")
	req.Flags().StringVar(&r.Duration, "duration", "", "how long, e.g. 4h (at most the manifest's override.max_duration)")
	req.Flags().StringVar(&r.Justification, "justification", "", "why, for the approvers and the record")
	req.Flags().StringVar(&r.RequestedBy, "requested-by", "", "who asks (cannot approve it)")
	req.Flags().StringVar(&maxAmount, "max-amount", "", "the most one request may carry, e.g. 250000.00 (default: the action's amount_cap; above it the escalation's roles approve too)")
	req.Flags().IntVar(&maxUses, "max-uses", 0, "how many requests it may let through (default: the manifest's override.max_uses, else no limit within its duration)")
	req.Flags().StringVar(&c.identityFile, "identity-token", "", "file holding the requester's identity token (JWT), required when the proxy has identity configured")
	adminFlag(req, c)

	sc := &adminClient{}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show an override; once approved it includes the token for X-UAPK-Override",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a approvals.Approval
			if err := sc.call(cmd, "GET", "/v1/overrides/"+url.PathEscape(args[0]), nil, &a); err != nil {
				return err
			}
			describeApproval(cmd.OutOrStdout(), &a)
			if a.Token != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "token (X-UAPK-Override, until %s):\n%s\n", a.TokenExp.Format(time.RFC3339), a.Token)
			}
			return nil
		},
	}
	adminFlag(show, sc)
	root.AddCommand(req, show)
	return root
}
