package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/hub"
	"github.com/uapk-gateway/uapk-proxy/internal/server"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// hubOptions are the hub flags after flag > env > file > default.
type hubOptions struct {
	Config      string
	Principals  string
	AdminAddr   string
	AdminTokens string
	DataDir     string
	LogLevel    string
	Grace       time.Duration
	Wait        time.Duration

	now func() time.Time // tests
}

// hubSections are the config file's sections the hub reads; a proxy's
// others mean nothing to it, and are refused rather than ignored.
var hubSections = map[string]string{
	"archive":       "the hub keeps no ledger, so it archives nothing: each proxy archives its own",
	"notify":        "the hub sends no notifications: the proxy that records each change does",
	"upstream_auth": "the hub has no doors and reaches no ERP",
}

func newHub() *cobra.Command {
	o := &hubOptions{}
	cmd := &cobra.Command{
		Use:   "hub --config FILE",
		Short: "Serve the fleet's admin API and dashboard over the shared PostgreSQL approval store",
		Long: `Serves the admin API and the approvers' dashboard for every proxy whose
approvals.postgres names the same database: no doors, no ledger, no state of
its own (run several behind a load balancer). It decides nothing itself: a
decision posted to it is queued in the database, the proxy holding the request
checks it against its own principals, records it in its own ledger and
releases the request, and the hub answers with that proxy's answer (202
queued if none comes within --wait).

The --config file takes approvals: (postgres, instance), ui: and identity:,
and any of the flags as keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, problems := applyConfig(cmd, os.LookupEnv)
			if len(problems) > 0 {
				_, more := o.load()
				return exitf(2, "invalid configuration:\n  %s", strings.Join(append(problems, more...), "\n  "))
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runHub(ctx, o, cmd.ErrOrStderr(), nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Config, "config", "", "YAML file: approvals: (postgres, required), ui:, identity:, and these flags as keys")
	f.StringVar(&o.Principals, "principals", "", "principals file: who may sign in to the dashboard (YAML)")
	f.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:8090", "admin API, dashboard, health and metrics address")
	f.StringVar(&o.AdminTokens, "admin-tokens", "", "YAML file of admin API tokens; default a generated DATA/admin.token (give every hub behind one load balancer the same file)")
	f.StringVar(&o.DataDir, "data-dir", "./data", "where the generated admin.token is kept (nothing else)")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.Grace, "shutdown-grace", 15*time.Second, "on SIGTERM, how long requests in flight may take")
	f.DurationVar(&o.Wait, "wait", hub.DefaultWait, "how long a posted decision waits for a proxy's answer before 202 queued")
	return cmd
}

// load checks the hub's configuration and returns every problem found.
func (o *hubOptions) load() (hub.Config, []string) {
	var problems []string
	c := hub.Config{AdminAddr: o.AdminAddr, DataDir: o.DataDir, AdminTokensFile: o.AdminTokens, Now: o.now, Wait: o.Wait}
	if o.Principals != "" {
		p, err := rules.LoadPrincipals(o.Principals)
		if err != nil {
			problems = append(problems, describe(o.Principals, err)...)
		}
		c.Principals = p
	}
	if _, _, err := net.SplitHostPort(o.AdminAddr); err != nil {
		problems = append(problems, fmt.Sprintf("--admin-addr %q: %v", o.AdminAddr, err))
	}
	if o.AdminTokens != "" {
		if _, err := adminauth.LoadFile(o.AdminTokens); err != nil {
			problems = append(problems, "--admin-tokens: "+err.Error())
		}
	} else if o.DataDir == "" {
		problems = append(problems, "--data-dir must not be empty without --admin-tokens")
	}
	level, err := zerolog.ParseLevel(o.LogLevel)
	if err != nil || o.LogLevel == "" || level > zerolog.ErrorLevel {
		problems = append(problems, fmt.Sprintf("--log-level %q: want debug, info, warn or error", o.LogLevel))
	}
	c.LogLevel = level
	if o.Wait <= 0 {
		problems = append(problems, "--wait must be positive")
	}
	if o.Config == "" {
		return c, append(problems, "--config is required: its approvals.postgres names the fleet's database")
	}
	problems = append(problems, unusedSections(o.Config)...)
	ap, more := readApprovals(o.Config)
	problems = append(problems, more...)
	if ap.Postgres == "" && len(more) == 0 {
		problems = append(problems, fmt.Sprintf("config %s: approvals.postgres is required: the fleet's shared approval store", o.Config))
	}
	c.Postgres, c.Instance = ap.Postgres, ap.Instance
	ui, more := readUI(o.Config)
	problems = append(problems, more...)
	c.UIURL, c.UITLSCert, c.UITLSKey = ui.URL, ui.TLSCert, ui.TLSKey
	return c, problems
}

// unusedSections names the proxy-only sections in the config file at path.
func unusedSections(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil // reported by applyConfig
	}
	var doc map[string]yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return nil // reported by applyConfig
	}
	var out []string
	for key, node := range doc {
		if why, ok := hubSections[key]; ok {
			out = append(out, fmt.Sprintf("config %s: line %d: %s: %s", path, node.Line, key, why))
		}
	}
	sort.Strings(out)
	return out
}

// runHub starts the hub, waits for ctx, then stops it. started, if set,
// receives the running hub (tests use it).
func runHub(ctx context.Context, o *hubOptions, logw io.Writer, started func(*hub.Hub)) error {
	c, problems := o.load()
	if o.Config != "" {
		ident, more := readIdentity(o.Config)
		problems = append(problems, more...)
		if len(problems) == 0 {
			id, err := startIdentity(ident, nil, o.now, logw)
			if err != nil {
				return err
			}
			c.Identity = id
		}
	}
	if len(problems) > 0 {
		return exitf(2, "invalid configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	c.Version = version
	h, err := hub.Start(c, logw)
	if se, ok := err.(*server.StartError); ok {
		return exitf(se.Code, "%v", se.Err)
	}
	if err != nil {
		return exitf(1, "%v", err)
	}
	if started != nil {
		started(h)
	}
	select {
	case <-ctx.Done():
	case err = <-h.Err():
		log := h.Log()
		log.Error().Err(err).Msg("the listener failed; shutting down")
	}
	if cerr := h.Close(o.Grace); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return exitf(1, "%v", err)
	}
	return nil
}
