package cli

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// runCLI runs the command line in-process and returns the exit code main
// would use.
func runCLI(t *testing.T, stdout io.Writer, args ...string) int {
	t.Helper()
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	var stderr bytes.Buffer
	root.SetErr(&stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	if w, ok := stdout.(*bytes.Buffer); ok {
		w.WriteString(err.Error())
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name, file string
		code       int
		want       []string
	}{
		{"seed loads unchanged, with warnings", "../../rules/testdata/seed-manifest.json", 0,
			[]string{"warning: tool_restrictions.denylist", "ok: app financial-ai-assistant"}},
		{"example", "../../examples/manifests/sox-financial.json", 0, []string{"ok: app financial-ai-assistant, 7 actions"}},
		{"missing file", "nope.json", 1, []string{"nope.json"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := runCLI(t, &out, "check", c.file); code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestCheckListsEveryProblem(t *testing.T) {
	bad := `{"app_id":"x","version":"1","actions":{
	  "a":{"description":"d","approval_policy":"MAYBE"},
	  "b":{"description":"d","approval_policy":"DUAL_APPROVAL","roles_required":["cfo"],"amount_cap":-5},
	  "c":{"description":"d","approval_policy":"AUTO_APPROVE","match":[{"method":"GET","path":"no-slash"}],"colour":"red"}}}`
	path := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(path, []byte(bad), 0o644)
	var out bytes.Buffer
	if code := runCLI(t, &out, "check", path); code != 1 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, p := range []string{"actions.a.approval_policy", "actions.b.roles_required", "actions.b.amount_cap", "actions.c.match[0].path", "actions.c.colour"} {
		if !strings.Contains(out.String(), p) {
			t.Errorf("no problem reported at %s:\n%s", p, out.String())
		}
	}
}

func TestServeRefusesBadConfigurationWithExit2(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("sidecar_addr: 127.0.0.1:0\nno_such_key: 1\n"), 0o644)
	var out bytes.Buffer
	code := runCLI(t, &out, "serve", "--config", cfg, "--manifest", filepath.Join(dir, "missing.json"),
		"--admin-addr", "nonsense", "--max-body", "lots", "--data-dir", filepath.Join(dir, "d"))
	if code != 2 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, w := range []string{`unknown key "no_such_key"`, "missing.json", "--admin-addr", "--max-body"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("problem %q not listed:\n%s", w, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Errorf("data dir created despite invalid configuration")
	}
}

func TestConfigPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("sidecar_addr: 127.0.0.1:1111\nadmin_addr: 127.0.0.1:2222\nproxy_addr: 127.0.0.1:3333\nmax_body: 1MiB\n"), 0o644)
	cmd := newServe()
	cmd.ParseFlags([]string{"--config", cfg, "--sidecar-addr", "127.0.0.1:4444"})
	env := map[string]string{"UAPK_ADMIN_ADDR": "127.0.0.1:5555"}
	if _, p := applyConfig(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); len(p) > 0 {
		t.Fatal(p)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	want := map[string]string{
		"sidecar-addr": "127.0.0.1:4444", // flag beats env and file
		"admin-addr":   "127.0.0.1:5555", // env beats file
		"proxy-addr":   "127.0.0.1:3333", // file beats default
		"data-dir":     "./data",         // default
		"max-body":     "1MiB",
	}
	for k, v := range want {
		if got := get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// A bad env value is reported with its variable name.
	t.Setenv("UAPK_MAX_BODY", "-3")
	var out bytes.Buffer
	if code := runCLI(t, &out, "serve", "--manifest", "../../examples/manifests/sox-financial.json",
		"--upstream", "http://127.0.0.1:9", "--data-dir", filepath.Join(dir, "d")); code != 2 ||
		!strings.Contains(out.String(), "--max-body (from env UAPK_MAX_BODY)") {
		t.Errorf("exit %d: %s", code, out.String())
	}
}

func TestParseSize(t *testing.T) {
	cases := map[string]int64{"10MiB": 10 << 20, "512KiB": 512 << 10, "1MB": 1e6, "2048": 2048, "1 GiB": 1 << 30}
	for in, want := range cases {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "10XB", "ten", "99999999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestKeygen(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "cfo")
	var out bytes.Buffer
	if code := runCLI(t, &out, "keygen", "--out", prefix); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	st, err := os.Stat(prefix + ".key")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", st.Mode(), err)
	}
	pub, _ := os.ReadFile(prefix + ".pub")
	if !strings.Contains(string(pub), "BEGIN PUBLIC KEY") {
		t.Errorf("public key %s", pub)
	}
	if code := runCLI(t, &out, "keygen", "--out", prefix); code != 1 {
		t.Errorf("overwrote an existing key: exit %d", code)
	}
}

func TestVerifyDetectsATamperedLedgerFile(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/api/v1/journal-entries", accrual250k)
	e.do("POST", "/api/v1/journal-entries", adjust1200k)
	e.stop()
	tamperRecord(t, filepath.Join(e.opts.DataDir, "ledger.db"), 3, "1200000", "1100000")
	var out bytes.Buffer
	code := runCLI(t, &out, "verify", "--data-dir", e.opts.DataDir)
	if code != 1 || !strings.Contains(out.String(), "broken at seq 3") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

// tamperRecord edits one stored record in place, as someone with write
// access to the file would.
func tamperRecord(t *testing.T, path string, seq uint64, from, to string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(ledger.BucketRecords))
		key := make([]byte, 8)
		binary.BigEndian.PutUint64(key, seq)
		v := string(b.Get(key))
		if !strings.Contains(v, from) {
			t.Fatalf("record %d lacks %q: %s", seq, from, v)
		}
		return b.Put(key, []byte(strings.Replace(v, from, to, 1)))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyArchiveAgainstTheLocalChain(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/api/v1/journal-entries", accrual250k)
	e.do("POST", "/api/v1/journal-entries", adjust1200k)
	e.stop() // seals the pending segment into DATA/archive
	manifest := "../../examples/manifests/sox-financial.json"
	var out bytes.Buffer
	if code := runCLI(t, &out, "verify", "--data-dir", e.opts.DataDir, "--archive", "--manifest", manifest); code != 0 ||
		!strings.Contains(out.String(), "archive ok") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	segs, _ := filepath.Glob(filepath.Join(e.opts.DataDir, "archive", "*", "segments", "*.jsonl"))
	if len(segs) == 0 {
		t.Fatal("no archived segment")
	}
	b, _ := os.ReadFile(segs[0])
	os.Chmod(segs[0], 0o644)
	os.WriteFile(segs[0], bytes.Replace(b, []byte("1200000"), []byte("1100000"), 1), 0o444)
	out.Reset()
	if code := runCLI(t, &out, "verify", "--data-dir", e.opts.DataDir, "--archive", "--manifest", manifest); code != 1 ||
		!strings.Contains(out.String(), "segment_mismatch") {
		t.Fatalf("tampered segment: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := runCLI(t, &out, "verify", "--data-dir", e.opts.DataDir, "--archive"); code != 2 {
		t.Fatalf("--archive without --manifest: exit %d: %s", code, out.String())
	}
}
