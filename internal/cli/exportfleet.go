package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// fleetExport is what `export --config` needs beyond a single export's
// flags.
type fleetExport struct {
	config, key, dataDir string
	instances            []string
	opts                 evidence.Options
	out                  string
}

// exportFleet is `export --config FILE`: the bundle of every instance's
// archive (docs/reference.md#fleet-evidence), read from the store the
// config's archive: section names, each instance's chain checked on its
// own against its checkpoints. No proxy's data directory or private key
// is read: SHA256SUMS is signed by the exporter's --key.
func exportFleet(w io.Writer, fe fleetExport) error {
	if fe.key == "" {
		return exitf(2, "--config needs --key FILE: the exporter's Ed25519 key that signs SHA256SUMS (uapk-proxy keygen --out NAME makes NAME.key); the instances' gateway keys stay on their proxies, and their checkpoints anchor the bundle")
	}
	key, err := keys.LoadPrivateFile(fe.key)
	if err != nil {
		return exitf(2, "--key: %v", err)
	}
	cfg, manifests, err := fleetArchiveConfig(fe.config, fe.dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	fa, err := archive.OpenFleet(ctx, cfg)
	if err != nil {
		return exitf(1, "open the archive: %v", err)
	}
	defer fa.Close()
	opts := evidence.FleetOptions{Range: fe.opts.Range, Framework: fe.opts.Framework, Instances: fe.instances, Key: key,
		Manifests: fe.opts.Manifests, Offered: manifests}
	s, err := writeFleetBundle(ctx, fa, opts, fe.out)
	switch {
	case errors.Is(err, evidence.ErrUnknownInstance), errors.Is(err, evidence.ErrEmptyRange), errors.Is(err, evidence.ErrNoArchive), errors.Is(err, evidence.ErrBadRange),
		errors.Is(err, evidence.ErrLeftOut):
		return exitf(2, "export: %v", err)
	case err != nil:
		return exitf(1, "export: %v", err)
	}
	fmt.Fprintf(w, "ok: wrote %s: %s fleet bundle of %s from %s, %d instances, %d records, %d approvals; SHA256SUMS sha256 %s signed by exporter key %s\n",
		fe.out, s.Framework, s.App, fa.Store(), len(s.Instances), s.Records, s.Approvals, sumsDigest(s.Sums), fingerprintOf(key.Public()))
	for _, in := range s.Instances {
		switch {
		case in.Records > 0:
			fmt.Fprintf(w, "  %s: records %d to %d (%d), gateway key %s, archived to record %d (%s)\n", in.Name, in.FirstSeq, in.LastSeq, in.Records, orNone(in.GatewayKey), in.ArchivedSeq, in.ArchivedTime)
		case len(in.Cited) > 0:
			fmt.Fprintf(w, "  %s: no records in the range, gateway key %s, archived to record %d (%s)\n", in.Name, orNone(in.GatewayKey), in.ArchivedSeq, in.ArchivedTime)
		default:
			fmt.Fprintf(w, "  %s: no records in the range, archived to record %d (%s)\n", in.Name, in.ArchivedSeq, in.ArchivedTime)
		}
		if len(in.Cited) > 0 {
			fmt.Fprintf(w, "note: %s: approvals.json cites its records %s outside the range: they are in instances/%s/cited.jsonl, each with the rest of its segment up to the checkpoint that proves it\n", in.Name, joinSeqs(in.Cited), in.Name)
		}
		if !in.Complete {
			fmt.Fprintf(w, "note: %s's archive ends at %s, before the range's end: the bundle stops there (export again once its archiver has sealed the rest, or if it stopped, this is all it wrote)\n", in.Name, in.ArchivedTime)
		}
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func joinSeqs(seqs []uint64) string {
	out := make([]string, len(seqs))
	for i, s := range seqs {
		out[i] = strconv.FormatUint(s, 10)
	}
	return strings.Join(out, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fleetArchiveConfig reads the archive the config file names: its
// archive: section (archive.s3, or without it DATA/archive with DATA its
// data_dir or --data-dir), the app id, lock mode and retention from its
// manifest, which is also offered to the export.
func fleetArchiveConfig(path, dataDir string) (archive.Config, []evidence.ManifestFile, error) {
	if _, err := os.Stat(path); err != nil {
		return archive.Config{}, nil, exitf(2, "--config: %v", err)
	}
	var section map[string]any
	found, problems := readSection(path, "archive", &section)
	if len(problems) > 0 {
		return archive.Config{}, nil, exitf(2, "%s", strings.Join(problems, "\n"))
	}
	if !found {
		return archive.Config{}, nil, exitf(2, "config %s has no archive: section: export --config reads the fleet's archive it names (archive.s3, or DATA/archive without it); for one stopped proxy use --data-dir", path)
	}
	af, _, problems := readArchive(path)
	if len(problems) > 0 {
		return archive.Config{}, nil, exitf(2, "%s", strings.Join(problems, "\n"))
	}
	manifestPath, dataFromConfig := configScalar(path, "manifest"), configScalar(path, "data_dir")
	if manifestPath == "" {
		return archive.Config{}, nil, exitf(2, "config %s names no manifest: the app id of PREFIX/APP/ comes from it", path)
	}
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		return archive.Config{}, nil, exitf(2, "config %s: manifest: %v", path, err)
	}
	m, err := rules.ParseManifest(data)
	if err != nil {
		return archive.Config{}, nil, exitf(2, "%s", strings.Join(describe(manifestPath, err), "\n"))
	}
	cfg := archive.Config{App: m.AppID, Mode: m.Audit.StorageClass, RetentionYears: m.Audit.RetentionYears}
	if af.S3 != nil {
		cfg.S3 = &archive.S3Config{Bucket: af.S3.Bucket, Prefix: af.S3.Prefix, Region: af.S3.Region, Endpoint: af.S3.Endpoint, PathStyle: af.S3.PathStyle}
	} else {
		if dataDir == "" {
			dataDir = dataFromConfig
		}
		if dataDir == "" {
			return archive.Config{}, nil, exitf(2, "config %s has no archive.s3: the archive is DATA/archive; give --data-dir DATA or data_dir in the config", path)
		}
		cfg.LocalDir = filepath.Join(dataDir, "archive")
	}
	return cfg, []evidence.ManifestFile{{Name: manifestPath, Data: data}}, nil
}

// writeFleetBundle writes beside out and renames into place, as
// writeBundle does, once verify passes the file written: a bundle its own
// verify refuses is never put in place.
func writeFleetBundle(ctx context.Context, fa *archive.Fleet, opts evidence.FleetOptions, out string) (evidence.FleetSummary, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".evidence-*.zip.tmp")
	if err != nil {
		return evidence.FleetSummary{}, err
	}
	defer os.Remove(tmp.Name())
	s, err := evidence.ExportFleet(ctx, tmp, fa, opts)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = selfVerify(tmp, s)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	return s, err
}

// selfVerify runs verify on the bundle just written.
func selfVerify(f *os.File, s evidence.FleetSummary) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := evidence.Verify(f, st.Size()); err != nil {
		var p *evidence.Problem
		msg := err.Error()
		if errors.As(err, &p) {
			msg = p.Code + ": " + p.Message
		}
		if len(s.Notes) > 0 {
			msg += " (" + strings.Join(s.Notes, "; ") + ")"
		}
		return fmt.Errorf("the bundle does not pass verify, so it is not written: %s", msg)
	}
	return nil
}

// fingerprintOf is the SHA256: fingerprint of an Ed25519 public key, as
// verify reports keys.
func fingerprintOf(pub any) string {
	k, ok := pub.(ed25519.PublicKey)
	if !ok {
		return "-"
	}
	s := sha256.Sum256(k)
	return "SHA256:" + hex.EncodeToString(s[:8])
}

// configScalar is the string value of a top-level key of the config file
// at path (a serve flag set there), "" when absent; the file was read
// strictly already.
func configScalar(path, key string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var doc map[string]any
	if yaml.Unmarshal(data, &doc) != nil {
		return ""
	}
	s, _ := doc[key].(string)
	return s
}
