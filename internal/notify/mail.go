package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	texttemplate "text/template"
	"time"
)

// smtpTimeout bounds one whole SMTP exchange, connection to QUIT.
const smtpTimeout = 30 * time.Second

// mailer sends one message to one recipient per connection: approvals
// are few, and a connection per message keeps a failure to its message.
type mailer struct {
	addr     string // host:port
	host     string
	from     *mail.Address
	startTLS bool
	tls      *tls.Config
	hello    string
}

func newMailer(c Config) (*mailer, error) {
	host, _, err := net.SplitHostPort(c.SMTP)
	if err != nil {
		return nil, err
	}
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return nil, err
	}
	m := &mailer{addr: c.SMTP, host: host, from: from, startTLS: c.StartTLS, hello: helloName()}
	if c.StartTLS {
		if c.TLS != nil {
			m.tls = c.TLS.Clone()
		} else {
			m.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if m.tls.ServerName == "" {
			m.tls.ServerName = host
		}
	}
	return m, nil
}

// helloName is the name given in EHLO: the host's name when it is one a
// server accepts, else localhost (as net/smtp would say).
func helloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || len(h) > 253 {
		return "localhost"
	}
	for _, r := range h {
		if !(r == '-' || r == '.' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return "localhost"
		}
	}
	return h
}

// send delivers msg to one recipient. There is no AUTH: were it added, it
// would go only over a connection that STARTTLS has upgraded.
func (m *mailer) send(ctx context.Context, to string, msg []byte) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(smtpTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	// Close (or a cancelled attempt) cuts a server that stalls mid-dialogue.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c, err := smtp.NewClient(conn, m.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(m.hello); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if m.startTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return ErrNoSTARTTLS
		}
		if err := c.StartTLS(m.tls); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if err := c.Mail(m.from.Address); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	_ = c.Quit() // the message is accepted; a lost QUIT reply changes nothing
	return nil
}

// permanent reports whether retrying cannot help: the message cannot be
// built, the SMTP server refused for good (5xx), or the webhook answered
// a client error other than timeout and rate limiting.
func permanent(err error) bool {
	var pe permanentError
	if errors.As(err, &pe) {
		return true
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code >= 500
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 400 && se.code < 500 && se.code != 408 && se.code != 425 && se.code != 429
	}
	return false
}

// view is an event as the templates show it.
type view struct {
	Headline      string
	Action        string
	App           string
	Amount        string
	Justification string
	Roles         string
	StillNeeded   string
	DecidedBy     string
	Expires       string
	ID            string
	Link          string
}

func (n *Notifier) view(e *Event) view {
	v := view{
		Headline:      headline(e.Type),
		Action:        e.Action,
		App:           e.App,
		Amount:        groupAmount(e.Amount),
		Justification: e.Justification,
		Roles:         strings.Join(e.RequiredRoles, ", "),
		StillNeeded:   strings.Join(e.StillNeeded, ", "),
		ID:            e.ApprovalID,
		Link:          n.link(e.ApprovalID),
	}
	if e.Type != TypePending && e.Type != TypeExpired {
		v.DecidedBy = e.DecidedBy
	}
	if !e.ExpiresAt.IsZero() {
		v.Expires = e.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC")
	}
	return v
}

func headline(typ string) string {
	switch typ {
	case TypePending:
		return "Approval needed"
	case TypeDecided:
		return "Approval in progress"
	case TypeApproved:
		return "Approved"
	case TypeRejected:
		return "Rejected"
	case TypeExpired:
		return "Approval expired"
	}
	return "Approval update"
}

// subject is one line such as
// "[uapk] approval needed: journal_entry 1,200,000 (apr_1)".
func subject(e *Event) string {
	what := strings.TrimSpace(e.Action + " " + groupAmount(e.Amount))
	var lead string
	switch e.Type {
	case TypePending:
		lead = "approval needed"
	case TypeDecided:
		lead = "approval in progress"
	case TypeApproved:
		lead = "approved"
	case TypeRejected:
		lead = "rejected"
	case TypeExpired:
		lead = "approval expired"
	}
	s := fmt.Sprintf("[uapk] %s: %s (%s)", lead, what, e.ApprovalID)
	if e.Type == TypeDecided && len(e.StillNeeded) > 0 {
		s += ", still needed: " + strings.Join(e.StillNeeded, ", ")
	}
	return s
}

// groupAmount writes a plain decimal with thousands separators
// ("1200000.5" is "1,200,000.5"); anything else is shown as it is.
func groupAmount(s string) string {
	sign, rest := "", s
	if strings.HasPrefix(rest, "-") {
		sign, rest = "-", rest[1:]
	}
	intPart, frac, hasFrac := strings.Cut(rest, ".")
	if intPart == "" || !digits(intPart) || hasFrac && (frac == "" || !digits(frac)) {
		return s
	}
	var b strings.Builder
	b.WriteString(sign)
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

var textTmpl = texttemplate.Must(texttemplate.New("text").Parse(`{{.Headline}}

Approval:       {{.ID}}
Action:         {{.Action}}
{{- if .App}}
App:            {{.App}}{{end}}
{{- if .Amount}}
Amount:         {{.Amount}}{{end}}
{{- if .Justification}}
Justification:  {{.Justification}}{{end}}
{{- if .Roles}}
Required roles: {{.Roles}}{{end}}
{{- if .StillNeeded}}
Still needed:   {{.StillNeeded}}{{end}}
{{- if .DecidedBy}}
Decided by:     {{.DecidedBy}}{{end}}
{{- if .Expires}}
Expires:        {{.Expires}}{{end}}

Open the approval: {{.Link}}

This is a summary from uapk-proxy; the request itself is shown only in the approvals UI.
`))

var htmlTmpl = htmltemplate.Must(htmltemplate.New("html").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Headline}}</title></head>
<body style="font-family: sans-serif">
<h2>{{.Headline}}</h2>
<table cellpadding="4">
<tr><th align="left">Approval</th><td>{{.ID}}</td></tr>
<tr><th align="left">Action</th><td>{{.Action}}</td></tr>
{{- if .App}}
<tr><th align="left">App</th><td>{{.App}}</td></tr>{{end}}
{{- if .Amount}}
<tr><th align="left">Amount</th><td>{{.Amount}}</td></tr>{{end}}
{{- if .Justification}}
<tr><th align="left">Justification</th><td>{{.Justification}}</td></tr>{{end}}
{{- if .Roles}}
<tr><th align="left">Required roles</th><td>{{.Roles}}</td></tr>{{end}}
{{- if .StillNeeded}}
<tr><th align="left">Still needed</th><td>{{.StillNeeded}}</td></tr>{{end}}
{{- if .DecidedBy}}
<tr><th align="left">Decided by</th><td>{{.DecidedBy}}</td></tr>{{end}}
{{- if .Expires}}
<tr><th align="left">Expires</th><td>{{.Expires}}</td></tr>{{end}}
</table>
<p><a href="{{.Link}}">Open the approval</a></p>
<p style="color: #666">This is a summary from uapk-proxy; the request itself is shown only in the approvals UI.</p>
</body></html>
`))

// buildMail renders the message for one recipient: a multipart/alternative
// with a text and an HTML part. Every header value is checked to be one
// line before it is written, whatever clean already did.
func (n *Notifier) buildMail(e *Event, to, msgID string, date time.Time) ([]byte, error) {
	v := n.view(e)
	var text, html bytes.Buffer
	if err := textTmpl.Execute(&text, v); err != nil {
		return nil, err
	}
	if err := htmlTmpl.Execute(&html, v); err != nil {
		return nil, err
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, p := range []struct {
		ctype string
		data  []byte
	}{
		{"text/plain; charset=utf-8", text.Bytes()},
		{"text/html; charset=utf-8", html.Bytes()},
	} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.ctype},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qw := quotedprintable.NewWriter(pw)
		if _, err := qw.Write(p.data); err != nil {
			return nil, err
		}
		if err := qw.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}

	headers := [][2]string{
		{"From", n.mail.from.String()},
		{"To", to},
		{"Subject", fold("Subject", mime.QEncoding.Encode("utf-8", subject(e)))},
		{"Date", date.Format(time.RFC1123Z)},
		{"Message-ID", msgID},
		{"MIME-Version", "1.0"},
		{"Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()})},
		{"Auto-Submitted", "auto-generated"}, // RFC 3834: no auto-replies
	}
	var msg bytes.Buffer
	for _, h := range headers {
		if strings.ContainsAny(strings.ReplaceAll(h[1], "\r\n ", ""), "\r\n") || h[1] == "" {
			return nil, fmt.Errorf("header %s: not one line", h[0])
		}
		msg.WriteString(h[0])
		msg.WriteString(": ")
		msg.WriteString(h[1])
		msg.WriteString("\r\n")
	}
	msg.WriteString("\r\n")
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}

// fold breaks a header value at spaces so that lines stay near 78
// characters (RFC 5322 section 2.2.3; never over 998): an encoded subject
// of long non-ASCII text is several encoded-words, one line each.
func fold(name, v string) string {
	var b strings.Builder
	n := len(name) + 2
	for i, w := range strings.Split(v, " ") {
		if i > 0 {
			if n+1+len(w) > 78 {
				b.WriteString("\r\n ")
				n = 1
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
