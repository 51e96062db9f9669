package cli

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// TestLogLinesNameOneComponent: every line serve writes names its
// component exactly once; the archive's lines are component=archive, not a
// second component key after the proxy's.
func TestLogLinesNameOneComponent(t *testing.T) {
	e := newEnv(t)
	e.do("GET", "/api/v1/accounts", "") // something to archive at close
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "archiver started") })
	e.stop()
	var archive int
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(e.logs.String())), []byte("\n")) {
		if n := bytes.Count(line, []byte(`"component":`)); n != 1 {
			t.Errorf("%d component keys in %s", n, line)
		}
		if bytes.Contains(line, []byte(`"component":"archive"`)) {
			archive++
		}
	}
	if archive < 2 {
		t.Errorf("%d archive lines, want the start and the segment sealed at close:\n%s", archive, e.logs.String())
	}
}

// freeAddr is a loopback address nothing listens on (at the moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestFailedBindLeavesNothingBehind: a start whose admin address is taken
// exits 2 before it creates the data directory, the gateway key or a config
// record, and lets go of the door it had bound already.
func TestFailedBindLeavesNothingBehind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	start := func(o serveOptions) {
		t.Helper()
		o.SidecarAddr, o.AdminAddr = freeAddr(t), busy.Addr().String()
		_, err := startServer(&o, io.Discard)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "--admin-addr") {
			t.Fatalf("start with the admin address taken: %v", err)
		}
		ln, err := net.Listen("tcp", o.SidecarAddr)
		if err != nil {
			t.Fatalf("the sidecar door's address is still held: %v", err)
		}
		ln.Close()
	}

	// A first start: nothing is created.
	dir := t.TempDir()
	fresh := serveOptions{Manifest: exampleManifest, Principals: writePrincipals(t, dir), Upstream: "http://127.0.0.1:9",
		DataDir: filepath.Join(dir, "data"), MaxBody: "10MiB", LogLevel: "info"}
	start(fresh)
	if _, err := os.Stat(fresh.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a start that could not bind left %s (%v)", fresh.DataDir, err)
	}

	// An install that ran before keeps its key and its chain as they were.
	e := newEnv(t)
	// A request first: a Sidecar shut down before its Serve has begun
	// keeps serving (proxy.Sidecar's race, not this test's subject).
	e.do("GET", "/api/v1/accounts", "")
	e.stop()
	keyBefore, err := os.ReadFile(filepath.Join(e.opts.DataDir, "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	head := func() ledger.Head {
		l, err := ledger.Open(filepath.Join(e.opts.DataDir, "ledger.db"), ledger.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Head()
	}
	headBefore := head()
	start(*e.opts)
	if keyAfter, _ := os.ReadFile(filepath.Join(e.opts.DataDir, "gateway.key")); !bytes.Equal(keyAfter, keyBefore) {
		t.Error("a start that could not bind changed the gateway key")
	}
	if h := head(); h != headBefore {
		t.Errorf("a start that could not bind wrote to the chain: head %+v, was %+v", h, headBefore)
	}
}
