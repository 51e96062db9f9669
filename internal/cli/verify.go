package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

func newVerify() *cobra.Command {
	var dataDir, manifest, config string
	var archive bool
	cmd := &cobra.Command{
		Use:   "verify --data-dir DIR [--archive --manifest FILE [--config FILE]] | verify FILE.zip",
		Short: "Check a stopped proxy's ledger (and its archive), or an evidence bundle, offline (exit 0 intact, 1 broken)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if dataDir != "" || archive {
					return exitf(2, "give either FILE.zip or --data-dir, not both")
				}
				return verifyBundle(cmd, args[0])
			}
			if dataDir == "" {
				return exitf(2, "--data-dir (a stopped proxy's data directory) or FILE.zip (an evidence bundle) is required")
			}
			if archive && manifest == "" {
				return exitf(2, "--archive needs --manifest: the app id, lock mode and retention come from it")
			}
			path := filepath.Join(dataDir, "ledger.db")
			if _, err := os.Stat(path); err != nil {
				return exitf(1, "%s: %v", path, err)
			}
			l, err := ledger.Open(path, ledger.Options{ReadOnly: true})
			if errors.Is(err, ledger.ErrLocked) {
				return exitf(1, "%s is in use by a running proxy; stop it, or ask it: GET /v1/ledger/verify on its admin address", path)
			}
			if err != nil {
				return exitf(1, "open %s: %v", path, err)
			}
			defer l.Close()
			ctx := context.Background()
			var anchors []verifier.Head
			out := cmd.OutOrStdout()
			if archive {
				rep, err := verifyArchive(ctx, l, dataDir, manifest, config)
				if err != nil {
					return err
				}
				if !rep.OK {
					b, _ := json.Marshal(rep.Problem)
					return exitf(1, "archive broken: %s", b)
				}
				fmt.Fprintf(out, "archive ok: %s, %d segments, %d checkpoints, records 1 to %d archived (local head %d)\n",
					rep.Store, rep.Segments, rep.Checkpoints, rep.ArchivedSeq, rep.LocalHead)
				anchors = rep.Anchors
			}
			// The file is read through ledger (read-only, bounded
			// transactions); everything is checked by the verifier.
			rep, err := verifier.Verify(ctx, l, anchors...)
			if err != nil {
				return exitf(1, "verify %s: %v", path, err)
			}
			if !rep.OK {
				p := rep.Problem
				return exitf(1, "broken at seq %d: %s: %s", p.Seq, p.Reason, p.Detail)
			}
			fmt.Fprintf(out, "ok: %d records, head seq %d hash %s\n", rep.Records, rep.Head.Seq, rep.Head.Hash)
			if n := l.Behind(); n > 0 {
				fmt.Fprintf(out, "note: %d records are in %s-journal and not yet in %s; start the proxy once to apply them\n", n, path, path)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "the proxy's data directory")
	f.BoolVar(&archive, "archive", false, "also check the archived segments and signed checkpoints against the local chain")
	f.StringVar(&manifest, "manifest", "", "with --archive: the manifest in force (app id, lock mode, retention)")
	f.StringVar(&config, "config", "", "with --archive: the proxy's config file, for archive.s3 (default: DATA/archive)")
	return cmd
}

// verifyArchive checks the archive against the local chain with every
// gateway key the chain has used: the current one and those its config
// records name, so checkpoints signed before a key change still verify.
func verifyArchive(ctx context.Context, l *ledger.Ledger, dataDir, manifestPath, configPath string) (archive.Report, error) {
	m, err := rules.LoadManifest(manifestPath)
	if err != nil {
		return archive.Report{}, exitf(2, "%s", strings.Join(describe(manifestPath, err), "\n"))
	}
	af, _, problems := readArchive(configPath)
	if len(problems) > 0 {
		return archive.Report{}, exitf(2, "%s", strings.Join(problems, "\n"))
	}
	ap, more := readApprovals(configPath)
	if len(more) > 0 {
		return archive.Report{}, exitf(2, "%s", strings.Join(more, "\n"))
	}
	cfg := archive.Config{App: m.AppID, Instance: archiveInstance(af, ap), LocalDir: filepath.Join(dataDir, "archive"),
		Mode: m.Audit.StorageClass, RetentionYears: m.Audit.RetentionYears}
	if af.S3 != nil {
		cfg.LocalDir = ""
		cfg.S3 = &archive.S3Config{Bucket: af.S3.Bucket, Prefix: af.S3.Prefix, Region: af.S3.Region,
			Endpoint: af.S3.Endpoint, PathStyle: af.S3.PathStyle}
	}
	var pubs []ed25519.PublicKey
	if k, err := keys.LoadPrivateFile(filepath.Join(dataDir, "gateway.key")); err == nil {
		pubs = append(pubs, k.Public().(ed25519.PublicKey))
	}
	err = l.Range(1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var r ledger.Record
		if json.Unmarshal(raw, &r) != nil || r.Kind != record.KindConfig {
			return nil
		}
		if s, ok := r.Data["gateway_key"].(string); ok {
			b, err := base64.StdEncoding.DecodeString(s)
			if err == nil && keys.CheckPublic(b) == nil && !slices.ContainsFunc(pubs, func(k ed25519.PublicKey) bool { return k.Equal(ed25519.PublicKey(b)) }) {
				pubs = append(pubs, ed25519.PublicKey(b))
			}
		}
		return nil
	})
	if err != nil {
		return archive.Report{}, exitf(1, "read the chain: %v", err)
	}
	rep, err := archive.Verify(ctx, l, cfg, pubs...)
	if err != nil {
		return rep, exitf(1, "verify archive: %v", err)
	}
	return rep, nil
}
