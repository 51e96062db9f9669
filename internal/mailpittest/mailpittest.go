// Package mailpittest runs a real SMTP server for tests: the mailpit binary
// that `make mailpit` installs as bin/mailpit, listening for SMTP and for its
// HTTP API on free 127.0.0.1 ports, its database in a t.TempDir(), stopped in
// t.Cleanup. Tests read what arrived through the API (Messages).
//
// A test that starts a server fails, never skips, when bin/mailpit is
// missing: the notifier's mail is only shown to arrive, headers intact, by a
// real server, and `make test` installs it.
package mailpittest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/testbin"
)

// BinEnv overrides where the mailpit binary is looked for.
const BinEnv = "UAPK_MAILPIT_BIN"

// startTimeout bounds the wait for a started server to answer.
const startTimeout = 30 * time.Second

// Options say how Start runs the server. The zero value is plain SMTP on a
// free port.
type Options struct {
	// SMTPAddr is the SMTP listen address, 127.0.0.1:PORT; "" picks a free
	// port. A test that needs a server to come up where a client already
	// points reserves the address with FreeAddr and starts it later.
	SMTPAddr string
	// TLSCert and TLSKey are PEM files: STARTTLS is offered with them.
	TLSCert, TLSKey string
	// RequireSTARTTLS makes the server refuse mail before STARTTLS.
	RequireSTARTTLS bool
}

// Server is one mailpit process.
type Server struct {
	// SMTPAddr is where it takes mail, 127.0.0.1:PORT.
	SMTPAddr string
	// APIURL is the base of its HTTP API, http://127.0.0.1:PORT.
	APIURL string

	tb      testing.TB
	logPath string
	client  *http.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// Binary returns the path of the mailpit binary: $UAPK_MAILPIT_BIN, else
// bin/mailpit at the module root.
func Binary() (string, error) { return testbin.Path(BinEnv, "mailpit") }

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start runs a server for the test, waits until both its SMTP and its HTTP
// side answer, and registers its stop. It fails the test when bin/mailpit
// is missing.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	bin, err := Binary()
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		tb.Fatalf("mailpit is needed by this test but not usable (%v): run `make mailpit`", err)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		tb.Fatal("mailpittest: TLSCert and TLSKey go together")
	}
	root := tb.TempDir()
	s := &Server{
		tb:       tb,
		SMTPAddr: o.SMTPAddr,
		logPath:  filepath.Join(root, "mailpit.log"),
		client:   &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
	if s.SMTPAddr == "" {
		s.SMTPAddr = FreeAddr(tb)
	}
	httpAddr := FreeAddr(tb)
	s.APIURL = "http://" + httpAddr
	args := []string{
		"--smtp", s.SMTPAddr,
		"--listen", httpAddr,
		"--database", filepath.Join(root, "mailpit.db"),
		"--disable-version-check", // it would ask GitHub for releases
		"--smtp-disable-rdns",
	}
	if o.TLSCert != "" {
		args = append(args, "--smtp-tls-cert", o.TLSCert, "--smtp-tls-key", o.TLSKey)
	}
	if o.RequireSTARTTLS {
		args = append(args, "--smtp-require-starttls")
	}
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("mailpit log tail:\n%s", s.logTail())
		}
	})
	s.start(bin, args)
	return s
}

func (s *Server) start(bin string, args []string) {
	s.tb.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	testbin.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.tb.Fatalf("start mailpit: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for !s.ready() {
		select {
		case <-exit:
			s.tb.Fatalf("mailpit exited at start:\n%s", s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("mailpit not ready after %s:\n%s", startTimeout, s.logTail())
		}
	}
}

// ready reports whether the HTTP side says ready and the SMTP side greets.
func (s *Server) ready() bool {
	resp, err := s.client.Get(s.APIURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c, err := net.DialTimeout("tcp", s.SMTPAddr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		return false
	}
	_, _ = io.WriteString(c, "QUIT\r\n")
	return true
}

// Stop ends the server (SIGTERM, then SIGKILL after 10s) and waits for it.
// It is idempotent; what arrived can no longer be read afterwards.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	testbin.Stop(s.cmd.Process, s.exit)
	s.cmd, s.exit = nil, nil
}

// Address is a mailbox as the API shows it.
type Address struct {
	Name    string
	Address string
}

// Message is one received mail: the API's summary and detail, its headers
// as parsed by mailpit and the raw message as received.
type Message struct {
	ID        string
	MessageID string
	From      Address
	To        []Address
	Cc        []Address
	// Bcc lists the envelope recipients that no To or Cc header names,
	// and any Bcc header: empty for mail that reached only its To.
	Bcc     []Address
	Subject string
	Created time.Time
	Text    string
	HTML    string
	// Headers are the top-level headers, by canonical name.
	Headers map[string][]string
	// Raw is the message as the server received it.
	Raw string
}

// Messages returns every message received so far, oldest first.
func (s *Server) Messages() ([]Message, error) {
	var list struct {
		Total    int
		Messages []struct {
			ID      string
			Created time.Time
		} `json:"messages"`
	}
	if err := s.getJSON("/api/v1/messages?limit=1000", &list); err != nil {
		return nil, err
	}
	if list.Total > 1000 {
		return nil, fmt.Errorf("mailpit holds %d messages, more than one page", list.Total)
	}
	// Total can count a message its list does not show yet (mailpit
	// indexes as it stores): the caller polls again.
	out := make([]Message, 0, len(list.Messages))
	for _, sum := range list.Messages {
		var m Message
		if err := s.getJSON("/api/v1/message/"+url.PathEscape(sum.ID), &m); err != nil {
			return nil, err
		}
		m.Created = sum.Created
		if err := s.getJSON("/api/v1/message/"+url.PathEscape(sum.ID)+"/headers", &m.Headers); err != nil {
			return nil, err
		}
		raw, err := s.get("/api/v1/message/" + url.PathEscape(sum.ID) + "/raw")
		if err != nil {
			return nil, err
		}
		m.Raw = string(raw)
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b Message) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// WaitMessages polls until at least n messages have arrived and returns
// them all; it fails the test after timeout.
func (s *Server) WaitMessages(tb testing.TB, n int, timeout time.Duration) []Message {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms, err := s.Messages()
		if err != nil {
			tb.Fatalf("mailpit messages: %v", err)
		}
		if len(ms) >= n {
			return ms
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mailpit has %d messages after %s, want %d", len(ms), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) getJSON(path string, v any) error {
	b, err := s.get(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("mailpit GET %s: %w", path, err)
	}
	return nil
}

func (s *Server) get(path string) ([]byte, error) {
	resp, err := s.client.Get(s.APIURL + path)
	if err != nil {
		return nil, fmt.Errorf("mailpit GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("mailpit GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mailpit GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
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
