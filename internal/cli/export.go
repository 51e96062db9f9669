package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// newExport is `uapk-proxy export`: an evidence bundle
// (docs/reference.md#evidence-bundle) of a stopped proxy's ledger, written
// offline.
func newExport() *cobra.Command {
	var (
		dataDir, from, to, framework, out, principals string
		fromSeq, toSeq                                uint64
		manifests                                     []string
		inclApprovals, inclRejections                 bool
		config, key                                   string
		instances                                     []string
	)
	cmd := &cobra.Command{
		Use:   "export (--data-dir DIR | --config FILE --key FILE) --from DATE --to DATE --framework SOX -o FILE.zip",
		Short: "Write an evidence bundle of a stopped proxy's ledger, for auditors",
		Long: `Writes the records of a range, their anchor in the chain and a signed
checkpoint, every approval with its signed statements, the keys, the manifests
in force, the SOX / ISO 27001 control mapping, report.html, SHA256SUMS and its
gateway signature. The same range of the same ledger gives the same bytes.

--from and --to are dates (YYYY-MM-DD, UTC; --to names the last day included)
or RFC 3339 times (--to excluded); --from-seq/--to-seq select by seq instead.
The manifests in force are read from the files the config records name unless
given with --manifest (each must be one a record of the range was decided
under). The approvers' keys come from the chain: every config record up to
the range's end names the principals in force from it on, and each signed
statement is checked against the key its approver had then. --principals is
needed only for records written by a proxy whose config records name no
principals; given otherwise, it must be what the chain says was in force for
the range, or the export is refused.

With --config FILE (a fleet proxy's config, whose archive: section names the
store) the bundle is built from the archive alone: every instance under
PREFIX/APP/ (or those --instance names), each instance's chain checked on its
own against its signed checkpoints, and signed by the exporter's --key
(docs/reference.md#fleet-evidence). No data directory is read, except as
DATA/archive when the config has no archive.s3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return exitf(2, "-o FILE.zip is required")
			}
			opts := evidence.Options{OmitApprovals: !inclApprovals, OmitRejections: !inclRejections,
				Range: evidence.Range{FromSeq: fromSeq, ToSeq: toSeq}}
			var err error
			if opts.Framework, err = evidence.NormalizeFramework(framework); err != nil {
				return exitf(2, "--framework: %v", err)
			}
			if from != "" {
				if opts.Range.From, err = evidence.ParseTime(from, false); err != nil {
					return exitf(2, "--from: %v", err)
				}
			}
			if to != "" {
				if opts.Range.To, err = evidence.ParseTime(to, true); err != nil {
					return exitf(2, "--to: %v", err)
				}
			}
			if err := opts.Range.Validate(); err != nil {
				return exitf(2, "%v", err)
			}
			if config == "" && (key != "" || len(instances) > 0) {
				return exitf(2, "--key and --instance are for a fleet export: give --config FILE")
			}
			if config != "" && (principals != "" || fromSeq != 0 || toSeq != 0 || !inclApprovals || !inclRejections) {
				return exitf(2, "--config exports a fleet by time (--from, --to), with the principals its chains carry and every approval: --principals, --from-seq, --to-seq and --include-* are for --data-dir")
			}
			for _, path := range manifests {
				data, err := os.ReadFile(path)
				if err != nil {
					return exitf(2, "--manifest: %v", err)
				}
				if _, err := rules.ParseManifest(data); err != nil {
					return exitf(2, "--manifest %s:\n  %s", path, strings.Join(describe(path, err), "\n  "))
				}
				opts.Manifests = append(opts.Manifests, evidence.ManifestFile{Name: path, Data: data})
			}
			if principals != "" {
				if opts.Principals, err = rules.LoadPrincipals(principals); err != nil {
					return exitf(2, "--principals:\n  %s", strings.Join(describe(principals, err), "\n  "))
				}
				opts.PrincipalsName = principals
			}
			if config != "" {
				dir := ""
				if cmd.Flags().Changed("data-dir") {
					dir = dataDir
				}
				return exportFleet(cmd.OutOrStdout(), fleetExport{config: config, key: key, dataDir: dir, instances: instances, opts: opts, out: out})
			}
			src, err := evidence.OpenDir(dataDir)
			if errors.Is(err, ledger.ErrLocked) {
				return exitf(1, "%s is in use by a running proxy; stop it, or ask it: POST /v1/evidence on its admin address", filepath.Join(dataDir, "ledger.db"))
			}
			if err != nil {
				return exitf(1, "open %s: %v", dataDir, err)
			}
			defer src.Close()
			s, err := writeBundle(src, opts, out)
			if err != nil {
				return exitf(1, "export: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: wrote %s: %s, records %d to %d (%d records, %s to %s), %d approvals; anchor: %s checkpoint at record %d; SHA256SUMS sha256 %s\n",
				out, s.Framework, s.FromSeq, s.ToSeq, s.Records, s.FromTime, s.ToTime, s.Approvals, s.Checkpoint.Source, s.Checkpoint.Seq, sumsDigest(s.Sums))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "./data", "the stopped proxy's data directory")
	f.StringVar(&from, "from", "", "first day (YYYY-MM-DD, UTC) or RFC 3339 time of the range")
	f.StringVar(&to, "to", "", "last day included (YYYY-MM-DD, UTC) or RFC 3339 time excluded")
	f.Uint64Var(&fromSeq, "from-seq", 0, "first record of the range (with or instead of --from)")
	f.Uint64Var(&toSeq, "to-seq", 0, "last record of the range (with or instead of --to)")
	f.StringVar(&framework, "framework", "SOX", "SOX (SOX 302/404/802 and ISO 27001 A.9/A.12), ISO27001 or ALL")
	f.StringVarP(&out, "output", "o", "", "the bundle to write (FILE.zip)")
	f.StringArrayVar(&manifests, "manifest", nil, "a manifest in force in the range (repeatable); default: the files config records name")
	f.StringVar(&principals, "principals", "", "the principals file in force, for chains whose config records name none (default: the chain's)")
	f.BoolVar(&inclApprovals, "include-approvals", true, "put approved approvals and their statements in approvals.json")
	f.BoolVar(&inclRejections, "include-rejections", true, "put rejected approvals and rejection statements in approvals.json")
	f.StringVar(&config, "config", "", "a fleet proxy's config file: export from the archive its archive: section names, every instance")
	f.StringVar(&key, "key", "", "with --config: the exporter's Ed25519 key (keygen) that signs SHA256SUMS")
	f.StringArrayVar(&instances, "instance", nil, "with --config: only this instance (repeatable; default: every instance in the archive)")
	return cmd
}

// writeBundle writes the bundle beside out and renames it into place, so a
// failed export never leaves a partial bundle under the name asked for.
func writeBundle(src evidence.Source, opts evidence.Options, out string) (evidence.Summary, error) {
	ctx := context.Background()
	b, err := evidence.Prepare(ctx, src, opts)
	if err != nil {
		return evidence.Summary{}, err
	}
	defer b.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".evidence-*.zip.tmp")
	if err != nil {
		return evidence.Summary{}, err
	}
	defer os.Remove(tmp.Name())
	if err := b.Write(ctx, tmp); err != nil {
		tmp.Close()
		return evidence.Summary{}, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return evidence.Summary{}, err
	}
	if err := tmp.Close(); err != nil {
		return evidence.Summary{}, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return evidence.Summary{}, err
	}
	return b.Summary(), nil
}

// sumsDigest identifies a bundle: the SHA-256 of its SHA256SUMS.
func sumsDigest(sums []byte) string {
	h := sha256.Sum256(sums)
	return hex.EncodeToString(h[:])
}
