package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// hangProxy is a loopback TCP proxy in front of the S3 server that can be
// made to hang like a stopped process (SIGSTOP): connections are still
// accepted (the kernel does that for a stopped server too), but no byte
// moves either way until resume.
type hangProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused chan struct{} // non-nil while paused; closed by resume
	conns  []net.Conn
	stuck  map[net.Conn]bool // connections hung for good (stickExisting)
	done   chan struct{}     // closed by close
}

func newHangProxy(t *testing.T, target string) *hangProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{ln: ln, target: target, done: make(chan struct{})}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *hangProxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *hangProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

func (p *hangProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// stickExisting hangs every connection open now for good, as a dead path
// (a stuck NAT mapping, a wedged load balancer backend) would; new
// connections go through.
func (p *hangProxy) stickExisting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stuck == nil {
		p.stuck = map[net.Conn]bool{}
	}
	for _, c := range p.conns {
		p.stuck[c] = true
	}
}

// wait blocks while the proxy is paused, and until the proxy closes when
// the connection c is stuck.
func (p *hangProxy) wait(c net.Conn) {
	p.mu.Lock()
	ch, stuck := p.paused, p.stuck[c]
	p.mu.Unlock()
	switch {
	case stuck:
		<-p.done
	case ch != nil:
		<-ch
	}
}

func (p *hangProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *hangProxy) close() {
	p.resume()
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *hangProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		go func() {
			p.wait(c)
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			p.track(s)
			go p.pipe(s, c, c)
			p.pipe(c, s, c)
		}()
	}
}

// pipe copies src to dst, holding every chunk while paused or while the
// client connection c is stuck.
func (p *hangProxy) pipe(dst, src, c net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait(c)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// syncBuffer is a log sink the archiver's timer goroutine and the test can
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log lines with the given message prefix.
func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	raw := s.b.String()
	s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(raw, "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if s, _ := m["message"].(string); strings.HasPrefix(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// TestS3HangIsLoggedAndCounted: an S3 that hangs (a stopped MinIO, here a
// paused TCP proxy before it) for less than the request timeout is not
// silent: within the slow threshold the archiver logs a warn line naming
// the upload's key, the time so far, the attempt and the backlog, counts it
// in Status.SlowUploads and shows it in flight; failures stay 0. Once the
// server answers again the upload completes and every record is archived,
// each object stored once.
func TestS3HangIsLoggedAndCounted(t *testing.T) {
	srv := startMinio(t)
	hang := newHangProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	var logs syncBuffer
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 5)
	cfg := s3Config(srv, "worm", "audit/uapk")
	cfg.S3.Endpoint = hang.endpoint()
	cfg.SlowUpload = 300 * time.Millisecond
	cfg.RequestTimeout = 30 * time.Second // the hang below is far shorter
	cfg.Logger = zerolog.New(io.Writer(&logs)).Level(zerolog.InfoLevel)
	a := mustArchiver(t, l, cfg, nil)
	t.Cleanup(func() { a.Close() })
	ctx := context.Background()
	if err := a.Flush(ctx); err != nil { // store checked, first segment up
		t.Fatal(err)
	}
	if st := a.Status(); st.ArchivedSeq != 5 || st.SlowUploads != 0 {
		t.Fatalf("before the hang: %+v", st)
	}

	appendN(t, l, 5)
	hang.pause()
	start := time.Now()
	flushed := make(chan error, 1)
	go func() { flushed <- a.Flush(ctx) }()

	var warn map[string]any
	for warn == nil {
		if w := logs.lines(t, "archive upload slow: the store has not answered"); len(w) > 0 {
			warn = w[0]
			break
		}
		if time.Since(start) > 5*time.Second {
			hang.resume()
			t.Fatalf("no slow-upload warning %s into a hang (threshold %s); status %+v", time.Since(start), cfg.SlowUpload, a.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := time.Since(start)
	wantKey := segmentKey("audit/uapk/erp-agent", 6, 12) // 6 and 7: the first segment's checkpoint and archive records
	if warn["level"] != "warn" || warn["key"] != wantKey || warn["op"] != "upload" ||
		warn["attempt"] != 1.0 || warn["backlog"] == nil || warn["elapsed"] == nil {
		t.Errorf("warn line %v, want level warn, key %s, attempt 1, elapsed and backlog", warn, wantKey)
	}
	if b, _ := warn["backlog"].(float64); b != 5 {
		t.Errorf("warn line backlog %v, want 5", warn["backlog"])
	}
	st := a.Status()
	if st.SlowUploads != 1 || st.InFlight != wantKey || st.InFlightSeconds < cfg.SlowUpload.Seconds() || st.Failures != 0 {
		t.Errorf("status during the hang: slow_uploads %d, in_flight %q %.2fs, failures %d",
			st.SlowUploads, st.InFlight, st.InFlightSeconds, st.Failures)
	}
	t.Logf("slow upload logged %s into the hang (threshold %s, request timeout %s)", seen, cfg.SlowUpload, cfg.RequestTimeout)

	time.Sleep(time.Second) // still hung: logged once, not again
	if n := len(logs.lines(t, "archive upload slow: the store has not answered")); n != 1 {
		t.Errorf("%d slow-upload warnings for one upload, want 1", n)
	}
	hang.resume()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("flush after the hang: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("flush did not complete after the server came back")
	}
	st = a.Status()
	head := l.Head().Seq
	if st.ArchivedSeq != 12 || st.Backlog != 0 || st.InFlight != "" || st.InFlightSeconds != 0 || st.Failures != 0 {
		t.Errorf("after the hang: %+v (head %d)", st, head)
	}
	if len(logs.lines(t, "archive upload slow: the store answered at last")) == 0 {
		t.Error("no line saying the slow upload ended")
	}
	objs := versions(t, srv.Client(), "worm", "audit/uapk/erp-agent/")
	for _, key := range []string{
		segmentKey("audit/uapk/erp-agent", 1, 5), checkpointKey("audit/uapk/erp-agent", 5),
		segmentKey("audit/uapk/erp-agent", 6, 12), checkpointKey("audit/uapk/erp-agent", 12),
	} {
		if len(objs[key]) != 1 {
			t.Errorf("%s: %d versions, want 1", key, len(objs[key]))
		}
	}
	mustVerify(t, l, head)
}

// TestS3StalledConnectionIsRetried: a connection that hangs for good (the
// path to the server died; new connections get through) is abandoned after
// StallTimeout and the upload goes on a new one, long before the request
// timeout; nothing is stored twice.
func TestS3StalledConnectionIsRetried(t *testing.T) {
	srv := startMinio(t)
	hang := newHangProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 5)
	cfg := s3Config(srv, "worm", "audit/uapk")
	cfg.S3.Endpoint = hang.endpoint()
	cfg.StallTimeout = 500 * time.Millisecond
	cfg.RequestTimeout = 30 * time.Second
	a := mustArchiver(t, l, cfg, nil)
	t.Cleanup(func() { a.Close() })
	ctx := context.Background()
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 5)
	hang.stickExisting() // the kept-alive connection the next upload takes
	start := time.Now()
	err := a.Flush(ctx)
	took := time.Since(start)
	if err != nil {
		// The SDK retries a stalled attempt itself; if it did not, the
		// archiver's next step would. Either way the next Flush completes.
		t.Logf("flush over the stuck connection: %v (after %s)", err, took)
		if err := a.Flush(ctx); err != nil {
			t.Fatalf("flush on a new connection: %v", err)
		}
		took = time.Since(start)
	}
	if took > 10*time.Second {
		t.Errorf("the upload over a stuck connection took %s; stall timeout %s, request timeout %s", took, cfg.StallTimeout, cfg.RequestTimeout)
	}
	t.Logf("upload over a stuck connection completed in %s (stall timeout %s)", took, cfg.StallTimeout)
	if st := a.Status(); st.ArchivedSeq != 12 || st.Backlog != 0 {
		t.Errorf("status %+v", st)
	}
	objs := versions(t, srv.Client(), "worm", "audit/uapk/erp-agent/")
	for _, key := range []string{segmentKey("audit/uapk/erp-agent", 6, 12), checkpointKey("audit/uapk/erp-agent", 12)} {
		if len(objs[key]) != 1 {
			t.Errorf("%s: %d versions, want 1", key, len(objs[key]))
		}
	}
}
