// Package miniotest runs a real MinIO server for tests: the binary that
// `make minio` installs as bin/minio, on 127.0.0.1 with a free port, data in
// a t.TempDir(), stopped in t.Cleanup. It exists because Object Lock is the
// point of the archive, and only a real server shows what it refuses.
//
// Tests skip when bin/minio is absent, unless UAPK_REQUIRE_MINIO is set (as
// `make test` does), in which case they fail: CI must never pass by
// skipping the archive's proof.
package miniotest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/testbin"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Credentials of every test server; tests hand them to the code under test
// through the standard AWS environment variables (SetEnv).
const (
	AccessKey = "uapk-test"
	SecretKey = "uapk-test-secret-0123456789"
	Region    = "us-east-1"
)

// RequireEnv, when set to anything, turns a missing MinIO into a failure.
const RequireEnv = "UAPK_REQUIRE_MINIO"

// BinEnv overrides where the minio binary is looked for.
const BinEnv = "UAPK_MINIO_BIN"

// startTimeout bounds the wait for a (re)started server to answer.
const startTimeout = 60 * time.Second

// Server is one MinIO process. Stop and Restart simulate an outage: the data
// directory and the port are kept.
type Server struct {
	// Endpoint is the S3 URL, http://127.0.0.1:PORT.
	Endpoint string

	tb      testing.TB
	bin     string
	dir     string // data
	certs   string
	addr    string
	console string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// Binary returns the path of the minio binary: $UAPK_MINIO_BIN, else bin/minio
// at the module root.
func Binary() (string, error) { return testbin.Path(BinEnv, "minio") }

// Start runs a server for the test and registers its stop. It skips the
// test when MinIO is not installed and RequireEnv is unset.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := Binary()
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			tb.Fatalf("MinIO is required (%s is set) but not usable: %v; run `make minio`", RequireEnv, err)
		}
		tb.Skipf("MinIO not installed (%v): run `make minio` to run this test; set %s=1 to fail instead of skipping", err, RequireEnv)
	}
	root := tb.TempDir()
	s := &Server{
		tb: tb, bin: bin,
		dir:     filepath.Join(root, "data"),
		certs:   filepath.Join(root, "certs"),
		logPath: filepath.Join(root, "minio.log"),
		addr:    freeAddr(tb),
		console: freeAddr(tb),
	}
	s.Endpoint = "http://" + s.addr
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("minio log tail:\n%s", s.logTail())
		}
	})
	s.start()
	return s
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *Server) start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.tb.Fatal("miniotest: already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.addr,
		"--console-address", s.console, "--certs-dir", s.certs, s.dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=on", // the temp dir may be on the root disk
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	testbin.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.tb.Fatalf("start minio: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.cmd, s.exit = cmd, exit

	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exit:
			s.tb.Fatalf("minio exited at start:\n%s", s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("minio not ready after %s:\n%s", startTimeout, s.logTail())
		}
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after 10s) and waits for it.
// It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	testbin.Stop(s.cmd.Process, s.exit)
	s.cmd, s.exit = nil, nil
}

// Restart starts the server again on the same port and data directory.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

// Port is the server's TCP port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// SetEnv points the standard AWS credential chain at this server's
// credentials for the rest of the test, and away from any shared files.
func (s *Server) SetEnv(tb testing.TB) {
	tb.Helper()
	tb.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	tb.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	tb.Setenv("AWS_SESSION_TOKEN", "")
	tb.Setenv("AWS_REGION", Region)
	tb.Setenv("AWS_PROFILE", "")
	tb.Setenv("AWS_CONFIG_FILE", filepath.Join(s.certs, "no-aws-config"))
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(s.certs, "no-aws-credentials"))
	tb.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// Client is an S3 client with the server's root credentials, for test
// set-up and for checking what the server holds and refuses.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     Region,
		BaseEndpoint:               aws.String(s.Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// BucketOptions say how MakeBucket creates a bucket.
type BucketOptions struct {
	ObjectLock bool // Object Lock enabled at creation (implies versioning)
	Versioning bool // versioning without Object Lock
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(tb testing.TB, name string, o BucketOptions) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	in := &s3.CreateBucketInput{Bucket: &name}
	if o.ObjectLock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := c.CreateBucket(ctx, in); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
	if o.Versioning && !o.ObjectLock {
		_, err := c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
			Bucket:                  &name,
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
		})
		if err != nil {
			tb.Fatalf("enable versioning on %s: %v", name, err)
		}
	}
}

func (s *Server) logTail() string {
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
