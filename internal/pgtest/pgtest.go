// Package pgtest runs a real PostgreSQL server for tests: Debian's server
// binaries (/usr/lib/postgresql/VERSION/bin, or $UAPK_PG_BIN), a cluster
// made by initdb in a temporary directory, listening on 127.0.0.1 with a
// free port and trust authentication, stopped and removed at cleanup. It
// exists because the shared approval queue's single use is decided by
// PostgreSQL's row locks, and only a real server shows what they refuse.
//
// A missing server is a failure, never a skip: CI must not pass by
// skipping the proof of single use across the fleet.
//
// initdb refuses to run as root, so as root the cluster belongs to the
// postgres OS user and both initdb and postgres run as it.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinEnv names the directory of initdb and postgres, overriding the search
// of /usr/lib/postgresql/*/bin.
const BinEnv = "UAPK_PG_BIN"

// missing is what a test is told when no server can be found.
const missing = "install Debian's postgresql (.ci/run does)"

// startTimeout bounds the wait for a (re)started server to accept
// connections.
const startTimeout = 60 * time.Second

// Server is one PostgreSQL cluster and its postmaster. Kill and Restart
// simulate an outage: the data directory and the port are kept.
type Server struct {
	// Port is the TCP port on 127.0.0.1.
	Port int

	bin     string
	root    string // owns everything below; removed by Stop
	data    string
	sock    string
	logPath string
	owner   *owner // nil: run as ourselves

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// BinDir returns the directory holding initdb and postgres: $UAPK_PG_BIN,
// else the newest /usr/lib/postgresql/*/bin that has both.
func BinDir() (string, error) {
	if d := os.Getenv(BinEnv); d != "" {
		if err := hasServer(d); err != nil {
			return "", fmt.Errorf("%s=%s: %w; %s", BinEnv, d, err, missing)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first: "15" sorts after "9" numerically only.
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if hasServer(d) == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server in /usr/lib/postgresql/*/bin and %s unset: %s", BinEnv, missing)
}

func version(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func hasServer(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// Start runs a server for the test, stopped and removed at its cleanup. It
// fails the test, never skips it, when PostgreSQL is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("postgres log tail:\n%s", s.LogTail())
		}
		s.Stop()
	})
	return s
}

// New makes a cluster and starts its server, for a TestMain that shares
// one server between a package's tests; the caller must Stop it.
func New() (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if err := s.setUp(); err != nil {
		s.Stop()
		return nil, err
	}
	// A port picked free may be taken before postgres binds it: try others.
	for attempt := 0; ; attempt++ {
		s.Port, err = freePort()
		if err == nil {
			err = s.start()
		}
		if err == nil {
			return s, nil
		}
		if attempt == 2 || !strings.Contains(s.LogTail(), "could not bind") {
			tail := s.LogTail()
			s.Stop()
			return nil, fmt.Errorf("%w\n%s", err, tail)
		}
	}
}

// setUp makes the root directory, owned by the user postgres runs as, and
// runs initdb in it.
func (s *Server) setUp() error {
	root, err := os.MkdirTemp("", "uapk-pgtest-")
	if err != nil {
		return err
	}
	s.root = root
	s.data, s.sock = filepath.Join(root, "data"), filepath.Join(root, "sock")
	s.logPath = filepath.Join(root, "postgres.log")
	if err := os.Mkdir(s.sock, 0o700); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, initdb needs the postgres OS user: %w; %s", err, missing)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.owner = &owner{uid: uid, gid: gid}
		for _, p := range []string{root, s.sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
		}
	}
	var out bytes.Buffer
	cmd := s.command("initdb", "-D", s.data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out.String())
	}
	return nil
}

// command runs a server binary as the cluster's owner, in its own process
// group (so that Kill reaches every backend), killed with the test binary.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.root // the owner may not be able to enter ours
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=" + s.root}
	setProc(cmd, s.owner)
	return cmd
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start runs the postmaster and waits until it accepts connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := s.command("postgres", "-D", s.data, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+s.sock,
		// Speed for a test cluster: only an OS crash loses what fsync=off
		// leaves in the page cache. synchronous_commit stays on, so a
		// commit survives Kill (the WAL is written before it returns).
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.cmd, s.exit = cmd, exit

	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exit:
			s.cmd, s.exit = nil, nil
			return fmt.Errorf("postgres exited at start: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not accepting connections after %s: %v", startTimeout, err)
		}
	}
}

// DSN returns the URL of database db on this server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

var dbSeq atomic.Int64

var notName = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDB creates an empty database named after the test and returns its DSN.
func (s *Server) NewDB(tb testing.TB) string {
	tb.Helper()
	name := notName.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
	dsn, err := s.CreateDB(name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// CreateDB creates database name (lower case letters, digits and _) and
// returns its DSN.
func (s *Server) CreateDB(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.DSN(name), nil
}

// Kill ends the postmaster and every backend at once with SIGKILL, as a
// crash or an OOM kill would, and waits for the postmaster to be gone.
// Restart brings the server back (with crash recovery).
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	killGroup(s.cmd)
	<-s.exit
	s.cmd, s.exit = nil, nil
}

// Restart stops the server if it runs (fast shutdown) and starts it again
// on the same port and data directory.
func (s *Server) Restart() error {
	s.stop()
	return s.start()
}

// Stop shuts the server down (fast: SIGINT, SIGKILL to its process group
// after 10 s) and removes its directory. It is idempotent.
func (s *Server) Stop() {
	s.stop()
	if s.root != "" {
		_ = os.RemoveAll(s.root)
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exit:
	case <-time.After(10 * time.Second):
		killGroup(s.cmd)
		<-s.exit
	}
	s.cmd, s.exit = nil, nil
}

// LogTail returns the end of the server's log.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
