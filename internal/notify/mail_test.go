package notify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/mailpittest"
	"github.com/uapk-gateway/uapk-proxy/internal/notify"
)

func mailConfig(t *testing.T, smtpAddr string, rec *recorder) notify.Config {
	cfg := config(t, rec)
	cfg.SMTP = smtpAddr
	return cfg
}

// A pending approval reaches each approver with an address as a mail of
// its own: both parts, the link, their own To and the summary subject.
func TestPendingMailToRecipients(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	rec := &recorder{}
	n := start(t, mailConfig(t, mp.SMTPAddr, rec))

	n.Notify(pending("apr_01J8",
		notify.Recipient{ID: "cfo", Email: "cfo@corp.example"},
		notify.Recipient{ID: "agent"}, // no address: not mailed
		notify.Recipient{ID: "controller", Email: "controller@corp.example"},
		notify.Recipient{ID: "controller-alias", Email: "Controller@corp.example"}, // same mailbox
	))
	ds := rec.waitFor(t, "two final outcomes", finals(2))
	var channels []string
	for _, d := range ds {
		if !d.OK || !d.Final || d.Attempt != 1 || d.Error != "" {
			t.Errorf("outcome %+v, want delivered on attempt 1", d)
		}
		channels = append(channels, d.Channel)
	}
	slices.Sort(channels)
	if want := []string{"email:cfo@corp.example", "email:controller@corp.example"}; !slices.Equal(channels, want) {
		t.Errorf("channels %q, want %q", channels, want)
	}

	ms := mp.WaitMessages(t, 2, waitLimit)
	if len(ms) != 2 {
		t.Fatalf("%d messages, want 2", len(ms))
	}
	link := testUI + "/ui/approvals/apr_01J8"
	var to []string
	for _, m := range ms {
		if len(m.To) != 1 || len(m.Cc) != 0 || len(m.Bcc) != 0 {
			t.Errorf("recipients To %v Cc %v Bcc %v, want one To", m.To, m.Cc, m.Bcc)
			continue
		}
		to = append(to, m.To[0].Address)
		if want := "[uapk] approval needed: journal_entry 1,200,000 (apr_01J8)"; m.Subject != want {
			t.Errorf("Subject %q, want %q", m.Subject, want)
		}
		if m.From.Address != "uapk@corp.example" || m.From.Name != "UAPK Gateway" {
			t.Errorf("From %+v", m.From)
		}
		if ct := first(m.Headers, "Content-Type"); !strings.HasPrefix(ct, "multipart/alternative;") {
			t.Errorf("Content-Type %q, want multipart/alternative", ct)
		}
		if d := first(m.Headers, "Date"); d != testNow.Format(time.RFC1123Z) {
			t.Errorf("Date %q", d)
		}
		if id := first(m.Headers, "Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@corp.example>") {
			t.Errorf("Message-ID %q", id)
		}
		for _, part := range []string{"Content-Type: text/plain; charset=utf-8", "Content-Type: text/html; charset=utf-8"} {
			if !strings.Contains(m.Raw, part) {
				t.Errorf("raw message has no part %q", part)
			}
		}
		for _, want := range []string{link, "journal_entry", "1,200,000", "finance-agent", "cfo, controller", "Berlin office lease", "2026-03-05 05:06 UTC"} {
			if !strings.Contains(m.Text, want) {
				t.Errorf("text part lacks %q:\n%s", want, m.Text)
			}
		}
		if !strings.Contains(m.HTML, `<a href="`+link+`">`) {
			t.Errorf("HTML part lacks the link:\n%s", m.HTML)
		}
	}
	slices.Sort(to)
	if want := []string{"cfo@corp.example", "controller@corp.example"}; !slices.Equal(to, want) {
		t.Errorf("To %q, want %q", to, want)
	}
	if ms[0].MessageID == ms[1].MessageID {
		t.Errorf("both messages have Message-ID %q", ms[0].MessageID)
	}
}

func first(h map[string][]string, name string) string {
	if len(h[name]) == 0 {
		return ""
	}
	return h[name][0]
}

// The agent writes the justification and picks the action's inputs: CR LF
// in any field must not add a header or a recipient, or end the headers.
func TestHeaderInjection(t *testing.T) {
	const inject = "\r\nBcc: evil@x.example\r\nX-Injected: 1\r\n\r\n<b>body</b>"
	tests := []struct {
		name string
		edit func(*notify.Event)
	}{
		{"justification", func(e *notify.Event) { e.Justification = "pay now" + inject }},
		{"action", func(e *notify.Event) { e.Action = "journal_entry" + inject }},
		{"approval id", func(e *notify.Event) { e.ApprovalID = "apr_1" + inject }},
		{"amount", func(e *notify.Event) { e.Amount = "1200000" + inject }},
		{"app", func(e *notify.Event) { e.App = "finance" + inject }},
		{"bare LF", func(e *notify.Event) { e.Action = "journal_entry\nBcc: evil@x.example\n" }},
		{"bare CR", func(e *notify.Event) { e.Action = "journal_entry\rBcc: evil@x.example\r" }},
		{"unicode line separators", func(e *notify.Event) { e.Action = "journal_entry\u2028Bcc: evil@x.example\u0085X-Injected: 1" }},
	}
	allowed := map[string]bool{
		"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true,
		"Mime-Version": true, "Content-Type": true, "Auto-Submitted": true,
		"Received": true, "Return-Path": true, // added by mailpit
	}
	mp := mailpittest.Start(t, mailpittest.Options{})
	rec := &recorder{}
	n := start(t, mailConfig(t, mp.SMTPAddr, rec))
	for i, tt := range tests {
		e := pending("apr_inj", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
		tt.edit(&e)
		n.Notify(e)
		rec.waitFor(t, tt.name+" delivered", finals(i+1))
	}
	// An address is not cleaned into another one: it is refused.
	n.Notify(pending("apr_inj_rcpt", notify.Recipient{ID: "cfo", Email: "cfo@corp.example\r\nBcc: evil@x.example"}))
	ds := rec.waitFor(t, "bad address refused", finals(len(tests)+1))
	last := ds[len(ds)-1]
	if last.OK || last.Error != notify.ReasonInvalidAddress || last.Attempt != 0 || strings.ContainsAny(last.Channel, "\r\n") {
		t.Errorf("bad address: %+v, want %s without an attempt", last, notify.ReasonInvalidAddress)
	}
	for _, d := range ds[:len(tests)] {
		if !d.OK {
			t.Errorf("%s: %s", d.Channel, d.Error)
		}
	}

	ms := mp.WaitMessages(t, len(tests), waitLimit)
	if len(ms) != len(tests) {
		t.Fatalf("%d messages, want %d", len(ms), len(tests))
	}
	for i, m := range ms {
		name := tests[i].name
		if len(m.To) != 1 || m.To[0].Address != "cfo@corp.example" || len(m.Cc) != 0 || len(m.Bcc) != 0 {
			t.Errorf("%s: To %v Cc %v Bcc %v, want only cfo", name, m.To, m.Cc, m.Bcc)
		}
		for h, vs := range m.Headers {
			if !allowed[h] {
				t.Errorf("%s: header %s: %q", name, h, vs)
			}
			if len(vs) != 1 && h != "Received" {
				t.Errorf("%s: header %s %d times", name, h, len(vs))
			}
		}
		head, _, _ := strings.Cut(m.Raw, "\r\n\r\n")
		for _, l := range strings.Split(head, "\r\n") {
			if strings.HasPrefix(strings.ToLower(l), "bcc:") || strings.HasPrefix(strings.ToLower(l), "x-injected:") {
				t.Errorf("%s: raw header line %q", name, l)
			}
		}
		if strings.Contains(m.Subject, "\n") || strings.Contains(m.Subject, "\r") {
			t.Errorf("%s: subject %q", name, m.Subject)
		}
		if strings.Contains(m.HTML, "<b>body</b>") {
			t.Errorf("%s: HTML holds the injected markup", name)
		}
	}
}

// The HTML part is escaped: markup in the justification, app or action is
// shown, never run.
func TestHTMLEscaped(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	rec := &recorder{}
	n := start(t, mailConfig(t, mp.SMTPAddr, rec))
	e := pending("apr_html", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
	e.Justification = `<script>alert("x")</script> & more`
	e.App = `"><img src=x onerror=alert(1)>`
	n.Notify(e)
	rec.waitFor(t, "delivery", finals(1))
	m := mp.WaitMessages(t, 1, waitLimit)[0]
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(m.HTML, bad) {
			t.Errorf("HTML part holds %q:\n%s", bad, m.HTML)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"} {
		if !strings.Contains(m.HTML, want) {
			t.Errorf("HTML part lacks %q:\n%s", want, m.HTML)
		}
	}
	if !strings.Contains(m.Text, `<script>alert("x")</script> & more`) {
		t.Errorf("text part does not show the justification as written:\n%s", m.Text)
	}
}

// A subject of long non-ASCII text is RFC 2047 encoded and folded, and
// reads back as written.
func TestSubjectEncoded(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	rec := &recorder{}
	n := start(t, mailConfig(t, mp.SMTPAddr, rec))
	e := pending("apr_utf8", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
	e.Action = strings.Repeat("Überweisung für Lieferant Ærøskøbing ", 3)
	n.Notify(e)
	rec.waitFor(t, "delivery", finals(1))
	m := mp.WaitMessages(t, 1, waitLimit)[0]
	want := "[uapk] approval needed: " + strings.TrimSpace(e.Action) + " 1,200,000 (apr_utf8)"
	if m.Subject != want {
		t.Errorf("Subject %q, want %q", m.Subject, want)
	}
	head, _, _ := strings.Cut(m.Raw, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		if len(l) > 998 {
			t.Errorf("header line of %d octets", len(l))
		}
	}
}

// Mail to a server that is down: Notify returns at once, each attempt is
// reported failed with its number after at least the doubling backoff, and
// once a server comes up on that port the mail is delivered and reported
// OK and Final.
func TestSMTPDownThenUp(t *testing.T) {
	addr := mailpittest.FreeAddr(t) // nothing listens yet
	rec := &recorder{}
	cfg := mailConfig(t, addr, rec)
	cfg.MaxAttempts = 1000
	n := start(t, cfg)
	n.Notify(pending("apr_down", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"}))

	failed := func(k int) func([]notify.Delivery) bool {
		return func(ds []notify.Delivery) bool { return len(ds) >= k }
	}
	rec.waitFor(t, "three failed attempts", failed(3))
	ds, at := rec.snapshot()
	for i, d := range ds[:3] {
		if d.OK || d.Final || d.Attempt != i+1 || d.Error == "" {
			t.Errorf("outcome %d: %+v, want failed attempt %d, not final", i, d, i+1)
		}
	}
	for k := 1; k < 3; k++ {
		// Attempt k+1 starts no sooner than Backoff*2^(k-1) after attempt
		// k was reported (a lower bound: timers never fire early).
		if gap, min := at[k].Sub(at[k-1]), cfg.Backoff<<(k-1); gap < min {
			t.Errorf("attempt %d came %s after attempt %d, want at least %s", k+1, gap, k, min)
		}
	}

	mp := mailpittest.Start(t, mailpittest.Options{SMTPAddr: addr})
	ds = rec.waitFor(t, "delivery after the server came up", func(ds []notify.Delivery) bool {
		return len(ds) > 0 && ds[len(ds)-1].OK
	})
	last := ds[len(ds)-1]
	if !last.Final || last.Attempt != len(ds) || last.Attempt < 4 {
		t.Errorf("delivered %+v after %d outcomes, want Final with attempt %d", last, len(ds), len(ds))
	}
	for i, d := range ds[:len(ds)-1] {
		if d.OK || d.Final || d.Attempt != i+1 {
			t.Errorf("outcome %d: %+v", i, d)
		}
	}
	if ms := mp.WaitMessages(t, 1, waitLimit); len(ms) != 1 || ms[0].To[0].Address != "cfo@corp.example" {
		t.Errorf("messages %+v", ms)
	}
}

// A server that stays down: MaxAttempts attempts, the last one Final.
func TestSMTPGivesUp(t *testing.T) {
	rec := &recorder{}
	cfg := mailConfig(t, closedAddr(t), rec)
	n := start(t, cfg)
	n.Notify(pending("apr_gone", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"}))
	ds := rec.waitFor(t, "final failure", finals(1))
	if len(ds) != cfg.MaxAttempts {
		t.Fatalf("%d outcomes, want %d:\n%s", len(ds), cfg.MaxAttempts, show(ds))
	}
	for i, d := range ds {
		if d.OK || d.Attempt != i+1 || d.Final != (i == cfg.MaxAttempts-1) || !strings.Contains(d.Error, "connection refused") {
			t.Errorf("outcome %d: %+v", i, d)
		}
	}
}

// A server that hangs: Notify still returns, however many events come and
// however long Record takes; Close with a short context cuts the attempt
// under way and reports the rest.
func TestNotifyNeverWaits(t *testing.T) {
	rec := &recorder{}
	cfg := mailConfig(t, blackHole(t), rec)
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const events = 50
	for i := range events {
		n.Notify(pending("apr_hang_"+string(rune('a'+i%26))+string(rune('a'+i/26)), notify.Recipient{ID: "cfo", Email: "cfo@corp.example"}))
	}
	// Every Notify returned although the first delivery cannot finish
	// before its 30 s deadline: nothing has been reported.
	if ds, _ := rec.snapshot(); len(ds) != 0 {
		t.Fatalf("outcomes before any could finish:\n%s", show(ds))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := n.Close(ctx); !errorsIs(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the context's deadline", err)
	}
	ds, _ := rec.snapshot()
	if len(ds) != events {
		t.Fatalf("%d outcomes, want %d:\n%s", len(ds), events, show(ds))
	}
	for _, d := range ds {
		if d.OK || !d.Final || !strings.HasPrefix(d.Error, notify.ReasonClosed) || d.Attempt > 1 {
			t.Errorf("outcome %+v, want failed Final %s", d, notify.ReasonClosed)
		}
	}
	rec.check(t)
	if err := n.Close(context.Background()); !errorsIs(err, notify.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	n.Notify(pending("apr_after", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})) // only logged
	if ds2, _ := rec.snapshot(); len(ds2) != len(ds) {
		t.Errorf("Record called after Close")
	}
}

// A channel holding QueueSize deliveries drops the next and reports it.
func TestQueueFull(t *testing.T) {
	rec := &recorder{}
	cfg := mailConfig(t, blackHole(t), rec)
	cfg.QueueSize = 2
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(pending("apr_q",
		notify.Recipient{ID: "a", Email: "a@corp.example"},
		notify.Recipient{ID: "b", Email: "b@corp.example"},
		notify.Recipient{ID: "c", Email: "c@corp.example"},
	))
	ds := rec.waitFor(t, "queue_full", finals(1))
	if d := ds[0]; d.Channel != "email:c@corp.example" || d.OK || !d.Final || d.Error != notify.ReasonQueueFull || d.Attempt != 0 {
		t.Errorf("outcome %+v, want c dropped with %s", d, notify.ReasonQueueFull)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = n.Close(ctx)
	ds, _ = rec.snapshot()
	got := map[string]int{}
	for _, d := range ds {
		if d.Final {
			got[d.Channel]++
		}
	}
	for _, c := range []string{"email:a@corp.example", "email:b@corp.example", "email:c@corp.example"} {
		if got[c] != 1 {
			t.Errorf("%s: %d final outcomes, want 1:\n%s", c, got[c], show(ds))
		}
	}
}

// Close sends what is queued before it returns.
func TestCloseFlushes(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	rec := &recorder{}
	n, err := notify.New(mailConfig(t, mp.SMTPAddr, rec))
	if err != nil {
		t.Fatal(err)
	}
	const events = 5
	for i := range events {
		n.Notify(pending("apr_flush_"+string(rune('a'+i)), notify.Recipient{ID: "cfo", Email: "cfo@corp.example"}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ds, _ := rec.snapshot()
	if len(ds) != events {
		t.Fatalf("%d outcomes when Close returned, want %d:\n%s", len(ds), events, show(ds))
	}
	for _, d := range ds {
		if !d.OK || !d.Final {
			t.Errorf("outcome %+v", d)
		}
	}
	if ms := mp.WaitMessages(t, events, waitLimit); len(ms) != events {
		t.Errorf("%d messages, want %d", len(ms), events)
	}
}

// STARTTLS against mailpit with a certificate made here: delivered when
// Config.TLS trusts it; never sent in the clear, nor to an untrusted
// certificate, nor past a server that requires STARTTLS.
func TestSTARTTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	tlsMP := mailpittest.Start(t, mailpittest.Options{TLSCert: certFile, TLSKey: keyFile, RequireSTARTTLS: true})
	plainMP := mailpittest.Start(t, mailpittest.Options{})
	tests := []struct {
		name     string
		server   *mailpittest.Server
		startTLS bool
		tls      *tls.Config
		ok       bool
		err      string // in Delivery.Error
	}{
		{"trusted certificate", tlsMP, true, &tls.Config{RootCAs: pool}, true, ""},
		{"system roots do not know it", tlsMP, true, nil, false, "certificate"},
		{"plain text refused by the server", tlsMP, false, nil, false, "530"},
		{"server without STARTTLS gets nothing", plainMP, true, &tls.Config{RootCAs: pool}, false, "does not offer STARTTLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := tt.server.Messages()
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			cfg := mailConfig(t, tt.server.SMTPAddr, rec)
			cfg.StartTLS, cfg.TLS, cfg.MaxAttempts = tt.startTLS, tt.tls, 1
			n := start(t, cfg)
			n.Notify(pending("apr_tls", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"}))
			d := rec.waitFor(t, "outcome", finals(1))[0]
			if d.OK != tt.ok || !strings.Contains(d.Error, tt.err) {
				t.Fatalf("outcome %+v, want ok=%v error containing %q", d, tt.ok, tt.err)
			}
			want := len(before)
			if tt.ok {
				want++
			}
			after := tt.server.WaitMessages(t, want, waitLimit)
			if len(after) != want {
				t.Errorf("%d messages, want %d", len(after), want)
			}
		})
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a
// pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailpit test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
