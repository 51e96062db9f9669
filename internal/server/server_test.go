package server_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/internal/server"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func config(t *testing.T) server.Config {
	t.Helper()
	m, err := rules.LoadManifest("../../examples/manifests/sox-financial.json")
	if err != nil {
		t.Fatal(err)
	}
	return server.Config{Manifest: m, ManifestFile: "sox-financial.json", Upstream: "http://127.0.0.1:9",
		SidecarAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
		LogLevel: zerolog.Disabled, Version: "test"}
}

// TestFailedBindLeavesNothingBehind: an address in use is refused before a
// gateway key or a ledger is made, so the next start is a true first start.
func TestFailedBindLeavesNothingBehind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, door := range []string{"admin", "sidecar"} {
		t.Run(door, func(t *testing.T) {
			cfg := config(t)
			if door == "admin" {
				cfg.AdminAddr = busy.Addr().String()
			} else {
				cfg.SidecarAddr = busy.Addr().String()
			}
			s, err := server.Start(cfg, io.Discard)
			var se *server.StartError
			if !errors.As(err, &se) || se.Code != 2 {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Start on a busy address: %v, want a StartError with code 2", err)
			}
			for _, name := range []string{"gateway.key", "ledger.db"} {
				if _, err := os.Stat(filepath.Join(cfg.DataDir, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind (%v)", name, err)
				}
			}
			// The other listeners were let go: the same config on free
			// addresses starts.
			cfg.AdminAddr, cfg.SidecarAddr = "127.0.0.1:0", "127.0.0.1:0"
			s, err = server.Start(cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "gateway.key")); err != nil {
				t.Errorf("no gateway key after a good start: %v", err)
			}
		})
	}
}
