package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/internal/server"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// mountTmpfs mounts a small tmpfs for the test, the only way to see a real
// ENOSPC; it skips only when the kernel refuses the mount.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v: %s): run as root to test a full disk", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestRestartOnFullDisk: a start whose ledger cannot be written for want
// of space is the operator's to fix (code 2), and says which file, how
// much is free and what to do; once space is freed the same start works.
func TestRestartOnFullDisk(t *testing.T) {
	vol := mountTmpfs(t, "4m")
	cfg := config(t)
	cfg.DataDir = filepath.Join(vol, "data")
	s, err := server.Start(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The disk fills while the proxy is stopped, and its last appends
	// took what room the file had.
	filler := filepath.Join(vol, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	dbPath := filepath.Join(cfg.DataDir, "ledger.db")
	l, err := ledger.Open(dbPath, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if _, err = l.Append(context.Background(), ledger.Entry{Kind: record.KindRequest, App: "a", Decision: record.Deny,
			Reason: record.PolicyDeny, Data: map[string]any{"detail": strings.Repeat("y", 300)}}); err != nil {
			break
		}
	}
	l.Close()
	if !errors.Is(err, ledger.ErrNoSpace) {
		t.Fatalf("filling the ledger: %v", err)
	}

	s, err = server.Start(cfg, io.Discard)
	var se *server.StartError
	if !errors.As(err, &se) || se.Code != 2 {
		if s != nil {
			s.Close()
		}
		t.Fatalf("start on a full disk: %v, want a StartError with code 2", err)
	}
	msg := err.Error()
	for _, want := range []string{"ledger: no space left on device writing " + dbPath, "bytes free on " + vol, "free space on that volume and start again"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s, err = server.Start(cfg, io.Discard)
	if err != nil {
		t.Fatalf("start with space freed: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStartRecordsOutcomesBeforeConfig: allow records the last run left
// without a forward record get their outcome records at start, before
// this start's config record, and only once.
func TestStartRecordsOutcomesBeforeConfig(t *testing.T) {
	cfg := config(t)
	s, err := server.Start(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(cfg.DataDir, "ledger.db")
	l, err := ledger.Open(dbPath, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// As a crash leaves it: an allow record, no forward record.
	req, err := l.Append(context.Background(), ledger.Entry{Kind: record.KindRequest, App: cfg.Manifest.AppID,
		Action: "create_journal_entry", Decision: record.Allow, Reason: record.AutoApprove, Digest: strings.Repeat("ab", 32),
		Policy: cfg.Manifest.Hash, Data: map[string]any{"door": "sidecar", "method": "POST", "url": "http://erp/x"}})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	for range 2 {
		s, err = server.Start(cfg, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	l, err = ledger.Open(dbPath, ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var kinds []string
	_ = l.Range(req.Seq+1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var r ledger.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if r.Kind == record.KindOutcome || r.Kind == record.KindConfig || r.Kind == record.KindRequest {
			kinds = append(kinds, string(r.Kind)+"/"+string(r.Reason))
		}
		return nil
	})
	want := []string{"outcome/crash_recovery", "config/start", "config/start"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Errorf("records after the cut-short request: %v, want %v", kinds, want)
	}
}
