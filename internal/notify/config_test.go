package notify_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/notify"
)

func TestCheck(t *testing.T) {
	valid := notify.Config{
		SMTP:     "smtp.corp.example:587",
		From:     "UAPK <uapk@corp.example>",
		StartTLS: true,
		Webhooks: []notify.Webhook{
			{URL: "https://hooks.slack.example/services/T0/B0/x", Format: "slack"},
			{URL: "http://127.0.0.1:9000/events", Format: "cloudevents"},
			{URL: "http://[::1]:9000/events", Format: "cloudevents"},
			{URL: "http://localhost/events", Format: "slack"},
		},
		UIURL: "https://desk.corp.example",
	}
	tests := []struct {
		name string
		edit func(*notify.Config)
		want []string // problems, "path: message"; nil: valid
	}{
		{"valid", func(*notify.Config) {}, nil},
		{"nothing configured", func(c *notify.Config) { *c = notify.Config{} }, nil},
		{"ui url with a trailing slash", func(c *notify.Config) { c.UIURL = "https://desk.corp.example/" }, nil},
		{"smtp not host:port", func(c *notify.Config) { c.SMTP = "smtp.corp.example" },
			[]string{`notify.email.smtp: "smtp.corp.example" is not host:port`}},
		{"smtp port", func(c *notify.Config) { c.SMTP = "smtp.corp.example:0" },
			[]string{`notify.email.smtp: "smtp.corp.example:0": port must be 1..65535`}},
		{"smtp no host", func(c *notify.Config) { c.SMTP = ":25" },
			[]string{`notify.email.smtp: ":25" has no usable host`}},
		{"from missing", func(c *notify.Config) { c.From = "" },
			[]string{"notify.email.from: required with smtp"}},
		{"from two addresses", func(c *notify.Config) { c.From = "a@corp.example, b@corp.example" },
			[]string{`notify.email.from: "a@corp.example, b@corp.example" is not one mail address: mail: expected single address, got ", b@corp.example"`}},
		{"from with CRLF", func(c *notify.Config) { c.From = "uapk@corp.example\r\nBcc: x@y" },
			[]string{"notify.email.from: contains a control character"}},
		{"from and starttls without smtp", func(c *notify.Config) { c.SMTP = "" },
			[]string{"notify.email.from: set without smtp", "notify.email.starttls: set without smtp"}},
		{"webhook problems, all at once", func(c *notify.Config) {
			c.Webhooks = []notify.Webhook{
				{URL: "http://hooks.example/x", Format: "slack"},
				{URL: "", Format: "teams"},
				{URL: "ftp://hooks.example/x"},
				{URL: "https://hooks.example/x#frag", Format: "slack"},
				{URL: "https://a.example/x", Format: "slack"},
				{URL: "https://a.example/x", Format: "slack"},
				{URL: "http://10.0.0.1/x", Format: "slack"},
			}
		}, []string{
			"notify.webhooks[0].url: must be https (http is allowed only to loopback: 127.0.0.0/8, ::1, localhost)",
			"notify.webhooks[1].url: required",
			`notify.webhooks[1].format: "teams": must be slack or cloudevents`,
			`notify.webhooks[2].url: scheme "ftp": must be https`,
			"notify.webhooks[2].format: required: slack or cloudevents",
			"notify.webhooks[3].url: must not have a fragment",
			"notify.webhooks[5].url: same URL as notify.webhooks[4]: it would get every event twice",
			"notify.webhooks[6].url: must be https (http is allowed only to loopback: 127.0.0.0/8, ::1, localhost)",
		}},
		{"ui url missing", func(c *notify.Config) { c.UIURL = "" },
			[]string{"ui_url: required with notify: notifications link to the approvals UI"}},
		{"ui url with a query", func(c *notify.Config) { c.UIURL = "https://desk.corp.example/?x=1" },
			[]string{"ui_url: must not carry user information, a query or a fragment: /ui/approvals/ID is appended to it"}},
		{"ui url relative", func(c *notify.Config) { c.UIURL = "desk.corp.example" },
			[]string{"ui_url: must be an http or https URL, such as https://desk.corp.example"}},
		{"negative limits", func(c *notify.Config) { c.MaxAttempts, c.Backoff, c.QueueSize = -1, -time.Second, -1 },
			[]string{"notify.max_attempts: must not be negative", "notify.backoff: must not be negative", "notify.queue_size: must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			c.Webhooks = append([]notify.Webhook(nil), valid.Webhooks...)
			tt.edit(&c)
			err := c.Check()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var ce *notify.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, notify.ErrInvalidConfig) {
				t.Fatalf("Check: %v (%T), want a *ConfigError", err, err)
			}
			if got := err.Error(); got != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
			if _, err := notify.New(c); !errors.Is(err, notify.ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}
