package notify

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config is the notify section of the config file (email, webhooks) and
// what the program adds to it (UIURL, Logger, Now, Record and the limits).
type Config struct {
	// SMTP is the mail server, host:port; "" sends no mail.
	SMTP string
	// From is the sender, "addr@example.com" or "Name <addr@example.com>".
	From string
	// StartTLS upgrades every SMTP connection with STARTTLS before MAIL
	// FROM; a server that does not offer it gets no mail (ErrNoSTARTTLS).
	StartTLS bool
	// TLS is used for STARTTLS. nil: the system roots, ServerName the SMTP
	// host; a TLS without ServerName gets the SMTP host as well.
	TLS *tls.Config
	// Webhooks each get one POST per event.
	Webhooks []Webhook
	// UIURL is the approvals UI, such as https://desk.corp.example; links
	// are UIURL + "/ui/approvals/" + ID.
	UIURL string
	// Logger gets one line per delivery attempt.
	Logger zerolog.Logger
	// Now dates mail and CloudEvents; nil means time.Now. Retry delays run
	// on the real clock.
	Now func() time.Time
	// Record is called once per delivery attempt outcome, and once for a
	// delivery given up without an attempt (Reason* in Delivery.Error),
	// from the notifier's own goroutines and never two at a time. The
	// caller writes a ledger record of kind notification for each. It may
	// block briefly: the channel it reports for waits meanwhile. nil: the
	// outcomes are only logged.
	Record func(Delivery)
	// MaxAttempts bounds the attempts per delivery; 0 means 6.
	MaxAttempts int
	// Backoff is the delay before the first retry, doubling after each
	// failed attempt up to 5 minutes; 0 means 2 s.
	Backoff time.Duration
	// QueueSize bounds the deliveries each channel (the mail server, each
	// webhook) holds, queued, in flight or waiting for a retry; 0 means
	// 10000. Beyond it Notify drops the delivery and reports it failed with
	// ReasonQueueFull.
	QueueSize int
	// HTTPClient posts to the webhooks. nil: a 10 s timeout, no proxy from
	// the environment, no redirects followed (a 3xx is a failure).
	HTTPClient *http.Client
}

// Webhook is one entry of notify.webhooks.
type Webhook struct {
	URL string
	// Format is FormatSlack or FormatCloudEvents.
	Format string
}

// Webhook formats.
const (
	// FormatSlack posts {"text": ...} as Slack's incoming webhooks take.
	FormatSlack = "slack"
	// FormatCloudEvents posts a CloudEvents 1.0 event in structured mode.
	FormatCloudEvents = "cloudevents"
)

// Defaults for the zero limits.
const (
	DefaultMaxAttempts = 6
	DefaultBackoff     = 2 * time.Second
	DefaultQueueSize   = 10000
	// MaxBackoff caps the doubling delay between attempts.
	MaxBackoff = 5 * time.Minute
)

const cfgPath = "notify"

// Check validates the configuration without touching the network. Every
// problem is collected into one *ConfigError with its path in the config
// file.
func (c Config) Check() error {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	email := cfgPath + ".email"
	if c.SMTP != "" {
		if msg := checkHostPort(c.SMTP); msg != "" {
			add(email+".smtp", "%s", msg)
		}
		switch {
		case c.From == "":
			add(email+".from", "required with smtp")
		default:
			if msg := checkFrom(c.From); msg != "" {
				add(email+".from", "%s", msg)
			}
		}
	} else {
		if c.From != "" {
			add(email+".from", "set without smtp")
		}
		if c.StartTLS {
			add(email+".starttls", "set without smtp")
		}
	}
	seen := map[string]int{}
	for i, w := range c.Webhooks {
		p := fmt.Sprintf("%s.webhooks[%d]", cfgPath, i)
		if w.URL == "" {
			add(p+".url", "required")
		} else if msg := checkWebhookURL(w.URL); msg != "" {
			add(p+".url", "%s", msg)
		} else if j, dup := seen[w.URL]; dup {
			add(p+".url", "same URL as notify.webhooks[%d]: it would get every event twice", j)
		} else {
			seen[w.URL] = i
		}
		switch w.Format {
		case FormatSlack, FormatCloudEvents:
		case "":
			add(p+".format", "required: slack or cloudevents")
		default:
			add(p+".format", "%q: must be slack or cloudevents", w.Format)
		}
	}
	if c.SMTP != "" || len(c.Webhooks) > 0 {
		if c.UIURL == "" {
			add("ui_url", "required with notify: notifications link to the approvals UI")
		} else if msg := checkUIURL(c.UIURL); msg != "" {
			add("ui_url", "%s", msg)
		}
	}
	if c.MaxAttempts < 0 {
		add(cfgPath+".max_attempts", "must not be negative")
	}
	if c.Backoff < 0 {
		add(cfgPath+".backoff", "must not be negative")
	}
	if c.QueueSize < 0 {
		add(cfgPath+".queue_size", "must not be negative")
	}
	if len(ps) > 0 {
		return &ConfigError{Problems: ps}
	}
	return nil
}

// checkHostPort returns "" for host:port with a host and a numeric port.
func checkHostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", s)
	}
	if host == "" || hasControl(host) || strings.ContainsAny(host, " /") {
		return fmt.Sprintf("%q has no usable host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q: port must be 1..65535", s)
	}
	return ""
}

// checkFrom returns "" for one RFC 5322 mailbox whose address has a domain.
func checkFrom(s string) string {
	if hasControl(s) {
		return "contains a control character"
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return fmt.Sprintf("%q is not one mail address: %v", s, err)
	}
	if domainOf(a.Address) == "" {
		return fmt.Sprintf("%q has no domain", s)
	}
	return ""
}

// checkWebhookURL returns "" for an https URL, or http to loopback.
func checkWebhookURL(raw string) string {
	if hasControl(raw) {
		return "contains a control character"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "not a URL"
	}
	if u.Host == "" || u.Hostname() == "" {
		return "needs a host, such as https://hooks.example.com/services/..."
	}
	if u.Fragment != "" {
		return "must not have a fragment"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopback(u.Hostname()) {
			return ""
		}
		return "must be https (http is allowed only to loopback: 127.0.0.0/8, ::1, localhost)"
	default:
		return fmt.Sprintf("scheme %q: must be https", u.Scheme)
	}
}

// checkUIURL returns "" for an absolute http(s) URL links can be built on.
func checkUIURL(raw string) string {
	if hasControl(raw) {
		return "contains a control character"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "not a URL"
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "must be an http or https URL, such as https://desk.corp.example"
	}
	if u.Host == "" {
		return "needs a host"
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "must not carry user information, a query or a fragment: /ui/approvals/ID is appended to it"
	}
	return ""
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

// withDefaults fills the zero limits and hooks.
func (c Config) withDefaults() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	c.UIURL = strings.TrimRight(c.UIURL, "/")
	return c
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // a webhook URL is not for an environment proxy to see
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// backoff is the delay after failed attempt n (1-based).
func backoff(first time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n; i++ {
		d *= 2
		if d >= MaxBackoff {
			return MaxBackoff
		}
	}
	return min(d, MaxBackoff)
}
