package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// applyConfig fills every serve flag the user did not set on the command
// line, from UAPK_<FLAG> or else the --config YAML file: flag > env > file >
// default (docs/reference.md#commands). Every problem is collected, none stops the others.
// sources says where each value not from the command line came from.
func applyConfig(cmd *cobra.Command, lookupEnv func(string) (string, bool)) (sources map[string]string, problems []string) {
	sources = map[string]string{}
	fs := cmd.Flags()
	file, err := configFileValues(fs, lookupEnv)
	if err != nil {
		problems = append(problems, err.Error())
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		env := envName(f.Name)
		if v, ok := lookupEnv(env); ok {
			sources[f.Name] = "env " + env
			if err := f.Value.Set(v); err != nil {
				problems = append(problems, fmt.Sprintf("env %s: %v", env, err))
			}
			return
		}
		key := strings.ReplaceAll(f.Name, "-", "_")
		if v, ok := file[key]; ok {
			sources[f.Name] = "config " + key
			if err := f.Value.Set(v); err != nil {
				problems = append(problems, fmt.Sprintf("config %s: %v", key, err))
			}
		}
	})
	return sources, problems
}

func envName(flag string) string {
	return "UAPK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// sections are the config file's keys that are not flags.
var sections = map[string]bool{"archive": true, "identity": true, "upstream_auth": true, "ui": true, "notify": true, "approvals": true}

// archiveFile is the config file's archive: section (docs/reference.md#configuration-file).
type archiveFile struct {
	S3 *struct {
		Bucket    string `yaml:"bucket"`
		Prefix    string `yaml:"prefix"`
		Region    string `yaml:"region"`
		Endpoint  string `yaml:"endpoint"`
		PathStyle bool   `yaml:"path_style"`
	} `yaml:"s3"`
	SegmentRecords  int    `yaml:"segment_records"`
	SegmentInterval string `yaml:"segment_interval"`
	// Instance names this proxy's archive among a fleet's
	// (PREFIX/APP/INSTANCE/); with approvals.postgres it defaults to the
	// host name.
	Instance string `yaml:"instance"`
}

// readSection decodes the section key of the config file at path into v,
// strictly (unknown keys are errors). A missing file or section leaves v
// as it is and reports false.
func readSection(path, key string, v any) (found bool, problems []string) {
	if path == "" {
		return false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, nil // reported by configFileValues
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return false, nil // reported by configFileValues
	}
	node, ok := doc[key]
	if !ok {
		return false, nil
	}
	if node.Kind != yaml.MappingNode {
		return true, []string{fmt.Sprintf("config %s: line %d: %s must be a mapping", path, node.Line, key)}
	}
	raw, err := yaml.Marshal(&node)
	if err != nil {
		return true, []string{fmt.Sprintf("config %s: %s: %v", path, key, err)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return true, []string{fmt.Sprintf("config %s: %s: %v", path, key, strings.ReplaceAll(err.Error(), "\n", "; "))}
	}
	return true, nil
}

// readArchive decodes the archive: section of the config file at path,
// strictly, and checks it. A missing file or section is the default:
// segments under DATA/archive.
func readArchive(path string) (*archiveFile, time.Duration, []string) {
	a := &archiveFile{}
	if _, problems := readSection(path, "archive", a); len(problems) > 0 {
		return a, 0, problems
	}
	var problems []string
	if a.S3 != nil && a.S3.Bucket == "" {
		problems = append(problems, fmt.Sprintf("config %s: archive.s3.bucket is required with archive.s3", path))
	}
	if a.SegmentRecords < 0 {
		problems = append(problems, fmt.Sprintf("config %s: archive.segment_records must be positive", path))
	}
	var every time.Duration
	if a.SegmentInterval != "" {
		var err error
		if every, err = time.ParseDuration(a.SegmentInterval); err != nil || every <= 0 {
			problems = append(problems, fmt.Sprintf("config %s: archive.segment_interval %q: want a duration such as 1m", path, a.SegmentInterval))
		}
	}
	return a, every, problems
}

// configFileValues reads the --config file strictly: every key must be a
// serve flag (dashes as underscores) or a section the proxy knows.
func configFileValues(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) (map[string]string, error) {
	if !fs.Changed("config") {
		if v, ok := lookupEnv(envName("config")); ok {
			_ = fs.Set("config", v) // a string flag takes any value
		}
	}
	path, _ := fs.GetString("config")
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	out := map[string]string{}
	var bad []string
	for key, node := range doc {
		if _, ok := sections[key]; ok {
			continue // read by its own strict decoder
		}
		f := fs.Lookup(strings.ReplaceAll(key, "_", "-"))
		if f == nil || key == "config" || strings.Contains(key, "-") {
			bad = append(bad, fmt.Sprintf("config %s: line %d: unknown key %q", path, node.Line, key))
			continue
		}
		if node.Kind != yaml.ScalarNode {
			bad = append(bad, fmt.Sprintf("config %s: line %d: %s must be a single value", path, node.Line, key))
			continue
		}
		out[key] = node.Value
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return out, errors.New(strings.Join(bad, "\n"))
	}
	return out, nil
}

// parseSize reads sizes such as 10MiB, 512KiB, 1MB or a plain byte count.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive byte count such as 10MiB, 512KiB or 1048576", s)
	}
	if n > (1<<40)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
