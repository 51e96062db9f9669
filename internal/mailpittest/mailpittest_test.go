package mailpittest_test

import (
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/mailpittest"
)

// The helper itself: a server starts, takes one mail and shows it through
// the API with its envelope recipient, headers and raw form.
func TestStartAndMessages(t *testing.T) {
	s := mailpittest.Start(t, mailpittest.Options{})
	msg := "From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nbody\r\n"
	if err := smtp.SendMail(s.SMTPAddr, nil, "a@example.test", []string{"b@example.test"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	ms := s.WaitMessages(t, 1, 10*time.Second)
	if len(ms) != 1 {
		t.Fatalf("%d messages, want 1", len(ms))
	}
	m := ms[0]
	if m.Subject != "hello" || len(m.To) != 1 || m.To[0].Address != "b@example.test" || len(m.Bcc) != 0 {
		t.Errorf("message = %+v", m)
	}
	if got := m.Headers["Subject"]; len(got) != 1 || got[0] != "hello" {
		t.Errorf("Subject header = %q", got)
	}
	if !strings.Contains(m.Raw, "\r\n\r\nbody") || strings.TrimSpace(m.Text) != "body" {
		t.Errorf("raw %q, text %q", m.Raw, m.Text)
	}
	s.Stop()
	s.Stop() // idempotent
	if _, err := s.Messages(); err == nil {
		t.Error("Messages after Stop: no error")
	}
}
